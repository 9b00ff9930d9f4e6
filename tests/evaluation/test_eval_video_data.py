"""Video fine-tuning data: seek decoding of clips on real encoded videos, fallbacks, repeated
augmentation, clip RandAugment, cube erasing and the train crops."""
import logging

import numpy as np
import pytest

from vicmae_jax.data import index as index_lib
from vicmae_jax.data import synthetic
from vicmae_jax.data import video as video_io
from vicmae_jax.evaluation import data as data_lib
from vicmae_jax.evaluation import video_augment, video_data, video_sampling

# 150 frames at 30 fps (5 s), 64 x 48: every frame shows its index (synthetic.read_index).
CODECS = {
    "h264.mp4": dict(codec="h264"),                       # libx264 defaults: B-frames, long GOP
    "h264_gop12.mp4": dict(codec="h264", gop=12),
    "mpeg4_b.avi": dict(codec="mpeg4", gop=10, bframes=2),  # AVI: first pts one tick late
    "vp9.webm": dict(codec="vp9"),
}
NUM_FRAMES = 150


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  paths = []
  for name, kwargs in CODECS.items():
    path = str(root / name)
    synthetic.write_video(path, num_frames=NUM_FRAMES, fps=30, **kwargs)
    paths.append(path)
  return paths


def _source(paths):
  return video_data.VideoFileSource(index_lib.Index(tuple(paths), tuple(range(len(paths)))))


def _indices(frames):
  return [synthetic.read_index(f) for f in frames.reshape((-1,) + frames.shape[-3:])]


@pytest.mark.parametrize("name", list(CODECS))
def test_seek_decode_returns_the_frames_of_a_full_decode(videos, name):
  path = videos[list(CODECS).index(name)]
  naive = np.stack(video_io.load_all_frames_naive(path))
  assert len(naive) == NUM_FRAMES
  src = _source([path])
  selects = [lambda n, s=s: video_sampling.train_indices(n, np.random.default_rng(s))
             for s in range(4)]
  selects.append(lambda n: video_sampling.train_indices(n, np.random.default_rng(9),
                                                    sampling="segment"))
  selects.append(lambda n: video_sampling.view_indices(n, temporal=7))           # K400 test union
  selects.append(lambda n: video_sampling.view_indices(n, sampling="segment", temporal=2))
  for select in selects:
    frames, label = src.read(0, select)
    want = select(NUM_FRAMES)
    assert frames.shape == want.shape + (48, 64, 3) and label == 0
    assert _indices(frames) == want.reshape(-1).tolist()
    np.testing.assert_array_equal(frames, naive[want])                       # bit-identical
  assert src.counts["seek"] == len(selects)
  assert not [k for k in src.counts if k.startswith("full_decode")]


def test_a_training_clip_decodes_only_its_span(tmp_path):
  path = str(tmp_path / "long.mp4")
  synthetic.write_video(path, num_frames=300, fps=30, gop=30)
  src = _source([path])
  for seed in range(5):
    frames, _ = src.read(0, lambda n: video_sampling.train_indices(n, np.random.default_rng(seed)))
    idx = _indices(frames)
    assert np.all(np.diff(idx) == 4) and len(idx) == 16
  # 16 x 4 spans 61 frames; with a keyframe every 30 at most ~90 of the 300 are decoded.
  assert src.counts["frames_decoded"] / src.counts["seek"] < 100


def test_missing_or_wrong_metadata_falls_back_to_a_counted_whole_decode(videos, monkeypatch,
                                                                        caplog):
  path = videos[0]
  naive = np.stack(video_io.load_all_frames_naive(path))
  select = lambda n: video_sampling.view_indices(n, temporal=3)  # noqa: E731
  src = _source([path])
  real_probe = video_io.probe

  def no_duration(container, p=""):
    info = real_probe(container, p)
    return video_io.VideoInfo(info.start, 0.0, info.fps, "stream")

  def header_too_long(container, p=""):  # the stream ends 5 s before the header says
    info = real_probe(container, p)
    return video_io.VideoInfo(info.start, 2 * info.duration, info.fps, "stream")

  with caplog.at_level(logging.WARNING):
    for fake in (no_duration, header_too_long):
      monkeypatch.setattr(video_io, "probe", fake)
      frames, _ = src.read(0, select)
      np.testing.assert_array_equal(frames, naive[select(NUM_FRAMES)])
  assert src.counts["full_decode_no_duration"] == 1
  assert src.counts["full_decode_stream_shorter_than_header"] == 1
  assert src.counts["seek"] == 0
  assert "decoding the whole video" in caplog.text


def test_test_views_decode_each_video_once(videos):
  src = _source(videos)
  batches = list(video_data.view_batches(src, 16, size=32, num_frames=8, stride=4, spatial=3,
                                         temporal=2))
  mask = np.concatenate([b["mask"] for b in batches]) > 0
  ids = np.concatenate([b["video"] for b in batches])[mask]
  assert np.array_equal(np.bincount(ids), [6] * len(videos))                 # 3 x 2 views each
  assert batches[0]["image"].shape == (16, 8, 32, 32, 3)
  assert src.counts["seek"] == len(videos)


def _toy_source(num: int = 6):
  """Videos whose clips identify them: video i is a texture of brightness 20 + 30 i."""
  rng = np.random.default_rng(0)
  tex = rng.integers(0, 40, (1, 24, 32, 3))
  vids = np.stack([np.repeat(tex + 20 + 30 * i, 12, axis=0) for i in range(num)]).astype(np.uint8)
  return video_data.ArrayVideoSource(vids, np.arange(num) % 3, 3)


def test_repeated_augmentation_gives_adjacent_clips_of_one_video():
  src, repeats, batch = _toy_source(), 2, 4
  sample_fn = lambda i, rng: video_data.load_train_clips(  # noqa: E731
      i, rng, source=src, repeats=repeats, num_frames=4, stride=2, size=16, scale=(0.2, 1.0))
  it = data_lib.TrainIterator(src, batch, seed=0, sample_fn=sample_fn, repeats=repeats)
  steps_per_epoch = len(src) * repeats // batch                              # 3 steps, 6 videos
  seen = []
  for _ in range(steps_per_epoch):
    b = next(it)
    assert b["image"].shape == (batch, 4, 16, 16, 3)
    means = b["image"].mean(axis=(1, 2, 3, 4))
    for k in range(0, batch, repeats):
      assert b["label"][k] == b["label"][k + 1]
      assert not np.array_equal(b["image"][k], b["image"][k + 1])            # augmented apart
      assert abs(means[k] - means[k + 1]) < 0.2          # same video (videos are 0.5 apart)
    seen.extend(it.indices(it.step - 1))
  assert sorted(seen) == list(range(len(src)))                               # one epoch
  resumed = data_lib.TrainIterator(src, batch, seed=0, sample_fn=sample_fn, repeats=repeats)
  resumed.set_state(it.get_state())
  np.testing.assert_array_equal(next(resumed)["image"], next(it)["image"])   # step-only state
  with pytest.raises(ValueError, match="multiple of repeats"):
    data_lib.TrainIterator(src, 6, seed=0, sample_fn=sample_fn, repeats=4)


def test_clip_rand_augment_applies_one_draw_to_every_frame():
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  clip = np.repeat(frame[None], 6, axis=0)
  changed = 0
  for seed in range(20):
    out = video_augment.clip_rand_augment(clip, np.random.default_rng(seed), num_ops=4,
                                       magnitude=9.0, prob=1.0)
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert all(np.array_equal(out[0], f) for f in out[1:]), seed             # static stays static
    changed += not np.array_equal(out, clip)
  assert changed >= 18


def test_cube_erasing_uses_one_box_and_fresh_noise_per_frame():
  x = np.zeros((4, 32, 32, 3), np.float32)
  out = video_augment.clip_random_erasing(x, np.random.default_rng(0), prob=1.0)
  erased = np.any(out != 0, axis=-1)
  assert erased.any() and all(np.array_equal(erased[0], e) for e in erased[1:])
  assert not np.array_equal(out[0], out[1])
  assert video_augment.clip_random_erasing(x, np.random.default_rng(0), prob=0.0) is x


def test_train_crops_sizes_and_jitter_range():
  clip = np.zeros((3, 320, 568, 3), np.uint8)
  clip[..., 0] = (np.arange(568) * 255 // 567)[None, None]                  # horizontal ramp
  shorts = []
  for seed in range(10):
    rng = np.random.default_rng(seed)
    assert video_augment.random_resized_crop_clip(clip, rng, 224).shape == (3, 224, 224, 3)
    crop = video_augment.short_side_jitter_crop(clip, rng, 224, (256, 320))
    assert crop.shape == (3, 224, 224, 3)
    # The ramp's slope gives the resized width, hence the short side it was scaled to.
    slope = (float(crop[0, 0, -1, 0]) - float(crop[0, 0, 0, 0])) / 223
    shorts.append((255 / slope + 1) * 320 / 568)
  assert 250 <= min(shorts) and max(shorts) <= 326 and max(shorts) - min(shorts) > 15
  assert video_augment.jitter_scales_for(224) == (256, 320)
  assert video_augment.jitter_scales_for(16) == (18, 23)                       # tiny test models
  for crop in ("rrc", "jitter"):
    out = video_augment.augment_clip(clip, np.random.default_rng(0), size=16, crop=crop,
                                  jitter_scales=(18, 23), rand_augment_n=2, reprob=1.0)
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.float32
  with pytest.raises(ValueError, match="unknown video train crop"):
    video_augment.augment_clip(clip, np.random.default_rng(0), size=16, crop="centre")

"""Data in object storage, read by the same code as local data (localhost GCS emulator): indexes,
videos decoded through range reads, images, frame shards, and extraction from and to a bucket."""
import os

import numpy as np
import pytest

from configs import vitl_k400
from vicmae_jax import config_lib, fs
from vicmae_jax.data import images, index, sources, synthetic, video
from vicmae_jax.data.badinput import BadInput
from vicmae_jax.data.config import PairSampling
from vicmae_jax.tools import extract_frames

SAMPLING = PairSampling(mode="fixed_gap", gap=12, gap_max=24, unit="frames")


@pytest.fixture(scope="module")
def bucket(gcs, tmp_path_factory):
  """A dataset laid out locally and uploaded: videos in class folders, photos, a Kinetics CSV."""
  local = str(tmp_path_factory.mktemp("dataset"))
  for i, cls in enumerate(["abseiling", "bowling", "abseiling"]):
    os.makedirs(os.path.join(local, "videos", cls), exist_ok=True)
    synthetic.write_video(os.path.join(local, "videos", cls, f"yt{i}_000001_000011.mp4"),
                          num_frames=48, fps=24, seed=i)
  with open(os.path.join(local, "videos", "bowling", "broken_000001_000011.mp4"), "wb") as f:
    f.write(b"\x00\x00\x00\x18ftypmp42 not a video")
  os.makedirs(os.path.join(local, "images", "cat"))
  synthetic.Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(
      os.path.join(local, "images", "cat", "a.jpg"))
  with open(os.path.join(local, "train.csv"), "w") as f:
    f.write("label,youtube_id,time_start,time_end,split\n")
    for i, cls in enumerate(["abseiling", "bowling", "abseiling"]):
      f.write(f"{cls},yt{i},1,11,train\n")
    f.write("bowling,gone,1,11,train\n")  # a clip the copy lacks
  url = gcs.url("dataset")
  gcs.upload_tree(local, url)
  return local, url


def test_indexes_read_the_same_from_a_bucket(bucket):
  local, url = bucket
  for kind, sub, extra in [("video_folder", "videos", {}), ("image_folder", "images", {}),
                           ("kinetics_csv", "train.csv", {"on_missing": "skip"})]:
    spec = dict(kind=kind, path=f"{url}/{sub}", root=f"{url}/videos", **extra)
    remote = index.read_index(spec)
    mine = index.read_index(dict(spec, path=f"{local}/{sub}", root=f"{local}/videos"))
    assert [p.replace(url, local) for p in remote.paths] == list(mine.paths), kind
    assert remote.labels == mine.labels and remote.classes == mine.classes
  with pytest.raises(index.IndexFormatError, match=r"train\.csv:5: file does not exist"):
    index.read_index(dict(kind="kinetics_csv", path=f"{url}/train.csv", root=f"{url}/videos"))
  outside = f"{url}/list.csv"
  fs.write_text(outside, f"{url}/videos/../../elsewhere/x.mp4,1\n")
  with pytest.raises(index.IndexFormatError, match="outside the source root"):
    index.read_index(dict(kind="video_csv", path=outside))


@pytest.mark.parametrize("whole_file_below", [video.REMOTE_WHOLE_FILE_BYTES, 0])
def test_video_from_a_bucket_matches_local(bucket, tmp_path, gcs, monkeypatch, whole_file_below):
  """Short clips are fetched whole; long videos (here: any, threshold 0) by byte ranges."""
  monkeypatch.setattr(video, "REMOTE_WHOLE_FILE_BYTES", whole_file_below)
  local_file = str(tmp_path / "long.mp4")
  synthetic.write_video(local_file, num_frames=480, width=320, height=240, textured=True, gop=24)
  remote = gcs.url("long", f"long{whole_file_below}.mp4")
  fs.copy_file(local_file, remote)
  rng = lambda: np.random.default_rng(3)  # noqa: E731
  want, t_local = video.load_pairs(local_file, rng(), SAMPLING, 2)
  got, t_remote = video.load_pairs(remote, rng(), SAMPLING, 2)
  np.testing.assert_array_equal(t_local, t_remote)
  for a, b in zip(want, got):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
  if whole_file_below:
    return
  # FFmpeg asks for the ranges it needs: far less than the file travels.
  container = video.open_video(remote)
  info = video.probe(container)
  video.frames_at_times(container, [info.start + 0.5 * info.duration, info.start + 0.55 * info.duration])
  cache = container._file.cache  # pylint: disable=protected-access
  assert 0 < cache.total_requested_bytes < fs.size(remote) / 2, (cache.total_requested_bytes,
                                                                 fs.size(remote))
  container.close()
  with pytest.raises(BadInput) as err:
    video.load_pairs(bucket[1] + "/videos/bowling/broken_000001_000011.mp4", rng(), SAMPLING, 1)
  assert err.value.kind == "unreadable"
  with pytest.raises(BadInput) as err:
    video.load_pairs(bucket[1] + "/videos/none.mp4", rng(), SAMPLING, 1)
  assert err.value.kind == "missing"


def test_images_from_a_bucket(bucket):
  local, url = bucket
  np.testing.assert_array_equal(images.read_image(f"{url}/images/cat/a.jpg"),
                                images.read_image(f"{local}/images/cat/a.jpg"))
  src = sources.build_source(dict(kind="image_folder", path=f"{url}/images"), sampling=SAMPLING)
  img, label = src.get(0)
  assert img.shape == (40, 30, 3) and label == 0 and src.num_classes == 1


def test_extraction_from_and_to_a_bucket_then_frames_source(bucket, gcs):
  _, url = bucket
  out = gcs.url("frames", "train")
  args = ["--kind", "video_folder", "--path", f"{url}/videos", "--out", out,
          "--frames_per_video", "6", "--short_side", "0", "--videos_per_shard", "2",
          "--workers", "1"]
  summary = extract_frames.main(args)
  assert (summary["videos"], summary["written"], summary["shards"]) == (4, 3, 2)
  assert summary["bad"] == {"unreadable": 1}
  assert "broken_000001_000011.mp4\tunreadable" in fs.read_text(f"{out}/bad_videos.tsv")
  shards = fs.glob(f"{out}/*.array_record")
  assert [fs.basename(s) for s in shards] == ["frames-00000-of-00002.array_record",
                                              "frames-00001-of-00002.array_record"]
  again = extract_frames.main(args)  # every shard exists: nothing is redone
  assert again["written"] == 3
  for path in (out, f"{out}/*.array_record", ",".join(shards)):
    src = sources.build_source(dict(kind="frames", path=path), sampling=SAMPLING)
    assert len(src) == 3
    (a, b), = src.load(1, np.random.default_rng(0), 1)
    assert a.shape == b.shape and a.ndim == 3


def test_missing_remote_data_fails_before_compiling_with_the_docs_pointer(bucket, gcs):
  _, url = bucket
  root = gcs.url("empty_root")
  c = vitl_k400.get_config(f"frames,data_root={root}")  # the README's TPU command
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(c, device_count=8)
  assert f"{root}/k400_frames/train" in str(err.value) and config_lib.DATA_DOCS in str(err.value)
  fs.write_text(f"{root}/k400_frames/train/README", "shards go here")
  with pytest.raises(config_lib.ConfigError, match="holds no .*array_record shards"):
    config_lib.validate(c, device_count=8)
  c.input.sources[0]["path"] = f"{url}/videos/abseiling/yt0_000001_000011.mp4,{root}/gone.array_record"
  with pytest.raises(config_lib.ConfigError, match="gone.array_record' does not exist"):
    config_lib.validate(c, device_count=8)


def test_evaluation_splits_from_a_bucket(bucket):
  """Fine-tuning / probe splits name bucket folders as pretraining sources do."""
  from vicmae_jax.evaluation import data as eval_data, video_data
  local, url = bucket
  spec = dict(kind="image_folder", train=f"{url}/images", val=f"{url}/images")
  img, label = eval_data.build_source(spec, "val").get(0)
  assert img.shape == (40, 30, 3) and label == 0
  spec = dict(kind="video_folder", train=f"{url}/videos", val=f"{url}/videos")
  src = video_data.build_video_source(spec, "val")
  mine = video_data.build_video_source(dict(kind="video_folder", train=f"{local}/videos",
                                            val=f"{local}/videos"), "val")
  first = lambda n: np.arange(4) * (n // 4)  # noqa: E731
  frames, label = src.read(0, first)
  want, want_label = mine.read(0, first)
  np.testing.assert_array_equal(frames, want)
  assert label == want_label and frames.shape[0] == 4
  with pytest.raises(BadInput):
    src.read(src.index.paths.index(f"{url}/videos/bowling/broken_000001_000011.mp4"), first)

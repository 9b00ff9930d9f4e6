"""PyAV decoding on real encoded clips whose frames carry their own index in the pixels."""
import pathlib

import numpy as np
import pytest

from vicmae_jax.data import synthetic, video
from vicmae_jax.data.badinput import BadInput

from conftest import CLIPS


def _decode_indices(path, times, **kw):
  container = video.open_video(path)
  try:
    out = video.decode_at_times(container, times, **kw)
  finally:
    container.close()
  return [synthetic.read_index(video.frame_to_rgb(f)) for f, _ in out], [t for _, t in out]


def _midpoints(frame_times, rng, n):
  """Times half-way between consecutive frames: the answer (the earlier frame) is unambiguous."""
  idx = rng.integers(0, len(frame_times) - 1, n)
  return idx, [(frame_times[i] + frame_times[i + 1]) / 2 for i in idx]


@pytest.mark.parametrize('name', list(CLIPS))
@pytest.mark.parametrize('skip_nonref', [True, False])
def test_decoded_frames_are_the_requested_ones(clips, name, skip_nonref):
  path, frame_times = clips[name]
  rng = np.random.default_rng(0)
  for trial in range(12):
    expected, times = _midpoints(frame_times, rng, int(rng.integers(1, 5)))
    got, pts = _decode_indices(path, times, reseek_s=[0.1, 5.0][trial % 2], skip_nonref=skip_nonref)
    assert got == list(expected), (name, times)
    assert all(p <= t + 1e-3 for p, t in zip(pts, times))


def test_probe_reports_duration_and_rate(clips):
  for name, (path, frame_times) in clips.items():
    container = video.open_video(path)
    info = video.probe(container, path)
    container.close()
    assert info.duration == pytest.approx(frame_times[-1] + np.diff(frame_times).mean(), rel=0.1), name
    if name != 'vfr.mp4':
      assert info.fps == pytest.approx(CLIPS[name]['fps'], rel=0.01)
  # webm keeps no per-stream duration: the container header is the fallback.
  container = video.open_video(clips['vp9.webm'][0])
  assert video.probe(container).duration_from == 'container'
  container.close()


@pytest.mark.parametrize('name', ['h264.mp4', 'mpeg4_b.mp4', 'vp9.webm', 'mpeg4.avi'])
def test_fixed_gap_in_frames_is_exact(clips, name):
  path, _ = clips[name]
  rng = np.random.default_rng(1)
  for gap in (1, 7, 20):
    pairs, times = video.load_pairs(path, rng, video.PairSampling('fixed_gap', gap=gap), k=3)
    for a, b in pairs:
      assert synthetic.read_index(b) - synthetic.read_index(a) == gap


def test_distant_and_random_gap(clips):
  path, frame_times = clips['h264_gop10.mp4']
  n = len(frame_times)
  rng = np.random.default_rng(2)
  seen_first, seen_second = set(), set()
  for _ in range(10):
    pairs, _ = video.load_pairs(path, rng, video.PairSampling('distant'), k=2)
    for a, b in pairs:
      ia, ib = synthetic.read_index(a), synthetic.read_index(b)
      assert ia < n // 2 <= ib < n
      seen_first.add(ia)
      seen_second.add(ib)
  assert len(seen_first) > 5 and len(seen_second) > 5  # re-drawn, not fixed
  for _ in range(5):
    pairs, _ = video.load_pairs(path, rng, video.PairSampling('random_gap', gap=3, gap_max=9), k=2)
    for a, b in pairs:
      assert 3 <= synthetic.read_index(b) - synthetic.read_index(a) <= 9


def test_gap_in_seconds_respected_with_variable_frame_rate(clips):
  path, frame_times = clips['vfr.mp4']
  rng = np.random.default_rng(3)
  pairs, times = video.load_pairs(path, rng, video.PairSampling('fixed_gap', gap=1.0, unit='seconds'),
                                  k=4)
  for (a, b), (ta, tb) in zip(pairs, times):
    ia, ib = synthetic.read_index(a), synthetic.read_index(b)
    assert frame_times[ia] == pytest.approx(ta, abs=1e-3)
    assert frame_times[ib] == pytest.approx(tb, abs=1e-3)
    # The real gap differs from 1 s by less than the longest frame interval (80 ms).
    assert abs((tb - ta) - 1.0) < 0.081


def test_gap_longer_than_clip_is_clamped(clips):
  path, frame_times = clips['h264_gop10.mp4']
  pairs, _ = video.load_pairs(path, np.random.default_rng(0), video.PairSampling('fixed_gap', gap=500))
  a, b = pairs[0]
  assert (synthetic.read_index(a), synthetic.read_index(b)) == (0, len(frame_times) - 1)


def test_two_frames_do_not_decode_the_whole_clip(tmp_path):
  path = str(tmp_path / 'long.mp4')
  synthetic.write_video(path, num_frames=300, fps=30, gop=30)  # 10 s, keyframe every second
  stats = {}
  got, _ = _decode_indices(path, [2.0 + 1 / 60, 8.0 + 1 / 60], stats=stats, reseek_s=5.0)
  assert got == [60, 240]
  assert stats['decoded'] < 60, stats  # two partial GOPs, not 300 frames
  stats = {}
  _decode_indices(path, [0.5 + 1 / 60, 9.5 + 1 / 60], stats=stats, reseek_s=2.0)
  assert stats['seeks'] >= 1 and stats['demuxed'] < 200, stats  # far second frame: seek, skip


def test_nonref_skipping_decodes_fewer_frames(clips):
  path, frame_times = clips['h264.mp4']
  times = [(frame_times[60] + frame_times[61]) / 2]
  with_skip, without = {}, {}
  assert _decode_indices(path, times, stats=with_skip)[0] == [60]
  assert _decode_indices(path, times, stats=without, skip_nonref=False)[0] == [60]
  assert with_skip['decoded'] < without['decoded']


def test_rotation_metadata_is_applied(tmp_path):
  path = str(tmp_path / 'rot.mp4')
  synthetic.write_video(path, num_frames=10, fps=10, width=64, height=48, rotation=90)
  container = video.open_video(path)
  (frame, _), = video.decode_at_times(container, [0.55])
  container.close()
  img = video.frame_to_rgb(frame)
  assert img.shape == (64, 48, 3)  # displayed upright: width and height swap
  assert synthetic.read_index(np.rot90(img, k=-1)) == 5


def test_max_side_downscales_in_conversion(clips):
  pairs, _ = video.load_pairs(clips['h264.mp4'][0], np.random.default_rng(0), video.PairSampling(),
                              max_side=32)
  assert max(pairs[0][0].shape[:2]) == 32


def test_bad_videos_raise_counted_kinds(tmp_path, clips):
  good = pathlib.Path(clips['h264.mp4'][0]).read_bytes()
  webm = pathlib.Path(clips['vp9.webm'][0]).read_bytes()
  (tmp_path / 'empty.mp4').write_bytes(b'')
  (tmp_path / 'garbage.mp4').write_bytes(np.random.default_rng(0).bytes(5000))
  (tmp_path / 'cut.mp4').write_bytes(good[:len(good) // 2])
  (tmp_path / 'cut.webm').write_bytes(webm[:len(webm) // 3])
  synthetic.write_video(str(tmp_path / 'one.mp4'), num_frames=1, fps=25)
  expect = {'absent.mp4': {'missing'}, 'empty.mp4': {'empty'}, 'garbage.mp4': {'unreadable'},
            'cut.mp4': {'unreadable', 'truncated'}, 'cut.webm': {'truncated'},
            'one.mp4': {'too_short'}}
  sampling = video.PairSampling('fixed_gap', gap=55)
  for name, kinds in expect.items():
    with pytest.raises(BadInput) as e:
      video.load_pairs(str(tmp_path / name), np.random.default_rng(0), sampling)
    assert e.value.kind in kinds, (name, e.value)


def test_sample_pair_times_shapes_and_order():
  rng = np.random.default_rng(0)
  for mode in ('distant', 'fixed_gap', 'random_gap'):
    for unit in ('frames', 'seconds'):
      t = video.sample_pair_times(rng, 1.0, 10.0, 25.0, video.PairSampling(mode, 8, 16, unit), k=5)
      assert t.shape == (5, 2) and np.all(t[:, 0] <= t[:, 1])
      assert np.all((t >= 1.0) & (t <= 11.0))
  with pytest.raises(ValueError):
    video.PairSampling('nearby')

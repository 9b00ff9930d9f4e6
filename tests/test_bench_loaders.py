"""`bench/loaders.py` compares like with like: every loader returns the same two frames.

Tiny clips (H.264 and VP9) whose frames carry their index in their pixels: each loader must return
uint8 HxWx3 frames at the requested indices, equal to ours; a peer library that is
not installed is skipped. Then the script itself runs end to end in `--smoke` mode (as its own
process, which is how torchcodec finds FFmpeg) and every figure line parses. No speed is asserted.
"""
import importlib
import importlib.util
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip('av')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import loaders  # noqa: E402
from vicmae_jax.data import synthetic  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def clips(tmp_path_factory):
  return loaders.make_clips(str(tmp_path_factory.mktemp('loader_clips') / 'clips'),
                            loaders.SMOKE_CLIPS)


def _factory(name):
  if name == 'pyav_whole_clip':
    return loaders.pyav_whole_clip
  try:
    importlib.import_module(name)
  except Exception as e:  # noqa: BLE001 - not installed, or a wheel that cannot load here
    pytest.skip(f'{name} unavailable: {type(e).__name__}: {e}')
  return loaders.decord_loader


@pytest.mark.parametrize('clip', sorted(loaders.SMOKE_CLIPS))
@pytest.mark.parametrize('name', ['ours_online', 'pyav_whole_clip', 'decord'])
def test_loader_returns_the_requested_frames(clips, clip, name):
  path = clips[clip]
  pairs = loaders.draw_pairs(path, 4, seed=0)
  if name == 'ours_online':
    load = loaders.ours_online(path)
  else:
    load = _factory(name)(path)
  ours = loaders.ours_online(path)
  for pair in pairs:
    assert pair.index[0] < pair.index[1]
    a, b = load(pair)
    loaders.check_frames(name, a, b)
    assert a.shape == (loaders.SMOKE_CLIPS[clip].height, loaders.SMOKE_CLIPS[clip].width, 3)
    assert [synthetic.read_index(a), synthetic.read_index(b)] == list(pair.index)
    a0, b0 = ours(pair)
    assert loaders.mean_abs_diff(a, a0) < 3 and loaders.mean_abs_diff(b, b0) < 3


def test_pairs_are_the_ones_load_pairs_draws(clips):
  """Peers get indices, ours get the seed: both must name the same frames."""
  path = clips['h264_tiny']
  for pair in loaders.draw_pairs(path, 6, seed=3):
    a, b = loaders.ours_online(path)(pair)
    assert [synthetic.read_index(a), synthetic.read_index(b)] == list(pair.index)


def test_smoke_run_prints_every_figure(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('VICMAE_BENCH_LOADERS_REEXEC', None)
  result = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'loaders.py'), '--smoke',
                           '--workdir', str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = dict(line.split(': ', 1) for line in result.stdout.splitlines() if ': ' in line)
  skipped = {k[:-len('_skipped')] for k in lines if k.endswith('_skipped')}
  for clip in loaders.SMOKE_CLIPS:
    for aug in ('noaug', 'aug'):
      for name in ('ours_online', 'ours_preextracted', 'pyav_whole_clip'):
        assert float(lines[f'{clip}_{name}_{aug}_pairs_per_s_per_core']) > 0
      assert lines[f'{clip}_fastest_peer_{aug}'] in ('decord', 'torchcodec', 'torchcodec_exact',
                                                    'pyav_whole_clip', 'torchvision')
      for name in ('ours_online', 'ours_preextracted'):
        assert float(lines[f'{clip}_{name}_over_fastest_peer_{aug}']) > 0
    for peer in ('decord', 'torchcodec'):
      if peer not in skipped and importlib.util.find_spec(peer) is not None:
        assert float(lines[f'{clip}_{peer}_mean_abs_diff_vs_ours']) < 3
    assert float(lines[f'{clip}_pyav_whole_clip_mean_abs_diff_vs_ours']) < 3
    # Pre-extracted frames are JPEG (q90) copies of ours at the stored times.
    assert float(lines[f'{clip}_ours_preextracted_mean_abs_diff_vs_ours']) < 8
  assert float(lines['jpeg_decode_ours_decode_image_per_s_per_core']) > 0
  assert all(re.fullmatch(r'[a-z0-9_]+', k) for k in lines), list(lines)

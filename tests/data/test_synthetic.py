"""The demo media: clips, photos, and the frames pre-extracted from the clips once."""
import collections
import os
import subprocess
import sys

import numpy as np

from configs import demo
from vicmae_jax.data import pipeline, records, sources, synthetic
from vicmae_jax.data.config import InputConfig
from vicmae_jax.tools import extract_frames

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _files(root):
  return {os.path.relpath(os.path.join(d, f), root): os.stat(os.path.join(d, f)).st_mtime_ns
          for d, _, names in os.walk(root) for f in names}


def test_demo_media_are_prepared_once_and_reused(tmp_path, monkeypatch):
  root = str(tmp_path / 'media')
  paths = synthetic.write_demo_data(root)
  assert sorted(paths) == ['frames', 'images', 'videos']
  assert len(os.listdir(paths['images'])) == 6
  shards = sources.expand_shards(paths['frames'])
  assert len(shards) == 1
  assert os.listdir(os.path.join(root, '.partial')) == []  # nothing half-written left behind
  before = _files(root)

  # A second run, or a resume, over the same media extracts nothing and rewrites nothing.
  def extract_again(argv=None):
    raise AssertionError(f'the demo clips were extracted a second time: {argv}')
  monkeypatch.setattr(extract_frames, 'main', extract_again)
  assert synthetic.write_demo_data(root) == paths
  assert pipeline.demo_sources(root)[0]['path'] == paths['frames']
  assert _files(root) == before


def test_demo_video_pairs_are_frames_of_the_clips_24_apart(tmp_path):
  specs = pipeline.demo_sources(str(tmp_path))
  assert [(s['kind'], s['name']) for s in specs] == [('frames', 'demo_videos'),
                                                     ('image_folder', 'demo_images')]
  sampling = InputConfig.of(dict(pair_sampling=demo.get_config('data=clips').input.pair_sampling.to_dict())
                            ).pair_sampling
  assert (sampling.mode, sampling.gap, sampling.unit) == ('fixed_gap', 24, 'frames')
  src = sources.build_source(specs[0], sampling=sampling)
  assert len(src) == 6 and src.is_video
  for i in range(len(src)):  # every frame of every clip is stored
    header, jpegs = records.decode_record(src._source[i])  # pylint: disable=protected-access
    assert len(jpegs) == 48 and header['fps'] == 24 and header['path'].endswith('.mp4')
  rng = np.random.default_rng(0)
  gaps = collections.Counter()
  for i in range(120):
    (first, second), = src.load(i % len(src), rng, 1)
    assert first.shape == (64, 96, 3) and first.dtype == np.uint8
    gaps[synthetic.read_index(second) - synthetic.read_index(first)] += 1
  # The sampler asks for frame centres, stored frames are stamped with their start times: the
  # snap to the nearest stored frame can land one frame either side, never further.
  # Every frame stored: a time snaps to the frame shown then, so gaps are exact, as decoding the
  # clips gives (sources.FrameRecordSource).
  assert set(gaps) == {24}, gaps


def test_every_demo_batch_mixes_clips_and_photos(tmp_path):
  cfg = pipeline.demo_config(str(tmp_path), image_size=32)
  it = pipeline.make_pretrain_iterator(cfg, global_batch_size=8, seed=0, process_index=0,
                                       process_count=1)
  for _ in range(4):
    batch = next(it)
    assert batch['view1'].shape == (8, 32, 32, 3)
    assert sorted(set(batch['is_video'].tolist())) == [0, 1]
  it.close()


def test_processes_preparing_the_same_media_at_once_agree(tmp_path):
  """A multi-process job's processes all prepare the media: one complete frames folder wins."""
  root = str(tmp_path / 'media')
  script = ('import sys\nfrom vicmae_jax.data import synthetic\n'
            'print(synthetic.write_demo_data(sys.argv[1])["frames"])\n')
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  procs = [subprocess.Popen([sys.executable, '-c', script, root], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert {out.strip() for out, _ in outs} == {os.path.join(root, 'frames')}
  assert os.listdir(os.path.join(root, '.partial')) == []
  src = sources.build_source(dict(kind='frames', path=os.path.join(root, 'frames')),
                             sampling=InputConfig().pair_sampling)
  assert len(src) == 6

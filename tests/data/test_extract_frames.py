"""Offline converter: real ArrayRecord shards, resumable, bad-video report, fresh pairs per epoch."""
import json
import os
import pathlib

import grain
import numpy as np

from vicmae_jax import data
from vicmae_jax.data import images, records, sources, synthetic, video
from vicmae_jax.tools import extract_frames

from conftest import write


def _videos(root):
  """Five good 2 s clips, one empty file and a one-frame clip."""
  os.makedirs(os.path.join(root, 'cls'), exist_ok=True)
  for i in range(5):
    synthetic.write_video(os.path.join(root, 'cls', f'v{i}.mp4'), num_frames=48, fps=24, seed=i)
  write(os.path.join(root, 'cls', 'empty.mp4'), b'')
  synthetic.write_video(os.path.join(root, 'cls', 'one.mp4'), num_frames=1, fps=24)


def test_convert_resume_report_and_read_back(tmp_path):
  src = str(tmp_path / 'videos')
  _videos(src)
  out = str(tmp_path / 'frames')
  args = ['--kind', 'video_folder', '--path', src, '--out', out, '--frames_per_video', '8',
          '--short_side', '0', '--videos_per_shard', '3', '--workers', '2']
  summary = extract_frames.main(args)
  assert summary['videos'] == 7 and summary['written'] == 5 and summary['shards'] == 3
  assert summary['bad'] == {'empty': 1, 'too_short': 1}
  report = pathlib.Path(os.path.join(out, 'bad_videos.tsv')).read_text()
  assert 'empty.mp4\tempty' in report and 'one.mp4\ttoo_short' in report
  shards = sorted(f for f in os.listdir(out) if f.endswith('.array_record'))
  assert len(shards) == 3 and not [f for f in os.listdir(out) if f.endswith('.tmp')]

  # Resume: a finished run redoes nothing; a lost shard is redone alone.
  stamp = {f: os.path.getmtime(os.path.join(out, f)) for f in shards}
  os.remove(os.path.join(out, shards[1]))
  again = extract_frames.main(args)
  assert again['written'] == 5
  assert os.path.getmtime(os.path.join(out, shards[0])) == stamp[shards[0]]
  assert os.path.exists(os.path.join(out, shards[1]))

  # Records hold 8 frames per video at segment centres; the pixels say which frame each is.
  ds = grain.sources.ArrayRecordDataSource([os.path.join(out, f) for f in shards])
  assert len(ds) == 5
  header, jpegs = records.decode_record(ds[0])
  assert len(jpegs) == 8 and header['fps'] == 24
  got = [synthetic.read_index(images.decode_image(j)) for j in jpegs]
  assert got == [int((j + 0.5) * 48 / 8) for j in range(8)]

  # Pairs from the frames source follow the sampling mode and change from draw to draw.
  source = sources.FrameRecordSource([os.path.join(out, f) for f in shards], video.PairSampling())
  rng = np.random.default_rng(0)
  draws = set()
  for _ in range(10):
    (a, b), = source.load(0, rng, 1)
    ia, ib = synthetic.read_index(a), synthetic.read_index(b)
    assert ia < 24 <= ib
    draws.add((ia, ib))
  assert len(draws) > 3


def test_frames_source_in_the_pipeline(tmp_path):
  src = str(tmp_path / 'videos')
  _videos(src)
  out = str(tmp_path / 'frames')
  extract_frames.main(['--kind', 'video_folder', '--path', src, '--out', out, '--workers', '1',
                       '--frames_per_video', '6'])
  cfg = dict(sources=[dict(kind='frames', path=out)], image_size=32, read_threads=1)
  kw = dict(global_batch_size=4, seed=0, process_index=0, process_count=1)
  it = data.make_pretrain_iterator(cfg, **kw)
  batch = next(it)
  assert batch['view1'].shape == (4, 32, 32, 3) and batch['is_video'].tolist() == [1, 1, 1, 1]
  state = it.get_state()
  expected = next(it)
  fresh = data.make_pretrain_iterator(cfg, **kw)
  fresh.set_state(state)
  np.testing.assert_array_equal(next(fresh)['view2'], expected['view2'])
  json.dumps(state)

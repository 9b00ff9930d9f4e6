"""Bad inputs never crash a run: replaced deterministically, counted by kind, abort above a limit."""
import json
import os
import pathlib

import numpy as np
import pytest

from vicmae_jax import data
from vicmae_jax.data import badinput, synthetic

from conftest import write


@pytest.fixture(scope='module')
def bad_media(tmp_path_factory, clips):
  root = tmp_path_factory.mktemp('bad')
  good = pathlib.Path(clips['h264.mp4'][0]).read_bytes()
  webm = pathlib.Path(clips['vp9.webm'][0]).read_bytes()
  videos = {
      'good1.mp4': good, 'good2.webm': webm, 'good3.mp4': good, 'good4.mp4': good,
      'good5.webm': webm,
      'empty.mp4': b'', 'garbage.mp4': np.random.default_rng(0).bytes(4000),
      'cut.mp4': good[:len(good) // 2], 'cut.webm': webm[:len(webm) // 3],
  }
  for name, payload in videos.items():
    write(str(root / 'videos' / name), payload)
  synthetic.write_video(str(root / 'videos' / 'one.mp4'), num_frames=1, fps=25)
  write(str(root / 'videos' / 'doomed.mp4'), good)  # listed in the index, deleted before training
  names = sorted(os.listdir(root / 'videos'))
  write(str(root / 'videos.csv'), ''.join(f'videos/{n},0\n' for n in names).encode())
  kinds = ['rgb_jpeg', 'gray_jpeg', 'cmyk_jpeg', 'rgba_png', 'gray16_png', 'large_jpeg']
  for kind in kinds:
    write(str(root / 'images' / f'{kind}.jpg'), synthetic.image_bytes(kind))
  write(str(root / 'images' / 'png_named.JPEG'), synthetic.image_bytes('png'))
  write(str(root / 'images' / 'broken.jpg'), b'\xff\xd8\xff garbage')
  return str(root)


def _cfg(root, **kw):
  cfg = dict(sources=[dict(kind='video_csv', path=os.path.join(root, 'videos.csv'), weight=1.0,
                           name='vid'),
                      dict(kind='image_folder', path=os.path.join(root, 'images'), weight=1.0,
                           name='img')],
             image_size=32, read_threads=1, bad_input_max_fraction=1.0,
             bad_input_max_retries=12, pair_sampling=dict(mode='fixed_gap', gap=55))
  cfg.update(kw)
  return cfg


def _start(root, **kw):
  """Builds the iterator (index validated), then deletes doomed.mp4: a file lost mid-run."""
  doomed = os.path.join(root, 'videos', 'doomed.mp4')
  if not os.path.exists(doomed):
    write(doomed, pathlib.Path(os.path.join(root, 'videos', 'good1.mp4')).read_bytes())
  it = data.make_pretrain_iterator(_cfg(root), **kw)
  os.remove(doomed)
  return it


def test_every_kind_is_replaced_and_counted(bad_media):
  kw = dict(global_batch_size=8, seed=0, process_index=0, process_count=1)
  it = _start(bad_media, **kw)
  batches = [next(it) for _ in range(8)]
  for b in batches:
    assert np.isfinite(b['view1']).all() and b['view1'].shape == (8, 32, 32, 3)
  m = it.metrics()
  for kind in ('missing', 'empty', 'unreadable', 'truncated', 'too_short', 'corrupt_image'):
    assert m[f'data/bad_{kind}'] > 0, (kind, m)
  assert m['data/bad_exhausted'] == 0
  names = {os.path.basename(p) for p in it._monitor.bad_files}
  assert {'doomed.mp4', 'empty.mp4', 'garbage.mp4', 'cut.mp4', 'one.mp4', 'broken.jpg'} <= names
  assert not names & {'good1.mp4', 'good2.webm', 'png_named.JPEG', 'cmyk_jpeg.jpg',
                      'gray16_png.jpg', 'rgba_png.jpg', 'large_jpeg.jpg'}
  # Each file's line gives the decoder's reason, not only a kind.
  why = {os.path.basename(p): v for p, v in it._monitor.bad_files.items()}
  assert why['doomed.mp4'] == 'missing' and why['empty.mp4'] == 'empty'
  assert why['garbage.mp4'].startswith('unreadable: ') and len(why['garbage.mp4']) > 14
  assert why['one.mp4'].startswith('too_short: ') or why['one.mp4'].startswith('truncated: ')
  assert why['broken.jpg'].startswith('corrupt_image: ')
  # Replacement is deterministic: a second run gives identical batches and counts.
  again = _start(bad_media, **kw)
  for b in batches:
    c = next(again)
    np.testing.assert_array_equal(b['view1'], c['view1'])
  assert again.metrics() == m


def test_abort_above_fraction_names_the_files(bad_media):
  cfg = _cfg(bad_media, bad_input_max_fraction=0.01, bad_input_min_examples=8,
             sources=_cfg(bad_media)['sources'][:1])
  cfg['sources'][0]['on_missing'] = 'skip'
  it = data.make_pretrain_iterator(cfg, global_batch_size=8, seed=0, process_index=0,
                                   process_count=1)
  with pytest.raises(data.TooManyBadInputs, match=r'above the configured maximum 1\.00%') as e:
    for _ in range(10):
      next(it)
  assert any(n in str(e.value) for n in ('empty.mp4', 'garbage.mp4', 'cut.mp4', 'broken.jpg'))


def test_exhausted_retries_give_a_placeholder(tmp_path):
  folder = tmp_path / 'all_bad'
  for i in range(3):
    write(str(folder / f'{i}.mp4'), b'')
  cfg = dict(sources=[dict(kind='video_folder', path=str(folder))], image_size=16,
             read_threads=1, bad_input_max_fraction=1.0, bad_input_max_retries=2)
  it = data.make_pretrain_iterator(cfg, global_batch_size=2, seed=0, process_index=0,
                                   process_count=1)
  batch = next(it)
  np.testing.assert_allclose(batch['view1'], 0.0, atol=0.05)  # mean-gray placeholder
  assert it.metrics()['data/bad_exhausted'] == 2 and it.metrics()['data/bad_empty'] == 6


def test_malformed_index_fails_before_training(tmp_path):
  csv = write(str(tmp_path / 'list.csv'), b'a.mp4,1\n')
  with pytest.raises(data.IndexFormatError, match=r'list\.csv:1: file does not exist'):
    data.make_pretrain_iterator(dict(sources=[dict(kind='video_csv', path=csv)]),
                                global_batch_size=2, seed=0, process_index=0, process_count=1)


def test_monitor_state_round_trip():
  mon = badinput.BadInputMonitor(lambda s, i: f'file{i}', ['a'], max_fraction=0.5, min_attempts=1)
  kinds = np.full((2, 3), -1, np.int32)
  refs = np.full((2, 3), -1, np.int64)
  kinds[0, 0], refs[0, 0] = badinput.KIND_ID['missing'], 7
  mon.update({'_bad_kinds': kinds, '_bad_refs': refs, 'source': np.zeros(2, np.int32)})
  state = json.loads(json.dumps(mon.get_state()))
  other = badinput.BadInputMonitor(lambda s, i: '', ['a'])
  other.set_state(state)
  assert other.metrics() == mon.metrics() and other.bad_files == {'file7': 'missing'}


def test_resume_with_a_changed_index_warns_with_both_counts(caplog):
  mon = badinput.BadInputMonitor(lambda s, i: '', ['vid', 'img'], source_sizes=[19, 5])
  state = json.loads(json.dumps(mon.get_state()))
  badinput.BadInputMonitor(lambda s, i: '', ['vid', 'img'], source_sizes=[19, 5]).set_state(state)
  assert 'changed data' not in caplog.text
  badinput.BadInputMonitor(lambda s, i: '', ['vid', 'img'], source_sizes=[12, 5]).set_state(state)
  assert 'resuming with changed data' in caplog.text and 'vid: 19 -> 12' in caplog.text
  assert 'img' not in caplog.text.split('vid: 19 -> 12')[1].split(')')[0]

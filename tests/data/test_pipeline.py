"""End-to-end pipeline: contract, determinism, resume, process shards, mixing, workers, jax.Arrays."""
import json

import jax
import numpy as np
import pytest

from vicmae_jax import data
from vicmae_jax.data import pipeline


def _config(video_folder, image_folder, **kw):
  cfg = dict(sources=[dict(kind='video_folder', path=video_folder, weight=1.0, name='vid'),
                      dict(kind='image_folder', path=image_folder, weight=1.0, name='img')],
             image_size=32, read_threads=1, bad_input_min_examples=10_000)
  cfg.update(kw)
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(np.asarray(x[key]), np.asarray(y[key]))


def test_batch_contract(video_folder, image_folder):
  it = data.make_pretrain_iterator(_config(video_folder, image_folder), global_batch_size=8, seed=0,
                                   process_index=0, process_count=1)
  batch = next(it)
  assert set(batch) == {'view1', 'view2', 'is_video', 'source'}
  assert batch['view1'].shape == batch['view2'].shape == (8, 32, 32, 3)
  assert batch['view1'].dtype == np.float32
  assert batch['is_video'].dtype == batch['source'].dtype == np.int32
  np.testing.assert_array_equal(batch['is_video'], batch['source'] == 0)
  assert -2.2 < batch['view1'].min() and batch['view1'].max() < 2.7  # ImageNet-normalised
  assert not np.array_equal(batch['view1'], batch['view2'])


def test_same_seed_same_batches_other_seed_differs(video_folder, image_folder):
  cfg = _config(video_folder, image_folder)
  kw = dict(global_batch_size=4, process_index=0, process_count=1)
  a = _take(data.make_pretrain_iterator(cfg, seed=1, **kw), 3)
  b = _take(data.make_pretrain_iterator(cfg, seed=1, **kw), 3)
  c = _take(data.make_pretrain_iterator(cfg, seed=2, **kw), 1)
  _assert_same(a, b)
  assert not np.array_equal(a[0]['view1'], c[0]['view1'])


@pytest.mark.parametrize('workers', [0, 2])
def test_resume_reproduces_the_next_batches(video_folder, image_folder, workers):
  cfg = _config(video_folder, image_folder, num_workers=workers)
  kw = dict(global_batch_size=4, seed=3, process_index=0, process_count=1)
  it = data.make_pretrain_iterator(cfg, **kw)
  _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))  # must survive a JSON round trip (checkpoints)
  expected = _take(it, 3)
  it.close()
  fresh = data.make_pretrain_iterator(cfg, **kw)
  fresh.set_state(state)
  _assert_same(_take(fresh, 3), expected)
  assert fresh.metrics()['data/loaded'] == 24  # counters restored too
  fresh.close()


def test_process_shards_are_disjoint_and_cover_the_data(video_folder, image_folder):
  cfg = _config(video_folder, image_folder)
  seen = []
  for p in range(2):
    it = data.make_pretrain_iterator(cfg, global_batch_size=8, seed=0, process_index=p,
                                     process_count=2)
    records = set()
    for _ in range(4):  # 2 x 4 x 4 = 32 examples = 16 videos + 16 images = 2 epochs of videos
      next(it)
      records |= set(zip(*map(np.ndarray.tolist, it.last_records)))
    seen.append(records)
  first_epoch = []
  for p in range(2):
    it = data.make_pretrain_iterator(cfg, global_batch_size=8, seed=0, process_index=p,
                                     process_count=2)
    for _ in range(2):  # 2 processes x 2 x 4 = 16 examples: one epoch of the 8 videos
      next(it)
      first_epoch.append(set(zip(*map(np.ndarray.tolist, it.last_records))))
  p0, p1 = first_epoch[0] | first_epoch[1], first_epoch[2] | first_epoch[3]
  assert not p0 & p1
  assert {r for s, r in p0 | p1 if s == 0} == set(range(8))  # every video exactly once
  assert len(seen[0]) > 0 and len(seen[1]) > 0


def test_mixing_ratio_follows_weights(video_folder, image_folder):
  cfg = _config(video_folder, image_folder)
  cfg['sources'][0]['weight'], cfg['sources'][1]['weight'] = 1.0, 3.0
  it = data.make_pretrain_iterator(cfg, global_batch_size=8, seed=0, process_index=0,
                                   process_count=1)
  batches = _take(it, 4)
  metrics = data.data_metrics(it)
  assert metrics['data/mix_img'] == pytest.approx(0.75, abs=0.05)
  assert metrics['data/mix_vid'] == pytest.approx(0.25, abs=0.05)
  for b in batches:  # the ratio holds within every batch, not just on average
    assert 1 <= b['is_video'].sum() <= 3


def test_every_process_gets_the_configured_mix(video_folder, image_folder):
  """A strided process slice would alias with the v, i, v, i interleave (one source each)."""
  cfg = _config(video_folder, image_folder)
  for p in range(2):
    it = data.make_pretrain_iterator(cfg, global_batch_size=16, seed=0, process_index=p,
                                     process_count=2)
    for b in _take(it, 3):
      assert 2 <= b['is_video'].sum() <= 6, (p, b['is_video'])
    assert data.data_metrics(it)['data/mix_vid'] == pytest.approx(0.5, abs=0.1)


def test_natural_proportions_when_weights_are_absent(video_folder, image_folder):
  cfg = _config(video_folder, image_folder)
  for s in cfg['sources']:
    del s['weight']
  it = data.make_pretrain_iterator(cfg, global_batch_size=10, seed=0, process_index=0,
                                   process_count=1)
  _take(it, 2)
  assert it.metrics()['data/mix_vid'] == pytest.approx(8 / 20, abs=0.06)  # 8 videos, 12 images


def test_repeated_sampling_k(video_folder, image_folder):
  cfg = _config(video_folder, image_folder, repeated_sampling=2)
  batch = next(data.make_pretrain_iterator(cfg, global_batch_size=8, seed=0, process_index=0,
                                           process_count=1))
  assert batch['view1'].shape == (8, 32, 32, 3)
  np.testing.assert_array_equal(batch['source'][0::2], batch['source'][1::2])  # k from one clip
  assert not np.array_equal(batch['view1'][0], batch['view1'][1])  # but different pairs
  with pytest.raises(ValueError, match='divisible'):
    data.make_pretrain_iterator(cfg, global_batch_size=6, seed=0, process_index=0, process_count=2)


def test_global_arrays_with_device_prefetch_and_resume(video_folder, image_folder):
  mesh = jax.make_mesh((8,), ('data',))
  sharding = jax.sharding.NamedSharding(mesh, jax.P('data'))
  cfg = _config(video_folder, image_folder, device_prefetch=2)
  kw = dict(global_batch_size=8, seed=0, process_index=0, process_count=1, sharding=sharding)
  it = data.make_pretrain_iterator(cfg, **kw)
  first = next(it)
  assert isinstance(first['view1'], jax.Array) and first['view1'].shape == (8, 32, 32, 3)
  assert first['view1'].sharding == sharding and len(first['view1'].addressable_shards) == 8
  state = it.get_state()
  expected = [jax.device_get(b) for b in _take(it, 2)]
  it.close()
  fresh = data.make_pretrain_iterator(cfg, **kw)
  fresh.set_state(state)
  _assert_same([jax.device_get(b) for b in _take(fresh, 2)], expected)
  fresh.close()


def test_uint8_output_and_spatial_only(video_folder, image_folder):
  cfg = _config(video_folder, image_folder, uint8_output=True, video_spatial_only=True)
  batch = next(data.make_pretrain_iterator(cfg, global_batch_size=4, seed=0, process_index=0,
                                           process_count=1))
  assert batch['view1'].dtype == np.uint8


def test_demo_config_is_fully_local(tmp_path):
  cfg = data.demo_config(str(tmp_path), image_size=32)
  batch = next(data.make_pretrain_iterator(cfg, global_batch_size=4, seed=0, process_index=0,
                                           process_count=1))
  assert batch['view1'].shape == (4, 32, 32, 3) and set(batch['is_video'].tolist()) == {0, 1}


def test_pipeline_keys_documented():
  for key in pipeline.DEFAULTS:
    assert key in pipeline.__doc__, key


def test_grain_checkpoint_handler_round_trip(video_folder, image_folder, tmp_path):
  from etils import epath
  import grain
  cfg = _config(video_folder, image_folder)
  kw = dict(global_batch_size=4, seed=0, process_index=0, process_count=1)
  it = data.make_pretrain_iterator(cfg, **kw)
  next(it)
  handler = grain.checkpoint.CheckpointHandler()
  handler.save(epath.Path(tmp_path), args=grain.checkpoint.CheckpointSave(it))
  expected = next(it)
  fresh = handler.restore(epath.Path(tmp_path), args=grain.checkpoint.CheckpointRestore(
      data.make_pretrain_iterator(cfg, **kw)))
  _assert_same([next(fresh)], [expected])


def test_workers_outside_absl_and_pytest(tmp_path):
  """mp_prefetch in a plain script (absl flags never parsed) must not raise UnparsedFlagAccessError."""
  import os
  import subprocess
  import sys
  script = (
      'import jax\n'  # grain only reads the flag when jax is imported
      'from vicmae_jax import data\n'
      f'cfg = data.demo_config({str(tmp_path)!r}, image_size=16)\n'
      'cfg["num_workers"] = 1\n'
      'it = data.make_pretrain_iterator(cfg, global_batch_size=2, seed=0)\n'
      'print(next(it)["view1"].shape)\n'
      'it.close()\n')
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env,
                       timeout=120, cwd=str(tmp_path))
  assert out.returncode == 0, out.stderr[-2000:]
  assert '(2, 16, 16, 3)' in out.stdout


def test_a_resume_with_other_workers_says_what_changed(video_folder, image_folder, tmp_path):
  """Grain's position depends on the worker count: restoring it into another layout stops with
  what changed (not 'every checkpoint unreadable'), or restarts the data order on request."""
  import jax.numpy as jnp

  from vicmae_jax import checkpointing
  kw = dict(global_batch_size=4, seed=3, process_index=0, process_count=1)
  it = data.make_pretrain_iterator(_config(video_folder, image_folder), **kw)
  _take(it, 2)
  state = {'x': jnp.zeros(2)}
  ckpt = checkpointing.Checkpointer(str(tmp_path), every_steps=1, async_save=False)
  ckpt.save(2, state, it, None, force=True)
  ckpt.close()
  it.close()
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)

  other = data.make_pretrain_iterator(_config(video_folder, image_folder, num_workers=2), **kw)
  with pytest.raises(pipeline.DataLayoutChanged, match=r'num_workers 0 -> 2.*on_layout_change'):
    checkpointing.Checkpointer(str(tmp_path), every_steps=1).restore_latest(abstract, other)
  other.close()
  restart = data.make_pretrain_iterator(
      _config(video_folder, image_folder, num_workers=2, on_layout_change='restart'), **kw)
  restored, step = checkpointing.Checkpointer(str(tmp_path), every_steps=1).restore_latest(
      abstract, restart)
  assert step == 2 and restart.metrics()['data/loaded'] == 8   # counters kept
  assert next(restart)['view1'].shape == (4, 32, 32, 3)        # the data order starts again
  restart.close()

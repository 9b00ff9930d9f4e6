"""Orbax checkpoints: restore onto another mesh, fall back past a broken newest checkpoint."""
import logging

import jax
import numpy as np

from vicmae_jax import checkpointing, optim, sharding
from vicmae_jax.data.random_batches import RandomBatchIterator
from vicmae_jax.models import model_config
from vicmae_jax.train_state import create_train_state


def _state(n_devices, fsdp=1, seed=0):
  cfg = model_config("test", image_size=16, projector_hidden=64, predictor_hidden=64)
  tx = optim.make_optimizer(optim.learning_rate_schedule(1e-3, 10, 1))
  mesh = sharding.make_mesh(data=n_devices // fsdp, fsdp=fsdp, devices=jax.devices()[:n_devices])
  _, state, shardings = create_train_state(cfg, tx, seed, mesh, fsdp_min_mb=0.0)
  return state, shardings


def _abstract(state, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
                      shardings)


def test_written_on_8_devices_restores_on_4(tmp_path):
  state8, _ = _state(8, fsdp=4, seed=1)
  ckpt = checkpointing.Checkpointer(str(tmp_path), every_steps=1)
  ckpt.save(5, state8, None, {"note": "8 devices"}, force=True)
  ckpt.close()

  template, shardings4 = _state(4, fsdp=2, seed=2)
  restored, step = checkpointing.Checkpointer(str(tmp_path), every_steps=1).restore_latest(
      _abstract(template, shardings4))
  assert step == 5
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state8))
  leaf = restored.params["decoder"]["blocks"][0]["mlp"]["fc1"]["kernel"][...]
  assert len(leaf.sharding.device_set) == 4


def test_data_iterator_state_travels_with_the_checkpoint(tmp_path):
  state, shardings = _state(1)
  it = RandomBatchIterator(global_batch_size=4, image_size=8, seed=0)
  for _ in range(3):
    next(it)
  ckpt = checkpointing.Checkpointer(str(tmp_path), every_steps=1)
  ckpt.save(3, state, it, None, force=True)
  ckpt.close()
  expected = next(it)
  fresh = RandomBatchIterator(global_batch_size=4, image_size=8, seed=0)
  checkpointing.Checkpointer(str(tmp_path), every_steps=1).restore_latest(
      _abstract(state, shardings), fresh)
  np.testing.assert_array_equal(next(fresh)["view1"], expected["view1"])


def test_unreadable_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
  state, shardings = _state(1)
  ckpt = checkpointing.Checkpointer(str(tmp_path), every_steps=1, keep=3)
  ckpt.save(1, state, None, None, force=True)
  later = state.replace(step=state.step + 7)
  ckpt.save(2, later, None, None, force=True)
  ckpt.close()
  # Tear the newest checkpoint's array data, as a crash or a bad disk would.
  for f in (tmp_path / "2" / "state").rglob("*"):
    if f.is_file() and "d" in f.parent.name:
      f.write_bytes(b"garbage")
  with caplog.at_level(logging.WARNING):
    again = checkpointing.Checkpointer(str(tmp_path), every_steps=1)
    restored, step = again.restore_latest(_abstract(state, shardings))
  assert step == 1 and int(restored.step) == 0
  assert "step 2" in caplog.text and "unreadable" in caplog.text
  # The torn step is moved aside (kept, and said where), out of the rotation, and saved again.
  aside = tmp_path.parent / f"{tmp_path.name}_torn" / "2"
  assert (aside / "state").is_dir() and str(aside) in caplog.text
  assert again.all_steps() == [1]
  assert again.save(2, later, None, None, force=True)
  again.close()
  assert checkpointing.Checkpointer(str(tmp_path), every_steps=1).all_steps() == [1, 2]
  assert len(caplog.text) < 5000    # one warning per step, not kilobytes of tensorstore specs


def test_abandoned_reads_are_quiet():
  """What the failed restore's pending reads report into its closed event loop is dropped;
  other unraisable errors still reach the previous hook."""
  seen = []
  hook = checkpointing._drop_closed_loop_reports(lambda u: seen.append(u.exc_value))

  class Unraisable:
    def __init__(self, exc, obj=None):
      self.exc_value, self.object = exc, obj

  async def _read_array_index_and_device_put():   # named as Orbax's read coroutine
    pass

  abandoned = _read_array_index_and_device_put()
  hook(Unraisable(RuntimeError("Event loop is closed")))
  hook(Unraisable(Exception("Encountered error while reading array index"), abandoned))
  hook(Unraisable(ValueError("something else")))
  abandoned.close()
  assert [str(e) for e in seen] == ["something else"]
  record = logging.LogRecord("asyncio", logging.ERROR, "", 0, "Future exception was never "
                             "retrieved\nfuture: ...", None, None)
  assert not checkpointing._DropUnretrievedFutures().filter(record)


def test_interval_and_keep_last_k(tmp_path):
  state, _ = _state(1)
  ckpt = checkpointing.Checkpointer(str(tmp_path), every_steps=2, keep=2)
  saved = [s for s in range(1, 8) if ckpt.save(s, state, None, None)]
  assert saved == [2, 4, 6]
  assert not ckpt.save(6, state, None, None, force=True)  # already there: no second save
  ckpt.close()
  assert checkpointing.Checkpointer(str(tmp_path), every_steps=2).all_steps() == [4, 6]


def test_no_checkpoint_means_fresh_start(tmp_path):
  state, shardings = _state(1)
  assert checkpointing.Checkpointer(str(tmp_path), every_steps=1).restore_latest(
      _abstract(state, shardings)) is None

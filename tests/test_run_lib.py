"""The run skeleton: hooks, periodic and final checkpoints, stop requests, restore-or-init."""
import json
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vicmae_jax import run_lib


def _config(every=3, log_every=2):
  return ml_collections.ConfigDict(dict(
      checkpoint=dict(every_steps=every, keep=10, async_save=False), log_every_steps=log_every))


def _init():
  return {"step": jnp.zeros((), jnp.int32), "total": jnp.zeros((), jnp.float32)}


def _step(state, batch):
  """Adds the batch to a running total: the final total says which batches were consumed."""
  new = {"step": state["step"] + 1, "total": state["total"] + batch}
  return new, {"loss": new["total"]}


def _skeleton():
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _init())


class _Recorder(run_lib.Hook):
  def __init__(self):
    self.calls = []

  def before_step(self, step):
    self.calls.append(("before", step))

  def after_step(self, step, state, metrics):
    self.calls.append(("after", step, float(metrics["loss"])))


def _batches(start=0):
  return iter(float(i) for i in range(start + 1, 1000))


def _run(workdir, total, hooks=(), stop_after=None, config=None):
  run = run_lib.open_run(config or _config(), workdir)
  state, step = run.restore_or_init(_skeleton(), _init)
  end = run_lib.train_loop(run, state, step, total, _step, _batches(step), hooks,
                           stop_after_steps=stop_after)
  run.close()
  return run, step, end


def test_loop_calls_hooks_in_order_and_saves_on_the_interval_and_at_the_end(tmp_path):
  rec = _Recorder()
  run, first, end = _run(tmp_path / "w", 7, [rec])
  assert first == 0 and end.step == 7 and not end.stopped
  assert float(end.state["total"]) == sum(range(1, 8))
  assert rec.calls[:4] == [("before", 0), ("after", 1, 1.0), ("before", 1), ("after", 2, 3.0)]
  assert len(rec.calls) == 14
  assert run.ckpt.all_steps() == [3, 6, 7]  # every 3 steps, plus the final step
  assert (tmp_path / "w" / "checkpoints").is_dir()


def test_restore_or_init_resumes_where_the_run_stopped(tmp_path):
  _, _, part = _run(tmp_path / "w", 10, stop_after=4)
  assert part.stopped and part.step == 4
  # The stop was saved even though 4 is not on the 3-step interval.
  run, first, end = _run(tmp_path / "w", 10)
  assert first == 4 and end.step == 10
  assert run.ckpt.all_steps()[-1] == 10
  _, _, straight = _run(tmp_path / "straight", 10)
  np.testing.assert_array_equal(end.state["total"], straight.state["total"])


def test_a_finished_run_does_not_step_again(tmp_path):
  _run(tmp_path / "w", 5)
  rec = _Recorder()
  _, first, end = _run(tmp_path / "w", 5, [rec])
  assert first == 5 and end.step == 5 and rec.calls == [] and not end.stopped


def test_sigterm_saves_and_stops_at_that_step(tmp_path):
  class Kill(run_lib.Hook):
    def after_step(self, step, state, metrics):
      if step == 2:
        os.kill(os.getpid(), signal.SIGTERM)

  previous = signal.getsignal(signal.SIGTERM)
  try:
    run, _, end = _run(tmp_path / "w", 10, [Kill()])
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert end.stopped and end.step == 2
  assert run.ckpt.all_steps() == [2]


def test_every_hook_interval_and_end_rules():
  seen = []
  hook = run_lib.Every(3, 7, lambda s, *_: seen.append(s))
  for s in range(1, 8):
    hook.after_step(s, None, None)
  assert seen == [3, 6, 7]
  off = run_lib.Every(0, 7, lambda s, *_: seen.append(-s))
  off.after_step(7, None, None)
  assert seen == [3, 6, 7]  # 0 means never, the last step included
  forced = run_lib.Every(0, 7, lambda s, *_: seen.append(-s), at_end=True)
  forced.after_step(7, None, None)
  assert seen[-1] == -7


def test_write_goes_to_metrics_jsonl_and_tensorboard(tmp_path):
  run = run_lib.open_run(_config(), tmp_path / "w")
  run.write(3, {"loss": 0.5}, "a line")
  run.close()
  rows = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  assert rows == [{"step": 3, "loss": 0.5}]
  assert list((tmp_path / "w").glob("events.out.tfevents.*"))


def test_profile_hook_writes_a_trace(tmp_path):
  hook = run_lib.Profile(tmp_path / "profile", start_step=1, num_steps=1)
  _run(tmp_path / "w", 3, [hook])
  assert any(p.is_file() for p in (tmp_path / "profile").rglob("*"))


def test_profile_off_writes_nothing(tmp_path):
  hook = run_lib.Profile(tmp_path / "profile", start_step=0, num_steps=0)
  _run(tmp_path / "w", 2, [hook])
  assert not (tmp_path / "profile").exists()


def test_ctrl_c_saves_and_stops_like_sigterm_and_twice_stops_at_once(tmp_path):
  class CtrlC(run_lib.Hook):
    def __init__(self, times):
      self.times = times

    def after_step(self, step, state, metrics):
      if step == 2:
        for _ in range(self.times):
          os.kill(os.getpid(), signal.SIGINT)

  previous = signal.getsignal(signal.SIGINT)
  try:
    run, _, end = _run(tmp_path / "once", 10, [CtrlC(1)])
    assert end.stopped and end.step == 2 and run.ckpt.all_steps() == [2]
    with pytest.raises(KeyboardInterrupt):
      _run(tmp_path / "twice", 10, [CtrlC(2)])
    assert not (tmp_path / "twice" / "checkpoints" / "2").exists()   # no save on the way out
    # The interrupted run released its workdir: the same workdir starts again at once.
    _, first, end = _run(tmp_path / "twice", 10)
    assert first == 0 and end.step == 10
  finally:
    signal.signal(signal.SIGINT, previous)


def test_a_second_run_in_the_same_workdir_is_refused(tmp_path):
  run = run_lib.open_run(_config(), tmp_path / "w")
  with pytest.raises(run_lib.workdir_lock.WorkdirBusy, match=f"pid {os.getpid()}"):
    run_lib.open_run(_config(), tmp_path / "w")
  run.close()
  run_lib.open_run(_config(), tmp_path / "w").close()   # free again once closed


def test_relative_workdir_saves_and_resumes(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  run, _, end = _run("rel/run", 10, stop_after=4)
  assert str(run.workdir) == str(tmp_path / "rel" / "run") and end.step == 4
  assert run.ckpt.all_steps() == [3, 4]
  _, first, end = _run("rel/run", 10)
  assert first == 4 and end.step == 10


def test_replayed_steps_replace_their_metrics_rows(tmp_path):
  """A run killed after its checkpoint at step 3 logged steps 4-5; the resumed run logs them
  again: metrics.jsonl keeps one row per step."""
  class Log(run_lib.Hook):
    def __init__(self, run):
      self.run = run

    def after_step(self, step, state, metrics):
      self.run.write(step, {"loss": float(metrics["loss"])})

  run = run_lib.open_run(_config(every=3), tmp_path / "w")
  state, step = run.restore_or_init(_skeleton(), _init)
  run_lib.train_loop(run, state, step, 5, _step, _batches(), [Log(run)])
  run.close()
  path = tmp_path / "w" / "metrics.jsonl"
  with path.open("a") as f:
    f.write('{"step": 6, "loss"')     # a torn last line: killed mid-write
  for s in (4, 5):                     # as if only step 3 had been saved
    import shutil
    shutil.rmtree(tmp_path / "w" / "checkpoints" / str(s), ignore_errors=True)
  run = run_lib.open_run(_config(every=3), tmp_path / "w")
  state, step = run.restore_or_init(_skeleton(), _init)
  assert step == 3
  run_lib.train_loop(run, state, step, 6, _step, _batches(step), [Log(run)])
  run.close()
  steps = [json.loads(line)["step"] for line in path.read_text().splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6]


def test_too_many_bad_inputs_saves_the_last_good_state_first(tmp_path):
  from vicmae_jax.data.badinput import TooManyBadInputs

  def batches():
    yield from (1.0, 2.0)
    raise TooManyBadInputs("bad fraction 50% above the configured maximum: a.mp4, b.mp4")

  run = run_lib.open_run(_config(every=100), tmp_path / "w")
  state, step = run.restore_or_init(_skeleton(), _init)
  with pytest.raises(TooManyBadInputs, match="a.mp4"):
    run_lib.train_loop(run, state, step, 10, _step, batches())
  assert run.ckpt.all_steps() == [2]
  run_lib.open_run(_config(), tmp_path / "w").close()   # the workdir was released


def test_a_changed_model_says_so_instead_of_every_checkpoint_unreadable(tmp_path):
  def config(width):
    c = _config()
    c.model = ml_collections.ConfigDict(dict(variant="test", width=width))
    return c

  run = run_lib.open_run(config(32), tmp_path / "w")
  state, step = run.restore_or_init(_skeleton(), _init)
  run_lib.train_loop(run, state, step, 3, _step, _batches())
  run.close()
  wider = {"step": jax.ShapeDtypeStruct((), jnp.int32),
           "total": jax.ShapeDtypeStruct((4,), jnp.float32)}   # the new model's shapes
  run = run_lib.open_run(config(64), tmp_path / "w")
  with pytest.raises(RuntimeError, match=r"written by another model \(model.width 32 -> 64\)"):
    run.restore_or_init(wider, _init)
  assert run.ckpt.all_steps() == [3]   # sound checkpoints are not set aside as torn
  run.close()

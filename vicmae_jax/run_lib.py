"""The run skeleton every training mode stands on: pretraining, fine-tuning, the augmented probe.

A mode defines its jitted step and its hooks (logging, evaluation, images, profiling); this
module owns what every run does the same way: the workdir, metric writers (TensorBoard and
metrics.jsonl on process 0), the Orbax checkpointer with its signal handling, restore-or-init
against an abstract target carrying the current shardings, and the step loop with periodic and
on-request (SIGTERM, preemption) checkpoints.

    run = run_lib.open_run(config, workdir)
    state, step = run.restore_or_init(skeleton, init_fn, data_iter)
    end = run_lib.train_loop(run, state, step, total, step_fn, batches, hooks, data_iter)
    run.close()
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import ml_collections
from etils import epath

from vicmae_jax import checkpointing, logging_utils, paths, typed_config, versions, workdir_lock
from vicmae_jax.data.badinput import TooManyBadInputs
from vicmae_jax.data.pipeline import DataLayoutChanged


class TrainingDiverged(RuntimeError):
  """Too many consecutive non-finite updates; the last checkpoint holds the last good state."""


# Errors that end a run as planned (the message says why and what to do; no traceback needed).
RUN_ENDING_ERRORS = (TooManyBadInputs, TrainingDiverged, workdir_lock.WorkdirBusy,
                     DataLayoutChanged)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """`config.checkpoint` of every mode."""

  every_steps: int = 1000
  keep: int = 3              # newest checkpoints kept
  async_save: bool = True    # write in the background while training goes on


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
  """`config.profile`: a TensorBoard trace of `num_steps` steps from `start_step` (0: none)."""

  start_step: int = 10
  num_steps: int = 0


# Model settings that change how the step computes, never the saved state: not a reason for a
# checkpoint not to restore, so never named as one.
_COMPUTE_ONLY = frozenset({"dtype", "remat", "remat_policy", "attention_impl", "mask_ratio"})


@dataclasses.dataclass
class Run:
  """One training run's workdir, writers and checkpointer (every process holds one)."""

  workdir: epath.Path
  ckpt: checkpointing.Checkpointer
  writer: Any                              # clu writer; process > 0 only logs
  jsonl: logging_utils.JsonlWriter | None  # process 0 only
  config_dict: dict                        # saved with every checkpoint
  log_every_steps: int                     # host-synchronising steps: stop requests are agreed here
  lock: workdir_lock.WorkdirLock | None = None  # process 0 only

  @property
  def lead(self) -> bool:
    return jax.process_index() == 0

  def write(self, step: int, scalars: Mapping[str, float], line: str | None = None) -> None:
    """Scalars to TensorBoard and metrics.jsonl, and `line` to the log (process 0 only)."""
    if not self.lead:
      return
    self.writer.write_scalars(step, dict(scalars))
    self.jsonl.write(step, scalars)
    if line:
      logging.info(line)

  def restore_or_init(self, skeleton: Any, init: Callable[[], Any], data_iter: Any | None = None
                      ) -> tuple[Any, int]:
    """(state, its step): the newest readable checkpoint restored into `skeleton` (sharded
    `ShapeDtypeStruct`s: the restore follows the current mesh), else `init()`."""
    try:
      restored = self.ckpt.restore_latest(skeleton, data_iter)
    except RuntimeError as e:  # no step restored: say so plainly if the model changed
      changed = self._changed_model_settings()
      if not changed:
        raise
      raise RuntimeError(
          f"The checkpoints in {self.ckpt.directory} were written by another model ("
          f"{', '.join(changed)}), so none can be restored into this one. Use another --workdir "
          f"(or the earlier model settings to resume that run).") from e
    state = restored[0] if restored is not None else init()
    step = int(jax.device_get(step_of(state)))
    if self.lead:
      # Steps run after the restored checkpoint (a killed run) are run again: their old rows go.
      dropped = self.jsonl.drop_after(step)
      if dropped:
        logging.info("metrics.jsonl: %d rows past the restored step %d removed (those steps "
                     "run again)", dropped, step)
    return state, step

  def _changed_model_settings(self) -> list[str]:
    """'model.width 768 -> 1024' for each model setting the newest checkpoint's saved config has
    with another value than this run's."""
    steps = self.ckpt.all_steps()
    try:
      saved = self.ckpt.restore_config(steps[-1]) if steps else None
    except Exception:  # noqa: BLE001 - no readable config either: nothing to compare
      return []
    old, new = (saved or {}).get("model") or {}, self.config_dict.get("model") or {}
    return [f"model.{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in _COMPUTE_ONLY]

  def resuming(self) -> bool:
    """Whether the workdir holds a checkpoint (an init source need not be read then)."""
    return bool(self.ckpt.all_steps())

  def close(self) -> None:
    """Waits for pending checkpoint writes, flushes the writers, releases the workdir."""
    try:
      self.ckpt.close()
      self.writer.flush()
      self.writer.close()
    finally:
      self.release()

  def release(self) -> None:
    """Frees the workdir for the next run (also when a run ends on an error)."""
    if self.lock is not None:
      self.lock.release()


def step_of(state: Any) -> Any:
  """The update count of a state: a dataclass with `.step` or a dict with 'step'."""
  return state["step"] if isinstance(state, Mapping) else state.step


def open_run(config: ml_collections.ConfigDict | Any, workdir: str) -> Run:
  """Creates the workdir, the checkpointer (SIGTERM requests a save and a clean stop) and the
  writers of a run; `config` (a ConfigDict or a typed config) gives `checkpoint` (a
  CheckpointConfig mapping) and `log_every_steps`, and is saved with every checkpoint."""
  versions.log_and_compare()  # every process: warns when workers installed different versions
  workdir = epath.Path(paths.resolve(workdir))
  workdir.mkdir(parents=True, exist_ok=True)
  lock = workdir_lock.WorkdirLock(str(workdir)).acquire() if jax.process_index() == 0 else None
  checkpointing.quiet_orbax_logs()
  c = typed_config.from_mapping(CheckpointConfig, config.checkpoint, "checkpoint")
  ckpt = checkpointing.Checkpointer(str(workdir / "checkpoints"), every_steps=c.every_steps,
                                    keep=c.keep, async_save=c.async_save)
  ckpt.install_sigterm_handler()
  writer, jsonl = logging_utils.create_writers(str(workdir))
  config_dict = (typed_config.to_dict(config) if dataclasses.is_dataclass(config)
                 else config.to_dict())
  return Run(workdir=workdir, ckpt=ckpt, writer=writer, jsonl=jsonl, config_dict=config_dict,
             log_every_steps=int(config.log_every_steps), lock=lock)


class Hook:
  """Something a mode does around its steps; `step` counts the updates done so far."""

  def before_step(self, step: int) -> None:
    """Before the update that makes `step + 1` (profiling starts here)."""

  def after_step(self, step: int, state: Any, metrics: Any) -> None:
    """After update number `step`, before its checkpoint (log, evaluate, draw)."""


def stop_if_diverged(run: Run, step: int, state: Any, data_iter: Any | None,
                     scalars: Mapping[str, float], max_consecutive: int) -> None:
  """The divergence stop of every mode whose step skips non-finite updates and reports
  `consecutive_skipped` and `skipped_steps`: at `max_consecutive` skipped updates in a row, saves
  `state` (the last good one: skipped updates leave it untouched) and raises TrainingDiverged."""
  if scalars["consecutive_skipped"] < max_consecutive:
    return
  run.ckpt.save(step, state, data_iter, run.config_dict, force=True)
  run.ckpt.wait()
  raise TrainingDiverged(
      f"{int(scalars['consecutive_skipped'])} consecutive updates had a non-finite loss or "
      f"gradient (step {step}, {int(scalars['skipped_steps'])} skipped in all). The last "
      f"good state is saved in {run.workdir}/checkpoints; lower optim.base_lr, set "
      f"optim.grad_clip, or use float32 before resuming.")


class Every(Hook):
  """Calls `fn(step, state, metrics)` every `every` steps (0: never) and at the last step
  (`at_end`; by default only when `every` is on)."""

  def __init__(self, every: int, total: int, fn: Callable[[int, Any, Any], None],
               at_end: bool | None = None):
    self.every, self.total, self.fn = every, total, fn
    self.at_end = bool(every) if at_end is None else at_end

  def due(self, step: int) -> bool:
    return (bool(self.every) and step % self.every == 0) or (self.at_end and step == self.total)

  def after_step(self, step: int, state: Any, metrics: Any) -> None:
    if self.due(step):
      self.fn(step, state, metrics)


class Profile(Hook):
  """A TensorBoard profile of `num_steps` steps from `start_step`, on process 0."""

  def __init__(self, directory: epath.Path, start_step: int, num_steps: int):
    self.directory = str(directory)
    self.steps = range(start_step, start_step + num_steps) if num_steps else range(0)
    self.lead = jax.process_index() == 0

  def before_step(self, step: int) -> None:
    if self.lead and self.steps and step == self.steps.start:
      jax.profiler.start_trace(self.directory)

  def after_step(self, step: int, state: Any, metrics: Any) -> None:
    if self.lead and self.steps and step == self.steps.stop:
      jax.profiler.stop_trace()
      logging.info("profile of steps %s written to %s", self.steps, self.directory)


@dataclasses.dataclass(frozen=True)
class LoopEnd:
  state: Any
  step: int
  stopped: bool   # stopped on request (signal, preemption, `stop_after_steps`) before `total`


def train_loop(run: Run, state: Any, step: int, total: int,
               step_fn: Callable[[Any, Any], tuple[Any, Any]], batches: Iterator[Any],
               hooks: Sequence[Hook] = (), data_iter: Any | None = None, *,
               throughput: logging_utils.Throughput | None = None,
               stop_after_steps: int | None = None, name: str = "train") -> LoopEnd:
  """Runs `state, metrics = step_fn(state, next(batches))` from `step` to `total`.

  After each update the hooks run in order, then the periodic checkpoint (state + `data_iter`
  position + config); a stop request (SIGTERM, a preemption notice, or `stop_after_steps`, as
  tests preempt) ends the loop after a checkpoint of that step, on every process at the same
  step (agreed every `config.log_every_steps`, the steps that already synchronise the hosts). The
  final state is always saved; the caller closes the run.
  """
  try:
    return _loop(run, state, step, total, step_fn, batches, hooks, data_iter,
                 throughput=throughput, stop_after_steps=stop_after_steps, name=name)
  except KeyboardInterrupt:  # a second Ctrl-C: stop now, without waiting for anything
    run.release()
    raise
  except BaseException:
    # Whatever stopped the run, checkpoint writes already started finish (a torn newest
    # checkpoint would cost a fallback) and the workdir is free for the next run.
    try:
      run.ckpt.wait()
    finally:
      run.release()
    raise


def _loop(run: Run, state: Any, step: int, total: int,
          step_fn: Callable[[Any, Any], tuple[Any, Any]], batches: Iterator[Any],
          hooks: Sequence[Hook], data_iter: Any | None, *,
          throughput: logging_utils.Throughput | None, stop_after_steps: int | None,
          name: str) -> LoopEnd:
  sync_every = max(run.log_every_steps, 1)
  stopped = False
  while step < total:
    t0 = time.perf_counter()
    try:
      batch = next(batches)
    except TooManyBadInputs:
      # The input gave up on the data: keep the last good state before the error goes up.
      run.ckpt.save(step, state, data_iter, run.config_dict, force=True)
      run.ckpt.wait()
      logging.error("stopping at step %d: too many bad inputs; the last good state is saved in "
                    "%s", step, run.ckpt.directory)
      raise
    if throughput is not None:
      throughput.add_data_wait(time.perf_counter() - t0)
    for hook in hooks:
      hook.before_step(step)
    with jax.profiler.StepTraceAnnotation(name, step_num=step):
      state, metrics = step_fn(state, batch)
    if throughput is not None:
      throughput.step_done()
    step += 1
    for hook in hooks:
      hook.after_step(step, state, metrics)
    run.ckpt.save(step, state, data_iter, run.config_dict)
    if step < total and (run.ckpt.should_stop(step, sync_every=sync_every)
                         or step == stop_after_steps):
      stopped = True
      logging.info("stopped on request at step %d of %d; the same command resumes", step, total)
      break
  run.ckpt.save(step, state, data_iter, run.config_dict, force=True)
  return LoopEnd(state=state, step=step, stopped=stopped)

"""Orbax checkpoints behind one module (docs/decisions.md, D11): train state + data iterator state + config.

- Asynchronous saves every N steps, keeping the last K.
- Resume from the newest readable checkpoint; an unreadable newest one falls back to the
  previous with a warning (a crash mid-write never loses the run).
- Restore onto any mesh: the restore target is the abstract state carrying *current* shardings.
- Preemption: `should_stop(step)` turns SIGTERM (or Orbax's preemption notice on multi-host)
  into a save-and-exit at the same step on every process.
- Paths may be local or `gs://` (etils.epath underneath).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from vicmae_jax import paths

STATE, DATA, CONFIG = "state", "data", "config"


class _QuietOrbax(logging.Filter):
  """Drops Orbax's per-save INFO lines (dozens per checkpoint); warnings and errors pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_logs() -> None:
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_QuietOrbax())
  logging.getLogger("absl").addFilter(_QuietOrbax())


class Checkpointer:
  """Wraps an Orbax CheckpointManager with the project's policies."""

  def __init__(self, directory: str, *, every_steps: int, keep: int = 3, async_save: bool = True):
    self.directory = epath.Path(paths.resolve(directory))  # Orbax refuses relative paths
    self.every_steps = every_steps
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=every_steps, enable_async_checkpointing=async_save,
        create=True, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=(STATE, DATA, CONFIG))
    self._sigterm = threading.Event()

  # --- saving -----------------------------------------------------------------------------------
  def save(self, step: int, state: Any, data_iter: Any | None, config: dict | None,
           force: bool = False) -> bool:
    """Saves if `step` is on the interval (or `force`); asynchronous unless configured not to."""
    if not force and step % self.every_steps:
      return False
    if self._manager.latest_step() == step:
      return False  # already saved (e.g. the interval save of the final step)
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iter is not None:
      items[DATA] = grain.checkpoint.CheckpointSave(data_iter)
    if config is not None:
      items[CONFIG] = ocp.args.JsonSave(config)
    # Our own interval test above (Orbax would also save the very first step of a run).
    saved = self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    if saved:
      logging.info("checkpoint: saving step %d to %s", step, self.directory)
    return saved

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk; surfaces their errors."""
    self._manager.wait_until_finished()
    self._manager.check_for_errors()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  # --- restoring --------------------------------------------------------------------------------
  def all_steps(self) -> list[int]:
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def restore_latest(self, abstract_state: Any, data_iter: Any | None = None
                     ) -> tuple[Any, int] | None:
    """Restores the newest readable checkpoint into `abstract_state`'s structure and shardings.

    Returns (state, step), or None when there is no checkpoint. Falls back to older steps when
    the newest cannot be read, and says so.
    """
    steps = self.all_steps()
    failed = []
    for step in reversed(steps):
      try:
        restored = self._restore(step, abstract_state, data_iter)
      except Exception as e:  # a torn or corrupted checkpoint: try the one before it
        if _refused(e):  # readable, but not usable as asked: older steps would not be either
          raise
        _quiet_abandoned_reads()  # also when no step fits (another model): the exit stays quiet
        logging.warning("checkpoint: step %d in %s is unreadable (%s: %s); trying the previous one",
                        step, self.directory, type(e).__name__, _short(e))
        failed.append(step)
        continue
      # An older step fits this state, so the newer ones were torn, not of another model: out of
      # the rotation with them. (When none fits, nothing moves: the model may have changed.)
      for bad in failed:
        self._set_aside(bad)
      return restored, step
    if steps:
      raise RuntimeError(f"No readable checkpoint among steps {steps} in {self.directory}.")
    return None

  def _set_aside(self, step: int) -> None:
    """Moves a torn step out of the rotation (never deleted: it may hold what a user wants to
    inspect), so that the run saves that step again when it gets there."""
    if jax.process_index() == 0:
      aside = self.directory.parent / f"{self.directory.name}_torn"
      aside.mkdir(parents=True, exist_ok=True)
      target, n = aside / str(step), 1
      while target.exists():
        target, n = aside / f"{step}.{n}", n + 1
      try:
        (self.directory / str(step)).rename(target)
        logging.warning("checkpoint: moved the unreadable step %d to %s; it will be saved again",
                        step, target)
      except OSError as e:
        logging.warning("checkpoint: could not move the unreadable step %d aside (%s)", step, e)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint_set_aside_{step}")
    self._manager.reload()

  def _restore(self, step: int, abstract_state: Any, data_iter: Any | None) -> Any:
    items = {STATE: ocp.args.StandardRestore(abstract_state)}
    # Orbax keeps no metadata for the Grain item, so look for its folder.
    restore_data = data_iter is not None and (self.directory / str(step) / DATA).exists()
    if restore_data:
      items[DATA] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    logging.info("checkpoint: restored step %d from %s%s", step, self.directory,
                 "" if restore_data else " (without data iterator state)")
    return restored[STATE]

  def restore_config(self, step: int) -> dict | None:
    restored = self._manager.restore(step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))
    return restored[CONFIG]

  # --- preemption -------------------------------------------------------------------------------
  def install_sigterm_handler(self) -> None:
    """SIGTERM (spot/preemptible VMs, SLURM time limits) and Ctrl-C (SIGINT) request a save and
    a clean exit; a second Ctrl-C stops at once (KeyboardInterrupt, no save)."""
    def handler(signum, frame):
      if signum == signal.SIGINT and self._sigterm.is_set():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt
      name = signal.Signals(signum).name
      logging.warning("%s received: will save a checkpoint and stop after this step%s.", name,
                      " (Ctrl-C again stops at once, without saving)" if signum == signal.SIGINT
                      else "")
      self._sigterm.set()
    if threading.current_thread() is threading.main_thread():
      signal.signal(signal.SIGTERM, handler)
      signal.signal(signal.SIGINT, handler)

  def should_stop(self, step: int, sync_every: int = 10) -> bool:
    """True on every process once any process was asked to stop (SIGTERM or preemption).

    Orbax's preemption notice is already agreed across processes (JAX's preemption sync
    manager). A local SIGTERM is shared with an all-gather, but only every `sync_every` steps:
    a host collective on every step would stall the asynchronous dispatch of the train step.
    """
    try:
      if self._manager.reached_preemption(step):
        return True
    except Exception:  # no preemption service (plain single-process runs)
      pass
    if jax.process_count() == 1:
      return self._sigterm.is_set()
    if step % sync_every:
      return False
    # Every process must save the same step, so agree on the decision.
    return bool(multihost_utils.process_allgather(self._sigterm.is_set()).any())


def _short(error: BaseException, limit: int = 400) -> str:
  """An error's message cut for the log (tensorstore's carry kilobytes of JSON specs)."""
  text = str(error)
  return text if len(text) <= limit else text[:limit] + " ..."


_QUIET = False


# Orbax's per-array read coroutines: abandoned with a failed restore, they report when collected.
_ABANDONED_READS = ("_read_array_index_and_device_put",)


def _drop_closed_loop_reports(previous):
  """An unraisable hook that drops what an abandoned restore leaves behind ('Event loop is
  closed', Orbax's read coroutines closed unfinished) and passes the rest to `previous`."""
  def hook(unraisable):
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
      return
    if getattr(getattr(unraisable, "object", None), "__name__", "") in _ABANDONED_READS:
      return
    previous(unraisable)
  return hook


class _DropUnretrievedFutures(logging.Filter):
  """asyncio's 'Future exception was never retrieved' for the abandoned reads' failures."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Future exception was never retrieved")


def _quiet_abandoned_reads() -> None:
  """After a failed restore, tensorstore's remaining reads report into the closed asyncio loop
  of the abandoned attempt: hundreds of 'Event loop is closed' tracebacks (one per pending read,
  through `sys.unraisablehook`) and asyncio's unretrieved-future errors, each kilobytes long.
  The warning above them says what happened; drop exactly those, once installed for the process."""
  global _QUIET
  if _QUIET:
    return
  sys.unraisablehook = _drop_closed_loop_reports(sys.unraisablehook)
  logging.getLogger("asyncio").addFilter(_DropUnretrievedFutures())
  _QUIET = True


def _refused(error: BaseException) -> bool:
  """Whether `error` (or what it wraps) says the checkpoint is sound but cannot be used as
  asked (e.g. `data.pipeline.DataLayoutChanged`), rather than torn."""
  seen = 0
  while error is not None and seen < 10:
    if getattr(error, "not_a_torn_checkpoint", False):
      return True
    error, seen = error.__cause__ or error.__context__, seen + 1
  return False


def plain_tree(tree: Any) -> Any:
  """A restored nnx.State as a pure dict: {'value': array} unwrapped, list indices as ints."""
  if isinstance(tree, dict) and set(tree) == {"value"} and not isinstance(tree["value"], dict):
    return tree["value"]
  if isinstance(tree, dict):
    return {(int(k) if isinstance(k, str) and k.isdigit() else k): plain_tree(v)
            for k, v in tree.items()}
  return tree


def _read_subtree(step_dir: epath.Path, keys: tuple[str, ...]) -> dict:
  """Only `state[keys[0]][keys[1]]...` of one checkpoint step, onto one local device."""
  path = os.fspath(step_dir / STATE)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(path)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    for key in keys:
      tree = tree[key]
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    for key in reversed(keys):
      target = {key: target}
    restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))
  for key in keys:
    restored = restored[key]
  return plain_tree(jax.tree.map(np.asarray, restored))


def read_state_subtree(workdir: str, keys: tuple[str, ...], step: int | None = None
                       ) -> tuple[dict, dict, int]:
  """(one subtree of a run's saved TrainState as a pure numpy dict, the run's config, step).

  Reads the newest readable checkpoint (or `step`) directly: no optimizer state, no mesh, no
  config file needed, e.g. `keys=("params", "encoder")` for the online encoder or
  `("target", "target", "encoder")` for its EMA target. Falls back past unreadable steps.
  """
  directory = epath.Path(paths.resolve(workdir)) / "checkpoints"
  steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) \
      if directory.exists() else []
  if step is not None:
    steps = [s for s in steps if s == step]
  if not steps:
    raise FileNotFoundError(f"No checkpoint{'' if step is None else f' at step {step}'} in {directory}.")
  last_error = None
  for s in reversed(steps):
    step_dir = directory / str(s)
    try:
      config = json.loads((step_dir / CONFIG / "metadata").read_text())
      return _read_subtree(step_dir, keys), config, s
    except Exception as e:  # a torn checkpoint: fall back to the previous one, and say so
      logging.warning("checkpoint: step %d in %s is unreadable (%s); trying the previous one",
                      s, directory, e)
      last_error = e
  raise RuntimeError(f"No readable checkpoint in {directory}.") from last_error

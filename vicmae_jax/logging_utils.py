"""Metric writers, throughput/MFU accounting and the progress line (only process 0 writes)."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from vicmae_jax import fs, hardware

# The product a matmul peak is measured with: low precision accumulates into float32, as the
# model's products do (`models.linear.matmul`); on CPU that is what selects the bf16 GEMM kernels.
peak_matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))


def measure_matmul_peak(dtype="float32", sizes: tuple[int, ...] = (2048,), reps: int = 5) -> float:
  """FLOP/s of `peak_matmul` in `dtype` on random square operands on the first device (the CPU's
  roofline): the fastest of `reps` calls after a warm-up, best over `sizes`."""
  best = 0.0
  for n in sizes:
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    jax.block_until_ready(peak_matmul(a, b))
    secs = float("inf")
    for _ in range(reps):
      t0 = time.perf_counter()
      jax.block_until_ready(peak_matmul(a, b))
      secs = min(secs, time.perf_counter() - t0)
    best = max(best, 2 * n**3 / secs)
  return best


def device_peak_flops(target, dtype="float32") -> tuple[float, str]:
  """(peak FLOP/s per device, how it was obtained) for the devices of `target` (a mesh or a
  device list): the datasheet bf16 figure of a known accelerator; on CPU a matmul in the compute
  `dtype` measured now (the program runs on this process's CPUs)."""
  device = hardware.devices_of(target)[0]
  chip = hardware.chip_of(device)
  if chip is not None:
    return chip.peak_bf16_flops, f"{chip.name} bf16 datasheet"
  if hardware.platform_of([device]) == "cpu":
    return measure_matmul_peak(dtype=dtype), f"cpu {jnp.dtype(dtype).name} matmul measured at start"
  return float("nan"), f"unknown peak for {getattr(device, 'device_kind', device)}"


def compiled_flops(compiled) -> float | None:
  """FLOPs per device of one call of a compiled executable, from XLA's cost analysis."""
  try:
    cost = compiled.cost_analysis()
  except Exception:
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def _stringify_keys(tree):
  """clu's overview wants nested dicts with string keys (nnx.List indices are ints)."""
  if isinstance(tree, dict):
    return {str(k): _stringify_keys(v) for k, v in tree.items()}
  return tree


class JsonlWriter:
  """Appends {"step": s, name: value, ...} lines to workdir/metrics.jsonl (easy to grep/plot)."""

  def __init__(self, workdir: str):
    self.path = epath.Path(workdir) / "metrics.jsonl"
    # Objects in a bucket cannot be appended to: there the file is rewritten whole from a copy
    # held here (a few hundred KB for a long run).
    self._remote_text: str | None = None

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    line = json.dumps(row) + "\n"
    if not fs.is_url(os.fspath(self.path)):
      with self.path.open("a") as f:
        f.write(line)
      return
    if self._remote_text is None:
      self._remote_text = self.path.read_text() if self.path.exists() else ""
    self._remote_text += line
    self.path.write_text(self._remote_text)

  def drop_after(self, step: int) -> int:
    """Removes the rows of steps after `step` (rewritten whole, then renamed over the file, so
    a crash leaves the old or the new file); returns how many went."""
    if not self.path.exists():
      return 0
    lines = self.path.read_text().splitlines(keepends=True)
    keep = [line for line in lines if _row_step(line) is not None and _row_step(line) <= step]
    if len(keep) == len(lines):
      return 0
    tmp = self.path.parent / (self.path.name + ".tmp")
    tmp.write_text("".join(keep))
    fs.replace(os.fspath(tmp), os.fspath(self.path))
    self._remote_text = None  # re-read on the next write
    return len(lines) - len(keep)


def _row_step(line: str) -> int | None:
  """The step of a metrics.jsonl row; None for a blank or torn line (a kill mid-write)."""
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


class MirroredWriter:
  """A clu writer whose TensorBoard files are written to a local folder and copied to the
  workdir in object storage at most every `every_s` seconds, on flush and on close.

  TensorFlow's summary writer would write gs:// itself, but through TensorFlow's GCS client, not
  the one every other file of the run uses (vicmae_jax/fs.py); an event file is re-uploaded whole
  on each flush either way, as objects cannot be appended to.
  """

  def __init__(self, inner: Any, local_dir: str, workdir: str, every_s: float = 60.0):
    self._inner, self._local, self._workdir, self._every = inner, local_dir, workdir, every_s
    self._copied: dict[str, int] = {}
    self._last = time.monotonic()

  def __getattr__(self, name: str) -> Any:
    method = getattr(self._inner, name)
    if not name.startswith("write_"):
      return method

    def write(*args, **kwargs):
      out = method(*args, **kwargs)
      if time.monotonic() - self._last > self._every:
        self.flush()
      return out
    return write

  def flush(self) -> None:
    self._inner.flush()
    self._sync()

  def close(self) -> None:
    self._inner.close()
    self._sync()

  def _sync(self) -> None:
    """Copies the event files that grew since the last copy."""
    self._last = time.monotonic()
    for folder, _, names in os.walk(self._local):
      for name in names:
        src = os.path.join(folder, name)
        n = os.path.getsize(src)
        if self._copied.get(src) != n:
          rel = os.path.relpath(src, self._local).replace(os.sep, "/")
          fs.copy_file(src, fs.join(self._workdir, rel))
          self._copied[src] = n


def create_writers(workdir: str):
  """clu writer (TensorBoard + console) and the JSONL writer; process > 0 only logs."""
  from clu import metric_writers  # imports TensorFlow: keep it out of model/data code
  lead = jax.process_index() == 0
  logdir = tempfile.mkdtemp(prefix="vicmae_tb_") if lead and fs.is_url(workdir) else workdir
  writer = metric_writers.create_default_writer(logdir, just_logging=not lead, asynchronous=True)
  if logdir != workdir:
    writer = MirroredWriter(writer, logdir, workdir)
  return writer, (JsonlWriter(workdir) if lead else None)


def log_parameter_overview(params, name: str = "online params",
                           workdir: str | os.PathLike | None = None) -> None:
  """One line with the parameter count to the log; the per-array table (~100 lines for a ViT) to
  WORKDIR/parameters.txt when a workdir is given, else to the log too."""
  from clu import parameter_overview
  from flax import nnx
  if isinstance(params, nnx.State):
    params = nnx.to_pure_dict(params)
  tree = _stringify_keys(params)
  try:
    text = parameter_overview.get_parameter_overview(tree, include_stats=False)
  except Exception as e:  # overview is a convenience: never fail a run on it
    text = f"(overview unavailable: {e})"
  leaves = jax.tree.leaves(params)
  count = sum(int(np.prod(x.shape)) for x in leaves)
  if workdir is None:
    logging.info("%s: %.2fM parameters\n%s", name, count / 1e6, text)
    return
  path = epath.Path(workdir) / "parameters.txt"
  path.write_text(f"{name}: {count:,} parameters in {len(leaves)} arrays\n{text}\n")
  logging.info("%s: %.2fM parameters in %d arrays (table: %s)", name, count / 1e6, len(leaves),
               path)


# The utilisation metric's name: MFU against a datasheet peak, or against a matmul rate measured
# at start (CPU), which moves with the machine's load and is not comparable across runs.
MFU, MEASURED_UTIL = "mfu", "flops_util_vs_measured_peak"


class Throughput:
  """Accumulates step and data-wait time between log steps; derives rates, MFU and ETA.

  `peak_nominal`: `peak_flops` is the device's datasheet figure (logged as `mfu`); otherwise a
  figure measured at start, and the ratio is logged as `flops_util_vs_measured_peak`."""

  def __init__(self, total_steps: int, pairs_per_step: int, flops_per_step: float | None,
               peak_flops: float, num_devices: int, peak_nominal: bool = True):
    self.total_steps = total_steps
    self.pairs = pairs_per_step
    self.flops = flops_per_step
    self.peak = peak_flops
    self.devices = num_devices
    self.util_key = MFU if peak_nominal else MEASURED_UTIL
    self.reset()
    self.started = time.perf_counter()

  def reset(self) -> None:
    self._t0 = time.perf_counter()
    self._data_wait = 0.0
    self._steps = 0

  def add_data_wait(self, seconds: float) -> None:
    self._data_wait += seconds

  def step_done(self) -> None:
    self._steps += 1

  def metrics(self, step: int) -> dict[str, float]:
    elapsed = max(time.perf_counter() - self._t0, 1e-9)
    steps_per_s = self._steps / elapsed
    out = {"steps_per_s": steps_per_s, "pairs_per_s": steps_per_s * self.pairs,
           "images_per_s": 2 * steps_per_s * self.pairs,
           "data_wait_fraction": self._data_wait / elapsed,
           "data_wait_s_per_step": self._data_wait / max(self._steps, 1)}
    if self.flops and np.isfinite(self.peak):
      # XLA's cost analysis gives the per-device program's FLOPs.
      out[self.util_key] = self.flops * steps_per_s / self.peak
    out["eta_hours"] = (self.total_steps - step) / max(steps_per_s, 1e-9) / 3600
    self.reset()
    return out


def aggregate_over_processes(scalars: Mapping[str, float]) -> dict[str, float]:
  """Global data metrics from per-process ones: counts summed, fractions and ratios averaged.

  A collective: every process must call it at the same step (the trainer's log steps).
  """
  if jax.process_count() == 1 or not scalars:
    return dict(scalars)
  from jax.experimental import multihost_utils
  keys = sorted(scalars)
  gathered = np.asarray(multihost_utils.process_allgather(
      np.array([scalars[k] for k in keys], np.float64)))  # [processes, keys]
  averaged = ("fraction", "/mix_")  # equal per-process batches: the mean is the global value
  return {k: float(gathered[:, i].mean() if any(a in k for a in averaged) else gathered[:, i].sum())
          for i, k in enumerate(keys)}


def progress_line(step: int, total: int, scalars: Mapping[str, float]) -> str:
  eta = scalars.get("eta_hours", float("nan"))
  util = (f"mfu {100 * scalars[MFU]:.1f}%" if MFU in scalars else
          f"util {100 * scalars.get(MEASURED_UTIL, float('nan')):.1f}% of measured peak")
  return (f"step {step}/{total} ({100 * step / max(total, 1):.1f}%) loss {scalars['loss']:.4f} "
          f"recon {scalars['recon_loss']:.4f} contrast {scalars['contrastive_loss']:.4f} "
          f"lr {scalars['learning_rate']:.2e} | {scalars.get('images_per_s', 0):.1f} img/s "
          f"{util} data {100 * scalars.get('data_wait_fraction', 0):.0f}% | "
          f"ETA {eta * 60:.1f} min")


def duration(seconds: float) -> str:
  """`4m05s`, `1h02m03s`: elapsed times and ETAs of the progress lines of tools and sweeps."""
  s = int(round(seconds))
  return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"

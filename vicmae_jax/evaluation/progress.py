"""Progress of the evaluation modes.

Passes (validation, multi-view test, feature extraction, kNN) log

    eval val: 12,288/50,000 examples (24.6%) 1,024.0 examples/s, ETA 0.6 min

at most every `EVERY_S` seconds on process 0 (never one per batch), and one closing line with the
pass's time. The ETA is in minutes, as in the training progress line. Training loops (fine-tuning,
the augmented probe) use pretraining's `logging_utils.Throughput` through `make_throughput`.
"""
from __future__ import annotations

import logging
import time

import jax

from vicmae_jax import hardware, logging_utils

EVERY_S = 30.0  # seconds between two lines of one pass


def progress_text(name: str, done: int, total: int, elapsed: float, unit: str) -> str:
  """The line of a pass `done` of `total` units into it after `elapsed` seconds. Pure."""
  rate = done / max(elapsed, 1e-9)
  eta = (total - done) / rate / 60 if rate > 0 else float("nan")
  return (f"{name}: {done:,}/{total:,} {unit} ({100 * done / max(total, 1):.1f}%) "
          f"{rate:,.1f} {unit}/s, ETA {eta:.1f} min")


class PassProgress:
  """Counts the units of one pass and logs `progress_text` when `every_s` seconds have passed."""

  def __init__(self, name: str, total: int, unit: str = "examples", every_s: float | None = None):
    self.name, self.total, self.unit = name, total, unit
    self.every_s = EVERY_S if every_s is None else every_s
    self.lead = jax.process_index() == 0
    self.done = 0
    self.start = self.last = time.perf_counter()

  def update(self, n: int) -> None:
    self.done += n
    now = time.perf_counter()
    if self.lead and now - self.last >= self.every_s and self.done < self.total:
      self.last = now
      logging.info(progress_text(self.name, self.done, self.total, now - self.start, self.unit))

  def finish(self, note: str = "") -> None:
    """The closing line (`note`, e.g. how many inputs were unreadable, appended)."""
    if self.lead:
      elapsed = time.perf_counter() - self.start
      logging.info("%s: %s %s in %.1f s (%.1f %s/s)%s", self.name, f"{self.done:,}", self.unit,
                   elapsed, self.done / max(elapsed, 1e-9), self.unit,
                   f"; {note}" if note else "")


def make_throughput(total: int, batch_size: int, model_flops: float | None, mesh
                    ) -> logging_utils.Throughput:
  """Pretraining's throughput accounting (what `run_lib.train_loop` times: steps, data wait) for
  a run of `total` steps; MFU only on a known accelerator (on CPU the peak would cost a
  measurement at every start)."""
  chip = hardware.chip_of(hardware.devices_of(mesh)[0])
  flops = model_flops / jax.device_count() if chip is not None and model_flops else None
  peak = chip.peak_bf16_flops if chip is not None else float("nan")
  return logging_utils.Throughput(total, batch_size, flops, peak, jax.device_count())


def throughput_metrics(throughput: logging_utils.Throughput, step: int) -> dict[str, float]:
  """`throughput.metrics(step)` (steps/s, data wait, ETA, MFU) with pretraining's frame pairs
  per second named as what a row is here (`examples_per_s`: images, features or clips)."""
  out = throughput.metrics(step)
  out["examples_per_s"] = out.pop("pairs_per_s")
  out.pop("images_per_s")  # two views per pair in pretraining; meaningless here
  return out

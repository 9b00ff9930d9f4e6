"""Timing helpers shared by the benchmarks (the matmul peak and XLA FLOPs come from
`vicmae_jax.logging_utils`, the trainer's own accounting)."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import jax

# Square sizes of the in-run matmul peak (`logging_utils.measure_matmul_peak`): two, because the
# fastest size differs between CPUs.
BENCH_PEAK_SIZES = (2048, 3072)


def median_seconds(fn: Callable[[], object], steps: int, warmup: int = 2) -> float:
  """Median wall time of `fn()` (which must return jax arrays) after `warmup` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)

"""Timing helpers shared by the benchmarks: in-run matmul peak and median step times."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp

from vicmae_jax.logging_utils import peak_matmul


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


def matmul_peak_flops(sizes=(2048, 3072), steps: int = 5, dtype=jnp.float32) -> float:
  """Best median FLOP/s of XLA square matmuls on random data, measured now, on this machine."""
  best = 0.0
  for n in sizes:
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    secs = median_seconds(lambda: peak_matmul(a, b), steps)
    best = max(best, 2 * n**3 / secs)
  return best


def xla_flops(compiled) -> float | None:
  """FLOPs of a compiled executable from XLA's cost analysis (None where unavailable)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # some backends do not implement it
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None

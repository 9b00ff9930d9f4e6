"""Classification metrics with a validity mask, and exact-once evaluation over a split.

Every example of the split is evaluated exactly once: the last batch is padded to the static
batch size, padded rows carry mask 0, and the number of counted examples is asserted to equal the
split size (the uncertainty-baselines / flax#262 failure mode of silently dropped examples).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def topk_correct(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                 ks: tuple[int, ...] = (1, 5)) -> dict[str, jax.Array]:
  """Sums of correct predictions (top-k) over valid rows, plus the valid count. Pure."""
  mask = mask.astype(jnp.float32)
  order = jnp.argsort(-logits, axis=-1)
  out = {"count": jnp.sum(mask)}
  for k in ks:
    k_eff = min(k, logits.shape[-1])
    hit = jnp.any(order[:, :k_eff] == labels[:, None], axis=-1).astype(jnp.float32)
    out[f"top{k}"] = jnp.sum(hit * mask)
  return out


def pad_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Pads every array of a (short) batch to `size` rows with zeros and adds `mask`."""
  n = len(next(iter(batch.values())))
  if n > size:
    raise ValueError(f"batch of {n} exceeds the static size {size}")
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    pad = np.zeros((size - n,) + v.shape[1:], v.dtype)
    out[k] = np.concatenate([v, pad], axis=0)
  mask = np.zeros((size,), np.float32)
  mask[:n] = 1.0
  out["mask"] = mask
  return out


class MetricAccumulator:
  """Sums per-batch metric dicts on the host; `result()` checks the exact-once count."""

  def __init__(self, expected: int | None = None):
    self.expected = expected
    self.sums: dict[str, float] = {}

  def add(self, metrics: dict) -> None:
    for k, v in jax.device_get(metrics).items():
      self.sums[k] = self.sums.get(k, 0.0) + float(np.sum(v))

  def result(self) -> dict[str, float]:
    count = self.sums.get("count", 0.0)
    if self.expected is not None and int(round(count)) != self.expected:
      raise AssertionError(f"evaluated {count} examples, the split has {self.expected}")
    out = {k: 100.0 * v / max(count, 1.0) for k, v in self.sums.items() if k != "count"}
    out["num_examples"] = count
    return out

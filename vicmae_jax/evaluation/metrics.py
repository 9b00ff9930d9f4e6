"""Classification metrics with a validity mask, exact-once evaluation over a split, and per-video
aggregation of multi-view test logits.

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


def aggregate_views(logits: np.ndarray, video_ids: np.ndarray, labels: dict[int, int] | np.ndarray,
                    *, expected_views: int | None = None) -> dict[str, float]:
  """Per-video accuracy from per-view logits: softmax, averaged over each video's views.

  Args:
    logits: [V, C] one row per evaluated view (padding already removed).
    video_ids: [V] which video each view belongs to.
    labels: video id -> label (dict or array indexed by id).
    expected_views: views per video (e.g. 21 for 3 x 7); videos with fewer are counted in
      `videos_missing_views` (never filled in with other videos).
  Returns per-video top-1/top-5 (%), per-view (per-clip) top-1 (%), and counts.
  """
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  ids = np.asarray(video_ids)
  uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
  summed = np.zeros((len(uniq), probs.shape[-1]))
  np.add.at(summed, inverse, probs)
  mean = summed / counts[:, None]
  y = np.array([labels[int(v)] for v in uniq])
  order = np.argsort(-mean, -1)
  k5 = min(5, order.shape[-1])
  view_labels = y[inverse]
  out = {
      "video_top1": 100.0 * float(np.mean(order[:, 0] == y)),
      "video_top5": 100.0 * float(np.mean(np.any(order[:, :k5] == y[:, None], -1))),
      "clip_top1": 100.0 * float(np.mean(np.argmax(logits, -1) == view_labels)),
      "num_videos": float(len(uniq)),
      "num_views": float(len(ids)),
  }
  if expected_views is not None:
    out["videos_missing_views"] = float(np.sum(counts < expected_views))
  return out

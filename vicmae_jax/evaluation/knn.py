"""Weighted k-nearest-neighbour classification of frozen features (InstDisc / DINO protocol).

Features are L2-normalised; each test example takes its k most cosine-similar training examples,
and each neighbour votes for its label with weight exp(similarity / temperature).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vicmae_jax.evaluation.progress import PassProgress
from vicmae_jax.losses import l2_normalize


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def knn_votes(train_feats: jax.Array, train_labels: jax.Array, test_feats: jax.Array, *,
              k: int, temperature: float, num_classes: int) -> jax.Array:
  """[M, C] class scores of test examples; features need not be normalised. Pure."""
  sim = l2_normalize(test_feats) @ l2_normalize(train_feats).T            # [M, N]
  top_sim, top_idx = jax.lax.top_k(sim, k)                                 # [M, k]
  weights = jnp.exp(top_sim / temperature)
  onehot = jax.nn.one_hot(train_labels[top_idx], num_classes)              # [M, k, C]
  return jnp.einsum("mk,mkc->mc", weights, onehot)


def knn_classify(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                 test_labels: np.ndarray, *, num_classes: int, k: int = 20,
                 temperature: float = 0.07, chunk: int = 1024, name: str = "knn"
                 ) -> dict[str, float]:
  """Top-1 / top-5 (%) of weighted kNN; the test set is processed in chunks of `chunk`
  (progress lines as `name`)."""
  progress = PassProgress(name, len(test_feats))
  k = min(k, len(train_feats))
  train_feats, train_labels = jnp.asarray(train_feats), jnp.asarray(train_labels)
  top1 = top5 = 0.0
  for start in range(0, len(test_feats), chunk):
    feats = test_feats[start:start + chunk]
    labels = np.asarray(test_labels[start:start + chunk])
    votes = np.asarray(knn_votes(train_feats, train_labels, jnp.asarray(feats), k=k,
                                 temperature=temperature, num_classes=num_classes))
    order = np.argsort(-votes, axis=-1)
    top1 += float(np.sum(order[:, 0] == labels))
    top5 += float(np.sum(np.any(order[:, :min(5, num_classes)] == labels[:, None], axis=-1)))
    progress.update(len(labels))
  progress.finish()
  n = max(len(test_feats), 1)
  return {"knn_top1": 100.0 * top1 / n, "knn_top5": 100.0 * top5 / n,
          "knn_num_examples": float(len(test_feats))}

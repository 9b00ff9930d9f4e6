"""Linear probe, MAE recipe (docs/decisions.md#downstream-recipes): frozen features -> BatchNorm(affine=False, eps 1e-6)
-> Linear, trained with LARS (momentum 0.9, trust 0.001, no wd / no LARS scaling on <= 1-D),
lr = blr * batch / 256, warm-up + cosine.

Two ways to feed the head (docs/evaluation.md): MAE's protocol, a fresh RandomResizedCrop + flip
of every training image in every epoch through the frozen encoder (`ProbeHeads` fed by
`features.augmented_feature_batches`), or the fast probe, features cached once (centre crop) and
the head trained on them (`train_probe`), which turns a 90-epoch probe into seconds.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vicmae_jax import optim

BN_EPS = 1e-6
OPTIMIZERS = ("lars", "sgd")


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  """MAE's linear-probe recipe (LARS, no weight decay, BatchNorm without affine before the head)."""
  epochs: int = 90
  batch_size: int = 16384          # global; the lr scales with it (optim.peak_learning_rate)
  base_lr: float = 0.1             # lr = base_lr x batch_size / 256
  warmup_epochs: int = 10
  weight_decay: float = 0.0
  momentum: float = 0.9            # LARS momentum
  trust_coefficient: float = 0.001  # LARS trust ratio scale
  bn_momentum: float = 0.9    # Flax convention (torch 0.1)
  seed: int = 0
  # "lars": MAE's recipe (ImageNet: thousands of steps at batch 16384). "sgd": the same head and
  # schedule without the trust ratio. LARS moves a head initialised at std 0.01 by ~lr x 0.001 of
  # its norm per step, so on a split of a few thousand images (a few hundred steps) it stays at
  # chance; the in-loop probe of small splits uses "sgd".
  optimizer: str = "lars"

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"probe optimizer must be {' or '.join(OPTIMIZERS)}, "
                       f"got {self.optimizer!r}")


def init_head(key: jax.Array, dim: int, num_classes: int) -> tuple[dict, dict]:
  """(params, batch statistics) of BN(no affine) + Linear; head trunc-normal std 0.01 as MAE."""
  kernel = 0.01 * jax.random.truncated_normal(key, -2.0, 2.0, (dim, num_classes), jnp.float32)
  params = {"kernel": kernel, "bias": jnp.zeros((num_classes,), jnp.float32)}
  stats = {"mean": jnp.zeros((dim,), jnp.float32), "var": jnp.ones((dim,), jnp.float32)}
  return params, stats


def head_apply(params: dict, stats: dict, x: jax.Array, *, train: bool,
               momentum: float = 0.9) -> tuple[jax.Array, dict]:
  """Logits and updated running statistics (unchanged when not training). Pure."""
  x = x.astype(jnp.float32)
  if train:
    mean, var = jnp.mean(x, axis=0), jnp.var(x, axis=0)
    n = x.shape[0]
    new_stats = {"mean": momentum * stats["mean"] + (1 - momentum) * mean,
                 "var": momentum * stats["var"] + (1 - momentum) * var * n / max(n - 1, 1)}
  else:
    mean, var, new_stats = stats["mean"], stats["var"], stats
  y = (x - mean) * jax.lax.rsqrt(var + BN_EPS)
  return y @ params["kernel"] + params["bias"], new_stats


def make_lars(cfg: ProbeConfig, steps_per_epoch: int) -> tuple[optax.GradientTransformation,
                                                                 optax.Schedule]:
  steps = optim.schedule(steps_per_epoch, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs)
  sched = optim.learning_rate_schedule(optim.peak_learning_rate(cfg.base_lr, cfg.batch_size),
                                       steps.total_steps, steps.warmup_steps)
  mask = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)  # noqa: E731 - MAE's LARS exclusions
  no_trust = lambda p: jax.tree.map(lambda x: False, p)  # noqa: E731
  tx = optax.lars(sched, weight_decay=cfg.weight_decay, weight_decay_mask=mask,
                  trust_coefficient=cfg.trust_coefficient,
                  trust_ratio_mask=mask if cfg.optimizer == "lars" else no_trust,
                  momentum=cfg.momentum)
  return tx, sched


def _loss(params, stats, x, y, momentum):
  logits, new_stats = head_apply(params, stats, x, train=True, momentum=momentum)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return loss, new_stats


@functools.partial(jax.jit, static_argnames=("tx", "momentum"))
def _step(params, stats, opt_state, x, y, *, tx, momentum):
  (loss, stats), grads = jax.value_and_grad(_loss, has_aux=True)(params, stats, x, y, momentum)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), stats, opt_state, loss


class ProbeHeads:
  """One BN + Linear head per readout ('cls', 'mean', ...), trained side by side with LARS.

  `cfg.batch_size` must be the batch actually fed (it sets lr = blr * batch / 256); the LARS
  schedule spans `cfg.epochs * steps_per_epoch` updates. `state` is a plain pytree
  {'step', 'heads': {readout: {'params', 'stats', 'opt_state'}}} (checkpointable).
  """

  def __init__(self, dims: dict[str, int], num_classes: int, cfg: ProbeConfig,
               steps_per_epoch: int):
    self.cfg, self.steps_per_epoch = cfg, steps_per_epoch
    self.tx, self.schedule = make_lars(cfg, steps_per_epoch)
    heads = {}
    for name, dim in dims.items():
      params, stats = init_head(jax.random.PRNGKey(cfg.seed), dim, num_classes)
      heads[name] = {"params": params, "stats": stats, "opt_state": self.tx.init(params)}
    self.state = {"step": jnp.zeros((), jnp.int32), "heads": heads}

  @property
  def total_steps(self) -> int:
    return self.cfg.epochs * self.steps_per_epoch

  def update(self, feats: dict[str, Any], labels: Any) -> dict[str, jax.Array]:
    """One LARS step of every head on its readout of the batch; returns {readout: loss}."""
    losses, heads = {}, {}
    for name, h in self.state["heads"].items():
      params, stats, opt_state, losses[name] = _step(
          h["params"], h["stats"], h["opt_state"], feats[name], labels, tx=self.tx,
          momentum=self.cfg.bn_momentum)
      heads[name] = {"params": params, "stats": stats, "opt_state": opt_state}
    self.state = {"step": self.state["step"] + 1, "heads": heads}
    return losses

  def head(self, name: str) -> tuple[dict, dict]:
    h = self.state["heads"][name]
    return h["params"], h["stats"]


def train_probe(feats: np.ndarray, labels: np.ndarray, num_classes: int,
                cfg: ProbeConfig) -> tuple[dict, dict, list[float]]:
  """Trains the probe head on cached [N, D] features; returns (params, stats, epoch losses).

  Batches drop the remainder (static shapes); a batch larger than N uses all of N.
  """
  n = len(feats)
  bs = min(cfg.batch_size, n)
  steps = max(n // bs, 1)
  heads = ProbeHeads({"x": feats.shape[-1]}, num_classes, dataclasses.replace(cfg, batch_size=bs),
                     steps)
  rng = np.random.default_rng(cfg.seed)
  losses = []
  for _ in range(cfg.epochs):
    perm = rng.permutation(n)
    total = 0.0
    for s in range(steps):
      idx = perm[s * bs:(s + 1) * bs]
      total += float(heads.update({"x": jnp.asarray(feats[idx])}, jnp.asarray(labels[idx]))["x"])
    losses.append(total / steps)
  params, stats = heads.head("x")
  return params, stats, losses


def evaluate_probe(params: dict, stats: dict, feats: np.ndarray, labels: np.ndarray
                   ) -> dict[str, float]:
  """Top-1 / top-5 (%) of the probe on every example of [N, D] features."""
  logits, _ = head_apply(params, stats, jnp.asarray(feats), train=False)
  order = np.argsort(-np.asarray(logits), axis=-1)
  labels = np.asarray(labels)
  k5 = min(5, order.shape[-1])
  return {"top1": 100.0 * float(np.mean(order[:, 0] == labels)),
          "top5": 100.0 * float(np.mean(np.any(order[:, :k5] == labels[:, None], axis=-1))),
          "num_examples": float(len(labels))}


def probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
          num_classes: int, cfg: ProbeConfig) -> dict[str, Any]:
  """Train on cached train features, evaluate on val features: metrics + the final train loss."""
  params, stats, losses = train_probe(train[0], train[1], num_classes, cfg)
  out: dict[str, Any] = evaluate_probe(params, stats, val[0], val[1])
  out["train_loss"] = losses[-1] if losses else float("nan")
  return out

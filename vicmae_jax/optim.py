"""Schedules and the lr scaling rule of every mode; pretraining's AdamW with its decay mask."""
from __future__ import annotations

import dataclasses
import logging

import jax
import optax

from vicmae_jax import typed_config


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Pretraining's AdamW and schedule (`config.optim`); the released recipe by default."""

  base_lr: float = 1.5e-4     # lr = base_lr * global batch / 256
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.05
  warmup_epochs: float = 40.0
  min_lr: float = 0.0
  grad_clip: float = 0.0      # global-norm clipping; 0: off
  accum_steps: int = 1        # micro-batches per update (negatives come from each micro-batch)

  def __post_init__(self):
    check_adamw(self)


def check_adamw(c) -> None:
  """The values an AdamW section (pretraining's or fine-tuning's) can take."""
  typed_config.check(**{
      "base_lr > 0": c.base_lr > 0, "0 <= b1 < 1": 0 <= c.b1 < 1, "0 <= b2 < 1": 0 <= c.b2 < 1,
      "eps > 0": c.eps > 0, "weight_decay >= 0": c.weight_decay >= 0,
      "warmup_epochs >= 0": c.warmup_epochs >= 0, "0 <= min_lr <= base_lr": 0 <= c.min_lr <= c.base_lr,
      "grad_clip >= 0": c.grad_clip >= 0, "accum_steps >= 1": c.accum_steps >= 1})


@dataclasses.dataclass(frozen=True)
class Schedule:
  steps_per_epoch: int
  total_steps: int
  warmup_steps: int


def schedule(steps_per_epoch: int, *, num_epochs: float, warmup_epochs: float,
             total_steps: int = 0) -> Schedule:
  """Update counts of a run (every mode): `total_steps` when set, else epochs x steps per epoch
  (at least 1); warm-up in epochs, rounded, and shorter than the run."""
  total = max(total_steps or int(round(num_epochs * steps_per_epoch)), 1)
  warmup = int(round(warmup_epochs * steps_per_epoch))
  if warmup >= total and warmup:
    # Only reachable with an explicit total_steps (configs check warm-up < epochs): a shortened
    # run, e.g. a smoke test; say so rather than train at a rising lr throughout.
    logging.warning("warm-up of %d steps (%g epochs) is not shorter than the run's %d steps; "
                    "warming up over %d steps", warmup, warmup_epochs, total, total - 1)
  return Schedule(steps_per_epoch, total, min(warmup, total - 1))


def peak_learning_rate(base_lr: float, global_batch: int) -> float:
  """The linear scaling rule of MAE: lr = blr * global_batch / 256."""
  return base_lr * global_batch / 256.0


def learning_rate_schedule(peak_lr: float, total_steps: int, warmup_steps: int,
                           min_lr: float = 0.0) -> optax.Schedule:
  """Linear warm-up from 0 to `peak_lr`, then half-cycle cosine to `min_lr`, per update step."""
  warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=min_lr)


def decay_mask(params):
  """Weight decay on tensors of rank >= 2 (kernels; cls and mask tokens too, as the released
  code does), none on biases and norm scales."""
  return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(schedule: optax.Schedule, *, b1: float = 0.9, b2: float = 0.95,
                   eps: float = 1e-8, weight_decay: float = 0.05,
                   grad_clip: float = 0.0) -> optax.GradientTransformation:
  """AdamW with a decay mask and optional global-norm clipping (off when `grad_clip` <= 0)."""
  adamw = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask)
  if grad_clip and grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(grad_clip), adamw)
  return adamw

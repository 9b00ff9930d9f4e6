"""Everything about the EMA target branch's update (docs/decisions.md, D3): the leaf-wise
average, the cosine momentum schedule, and which online parts the target tracks.

`nnx.EMA` keeps its decay as a Python attribute, i.e. a compile-time constant; here the momentum
is an argument, so one compiled step serves the whole schedule.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vicmae_jax import typed_config


@dataclasses.dataclass(frozen=True)
class EmaConfig:
  """Target momentum schedule (`config.ema`): cosine from `base` to `final` over the run."""

  base: float = 0.996
  final: float = 1.0

  def __post_init__(self):
    typed_config.check(**{"0 <= base <= final <= 1": 0 <= self.base <= self.final <= 1})


def ema_update(target, online, momentum: jax.Array | float):
  """target <- m * target + (1 - m) * online, leaf by leaf (same tree structure)."""
  m = jnp.asarray(momentum, jnp.float32)
  return jax.tree.map(lambda t, o: (m * t + (1.0 - m) * o).astype(t.dtype), target, online)


def cosine_momentum(step: jax.Array | int, total_steps: int, base: float = EmaConfig.base,
                    final: float = EmaConfig.final) -> jax.Array:
  """Cosine schedule from `base` at step 0 to `final` at `total_steps` (BYOL's form), clipped after."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
  return final - (final - base) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


# The online parts the EMA target tracks (under the model's `target` branch); the predictor and
# the decoder have no target copy.
TRACKED_PARTS = ("encoder", "projector")


def update_target(target_params, online_params, momentum: jax.Array | float):
  """EMA step of every tracked part: target <- m * target + (1 - m) * online.

  `target_params` is the model's target state ({'target': {part: ...}}); without a target branch
  (shared_projector mode) it is empty and comes back unchanged, so the step needs no branch.
  """
  if not jax.tree.leaves(target_params):
    return target_params
  new = jax.tree.map(lambda x: x, target_params)  # fresh containers, same leaves
  for part in TRACKED_PARTS:
    new["target"][part] = ema_update(target_params["target"][part], online_params[part], momentum)
  return new

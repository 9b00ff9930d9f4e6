"""EMA of the target branch with a scheduled momentum (SPEC.md D3).

`nnx.EMA` keeps its decay as a Python attribute, i.e. a compile-time constant; here the momentum
is an argument, so one compiled step serves the whole schedule.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def ema_update(target, online, momentum: jax.Array | float):
  """target <- m * target + (1 - m) * online, leaf by leaf (same tree structure)."""
  m = jnp.asarray(momentum, jnp.float32)
  return jax.tree.map(lambda t, o: (m * t + (1.0 - m) * o).astype(t.dtype), target, online)


def cosine_momentum(step: jax.Array | int, total_steps: int, base: float = 0.996,
                    final: float = 1.0) -> jax.Array:
  """Cosine schedule from `base` at step 0 to `final` at `total_steps` (BYOL's form), clipped after."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
  return final - (final - base) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))

"""LayerNorm as one pure function with a hand-written backward pass.

Autodiff of the textbook LayerNorm keeps x, the mean and the variance, recomputes the normalised
input in the backward pass and broadcasts the scale into a full-size temporary that XLA:CPU
materialises, one per norm. The closed-form gradient below keeps only the normalised input and the
per-row inverse deviation, and every full-size operation fuses into two passes; it is used on
every platform (measurements: docs/scaling.md, sections 5 and 7). Statistics are float32 whatever
the input dtype.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """(x - mean) / sqrt(var + eps) * scale + bias over the last axis (biased variance, as torch)."""
  return _forward(x, scale, bias, eps)[0]


def _forward(x, scale, bias, eps):
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  centred = x32 - mean
  rstd = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + eps)
  xhat = centred * rstd
  y = xhat * scale.astype(jnp.float32) + bias.astype(jnp.float32)
  return y.astype(x.dtype), xhat.astype(x.dtype), rstd


def _fwd(x, scale, bias, eps):
  y, xhat, rstd = _forward(x, scale, bias, eps)
  return y, (xhat, rstd, scale, bias)


def _bwd(res, dy):
  xhat, rstd, scale, bias = res
  xhat = xhat.astype(jnp.float32)
  dy32 = dy.astype(jnp.float32)
  g = dy32 * scale.astype(jnp.float32)
  # d/dx of the normalisation: rstd * (g - mean(g) - xhat * mean(g * xhat)) per row.
  dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True)
               - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
  rows = tuple(range(dy.ndim - 1))
  dscale = jnp.sum(dy32 * xhat, axis=rows).astype(scale.dtype)
  dbias = jnp.sum(dy32, axis=rows).astype(bias.dtype)
  return dx.astype(dy.dtype), dscale, dbias, None


layer_norm.defvjp(_fwd, _bwd)

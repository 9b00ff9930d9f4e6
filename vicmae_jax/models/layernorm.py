"""LayerNorm as one pure function, with a hand-written backward pass where it pays.

Autodiff of the textbook LayerNorm keeps x, the mean and the variance, recomputes the normalised
input in the backward pass and broadcasts the scale into a full-size temporary that XLA:CPU
materialises, one per norm. The closed-form gradient below keeps only the normalised input and the
per-row inverse deviation, and every full-size operation fuses into two passes.

Which programs use it is `hardware.layernorm_vjp()` (from the platform of the step's mesh):
- CPU: yes; autodiff's temporaries cost ~270 ms of a 6 s fp32 ViT-S step (docs/scaling.md, 7).
- TPU: yes, by the compiler's roofline (`optimal_seconds`) of bf16 blocks cross-compiled for v5p
  (128 images per chip, forward + backward of params and input): L/16 encoder block 3.86 ms vs
  3.95 ms with autodiff, decoder block (512 wide, 197 tokens) 3.33 vs 3.37 ms, B/16 encoder
  block 2.69 vs 2.73 ms, with 1-4% fewer bytes accessed and the same temporaries within 3%
  (docs/scaling.md, section 5).
- GPU: no (unmeasured): autodiff of the same forward, the standard path.
Statistics are float32 whatever the input dtype, on every path.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vicmae_jax import hardware

# The closed-form backward pass's name in a lowered program (`Lowered.as_text(debug_info=True)`),
# so tests can tell which backward pass a step carries.
BWD_SCOPE = "layer_norm_closed_form_bwd"


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """(x - mean) / sqrt(var + eps) * scale + bias over the last axis (biased variance, as torch);
  the closed-form backward pass where `hardware.layernorm_vjp()`, else autodiff."""
  if hardware.layernorm_vjp():
    return _closed_form(x, scale, bias, eps)
  return _forward(x, scale, bias, eps)[0]


@jax.custom_vjp
def _closed_form(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
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
  with jax.named_scope(BWD_SCOPE):
    return _closed_form_bwd(res, dy)


def _closed_form_bwd(res, dy):
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


_closed_form.defvjp(_fwd, _bwd)

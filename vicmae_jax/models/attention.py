"""Softmax attention over a fused qkv, with a hand-written backward pass for XLA:CPU.

Autodiff of softmax(q k^T) v gives XLA batched products that contract a non-minor dimension
(p^T do, ds^T q); XLA:CPU runs those as Eigen dots with transposed copies of the [T, T] operands,
far slower than torch's fused CPU kernel at the decoder's shapes. The VJP below writes every
product as a canonical batched GEMM: only the [T, Dh] operands are transposed (behind
optimisation barriers, so XLA cannot fold them back into the dot), and the softmax's row term uses
sum(do * o). That helps, but the batched [T, T] products stay slow on XLA:CPU (measurements:
docs/scaling.md, section 7). Used on CPU only (`linear.cpu_layout_vjps`); elsewhere autodiff of
the same forward.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vicmae_jax.models.linear import cpu_layout_vjps, matmul, rhs_transpose, row_major, swap_last

_barrier = jax.lax.optimization_barrier


def attention(qkv: jax.Array) -> jax.Array:
  """Softmax attention of a fused [N, T, 3, H, Dh] qkv -> [N, T, H, Dh].

  Logits scaled by Dh^-0.5, float32 softmax: the math of `jax.nn.dot_product_attention` (the
  query is scaled before the product, as in flax's attention). On TPU the compiler's roofline
  ranks this XLA formulation ahead of `jax.nn.dot_product_attention(implementation="xla")` at the
  decoder's shapes, and the Pallas flash kernel cannot be judged from CPU (docs/scaling.md,
  section 5).
  """
  return _attention(qkv) if cpu_layout_vjps() else _plain_attention(qkv)


def _split(qkv: jax.Array):
  # [N, T, 3, H, Dh] -> three [N, H, T, Dh]: one transpose, then contiguous [T, Dh] blocks.
  return jnp.moveaxis(qkv, (2, 3), (0, 2))


def _scale(q: jax.Array) -> float:
  return q.shape[-1] ** -0.5


def _probs_and_out(qs, k, v):
  """softmax(qs k^T) and its product with v, for a query already scaled by Dh^-0.5.

  Scaling the [T, Dh] query rather than the [T, T] logits (as flax's attention does) saves a pass
  over the logits; on XLA:CPU that scalar was even materialised as an [N, H, T, T] array.
  """
  # Logits leave the product in the compute dtype on accelerators, as under the released code's
  # autocast; the softmax itself runs in float32. Writing and re-reading a bf16 [T, T] array
  # instead of a float32 one shortens the compiler's roofline time of a TPU decoder block
  # (T = 197; docs/scaling.md, section 5). CPU programs keep float32 logits (their bf16 GEMMs
  # accumulate and return float32 anyway, `linear.matmul`).
  logits_dtype = jnp.promote_types(qs.dtype, jnp.float32) if cpu_layout_vjps() else qs.dtype
  logits = jnp.matmul(qs, rhs_transpose(k), preferred_element_type=logits_dtype)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
  return probs, matmul(probs, v)


def _plain_attention(qkv: jax.Array) -> jax.Array:
  """The forward pass; differentiated by autodiff wherever the custom VJP is not used."""
  q, k, v = _split(qkv)
  return jnp.swapaxes(_probs_and_out(q * _scale(q), k, v)[1], 1, 2)


_attention = jax.custom_vjp(_plain_attention)


def _fwd(qkv):
  q, k, v = (row_major(t) for t in _split(qkv))
  qs = q * _scale(q)
  probs, out = _probs_and_out(qs, k, v)
  return jnp.swapaxes(out, 1, 2), (qs, k, v, probs, out)


def _bwd(res, dy):
  qs, k, v, probs, out = res
  do = row_major(jnp.swapaxes(dy, 1, 2))                         # [N, H, T, Dh]
  f32 = jnp.float32
  dprobs = jnp.matmul(do, rhs_transpose(v), preferred_element_type=f32)
  row = jnp.sum(do.astype(f32) * out.astype(f32), axis=-1, keepdims=True)  # = sum(dp * p)
  dlogits = (probs.astype(f32) * (dprobs - row)).astype(qs.dtype)
  dq = matmul(dlogits, k) * _scale(qs)  # logits = (q * scale) k^T
  # dk = ds^T qs and dv = p^T do as ([Dh, T] @ [T, T])^T: transpose the small operands instead.
  dk_t = _barrier(matmul(swap_last(qs), dlogits))
  dv_t = _barrier(matmul(swap_last(do), probs))
  dk, dv = jnp.swapaxes(dk_t, -1, -2), jnp.swapaxes(dv_t, -1, -2)
  return (jnp.moveaxis(jnp.stack([dq, dk, dv]), (0, 2), (2, 3)).astype(dy.dtype),)


_attention.defvjp(_fwd, _bwd)

"""Transformer and head building blocks in Flax NNX (timm/MAE semantics, SPEC.md 2.1, 2.5, 2.6).

Params are always float32; `dtype` is the compute dtype of activations. Softmax, norm statistics
and BatchNorm run in float32 whatever `dtype` is.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

xavier = nnx.initializers.xavier_uniform()
zeros = nnx.initializers.zeros_init()
LN_EPS = 1e-6


def dense(in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs, bias_init=zeros) -> nnx.Linear:
  """A Linear with MAE's init: Xavier-uniform weights, zero bias."""
  return nnx.Linear(in_features, out_features, kernel_init=xavier, bias_init=bias_init,
                    dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def layer_norm(features: int, *, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(features, epsilon=LN_EPS, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class Attention(nnx.Module):
  """Multi-head self-attention with one fused qkv projection laid out [3][heads][head_dim].

  The fused layout is what the PyTorch checkpoints store, and its Xavier bound comes from the
  (3D x D) matrix, as in the released init.
  """

  def __init__(self, dim: int, heads: int, *, dtype, attention_impl: str | None, rngs: nnx.Rngs):
    self.heads = heads
    self.attention_impl = attention_impl
    self.qkv = dense(dim, 3 * dim, dtype=dtype, rngs=rngs)
    self.proj = dense(dim, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    n, t, d = x.shape
    qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    # Scale head_dim^-0.5 and a float32 softmax are dot_product_attention's defaults.
    y = jax.nn.dot_product_attention(q, k, v, implementation=self.attention_impl)
    return self.proj(y.reshape(n, t, d))


class Mlp(nnx.Module):
  def __init__(self, dim: int, hidden: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = dense(dim, hidden, dtype=dtype, rngs=rngs)
    self.fc2 = dense(hidden, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    # Exact (erf) GELU as torch nn.GELU; Flax's default is the tanh approximation.
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
  """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, dtype, attention_impl: str | None,
               rngs: nnx.Rngs):
    self.norm1 = layer_norm(dim, dtype=dtype, rngs=rngs)
    self.attn = Attention(dim, heads, dtype=dtype, attention_impl=attention_impl, rngs=rngs)
    self.norm2 = layer_norm(dim, dtype=dtype, rngs=rngs)
    self.mlp = Mlp(dim, mlp_dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


def run_blocks(blocks: nnx.List, x: jax.Array, remat: bool) -> jax.Array:
  """Applies blocks in order, optionally rematerialising each block's activations."""
  for block in blocks:
    if remat:
      x = nnx.remat(lambda b, h: b(h))(block, x)
    else:
      x = block(x)
  return x


class BatchNorm(nnx.Module):
  """BatchNorm over axis -2 of [..., N, C]; leading axes are independent groups.

  Callers put one view, or one group of samples (D9), on each leading index. Statistics are
  float32. As torch's BatchNorm1d: normalise with the biased variance, track the unbiased one in
  the running average; `momentum` follows Flax's convention (0.9 == torch's 0.1).
  """

  def __init__(self, features: int, *, momentum: float = 0.9, epsilon: float = 1e-5):
    self.momentum = momentum
    self.epsilon = epsilon
    self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
    self.mean = nnx.BatchStat(jnp.zeros((features,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((features,), jnp.float32))

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x32 = x.astype(jnp.float32)
    if train:
      mean = jnp.mean(x32, axis=-2, keepdims=True)
      var = jnp.mean(jnp.square(x32 - mean), axis=-2, keepdims=True)
      n = x.shape[-2]
      reduce_axes = tuple(range(x.ndim - 1))
      batch_mean = jnp.mean(mean, axis=reduce_axes)
      batch_var = jnp.mean(var, axis=reduce_axes) * (n / max(n - 1, 1))
      m = self.momentum
      self.mean[...] = m * self.mean[...] + (1 - m) * jax.lax.stop_gradient(batch_mean)
      self.var[...] = m * self.var[...] + (1 - m) * jax.lax.stop_gradient(batch_var)
    else:
      mean, var = self.mean[...], self.var[...]
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


class MLPHead(nnx.Module):
  """`hidden_layers` x [Linear, BatchNorm, ReLU], then Linear: the projector/predictor form.

  Input [G, N, C] (G views or groups, each normalised on its own) or [N, C].
  """

  def __init__(self, in_features: int, hidden: int, out_features: int, *, hidden_layers: int,
               dtype, rngs: nnx.Rngs):
    dims = [in_features] + [hidden] * hidden_layers
    self.linears = nnx.List(
        [dense(a, b, dtype=dtype, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])]
        + [dense(dims[-1], out_features, dtype=dtype, rngs=rngs)])
    self.norms = nnx.List([BatchNorm(hidden) for _ in range(hidden_layers)])

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for linear, norm in zip(self.linears[:-1], self.norms):
      x = jax.nn.relu(norm(linear(x), train=train))
    return self.linears[-1](x)

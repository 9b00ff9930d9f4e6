"""Transformer and head building blocks in Flax NNX (timm/MAE semantics, SPEC.md 2.1, 2.5, 2.6).

Params are always float32; `dtype` is the compute dtype of activations. Softmax, norm statistics
and BatchNorm run in float32 whatever `dtype` is.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vicmae_jax.models import attention, layernorm
from vicmae_jax.models.linear import linear

xavier = nnx.initializers.xavier_uniform()
zeros = nnx.initializers.zeros_init()
LN_EPS = 1e-6


class Dense(nnx.Module):
  """x @ kernel + bias, kernel [in, out] (nnx.Linear's layout and names), in the compute dtype.

  The product goes through `linear.linear`, whose backward pass is laid out for XLA:CPU's fast
  GEMMs; on GPU and TPU it is the plain product.
  """

  def __init__(self, in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs,
               kernel_init=xavier, bias_init=zeros):
    self.dtype = dtype
    self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), jnp.float32))
    self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), jnp.float32))

  def __call__(self, x: jax.Array, dtype=None) -> jax.Array:
    """`dtype`, when given, overrides the compute dtype for this call."""
    dtype = dtype if dtype is not None else self.dtype
    dtype = jnp.result_type(x, self.kernel[...]) if dtype is None else dtype
    return linear(x.astype(dtype), self.kernel[...].astype(dtype), self.bias[...].astype(dtype))


def dense(in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs, bias_init=zeros) -> Dense:
  """A Dense with MAE's init: Xavier-uniform weights, zero bias."""
  return Dense(in_features, out_features, dtype=dtype, rngs=rngs, bias_init=bias_init)


class LayerNorm(nnx.Module):
  """LayerNorm with `scale` and `bias` (nnx.LayerNorm's names), through `layernorm.layer_norm`."""

  def __init__(self, features: int, *, dtype, rngs: nnx.Rngs, epsilon: float = LN_EPS):
    self.dtype = dtype
    self.epsilon = epsilon
    # Ones and zeros need no randomness, but nnx.LayerNorm draws one key for each: drawing them
    # too keeps every later layer's init, so a seed gives the same model as with nnx.LayerNorm.
    rngs.params(), rngs.params()
    self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x if self.dtype is None else x.astype(self.dtype)
    return layernorm.layer_norm(x, self.scale[...], self.bias[...], self.epsilon)


def layer_norm(features: int, *, dtype, rngs: nnx.Rngs) -> LayerNorm:
  return LayerNorm(features, dtype=dtype, rngs=rngs)


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
    if self.attention_impl is None:
      y = attention.attention(qkv)
    else:  # a fused kernel, e.g. "cudnn" on GPU
      q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
      # Scale head_dim^-0.5 and a float32 softmax are dot_product_attention's defaults.
      y = jax.nn.dot_product_attention(q, k, v, implementation=self.attention_impl)
    return self.proj(y.reshape(n, t, d))


class Mlp(nnx.Module):
  def __init__(self, dim: int, hidden: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = dense(dim, hidden, dtype=dtype, rngs=rngs)
    self.fc2 = dense(hidden, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(gelu(self.fc1(x)))


def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU, x * (1 + erf(x / sqrt 2)) / 2: torch nn.GELU's formula.

  `jax.nn.gelu(approximate=False)` writes it with erfc, which XLA expands into exp and two
  rational branches; erf alone is one clamped rational polynomial (same values to float32
  rounding, cheaper on CPU). Flax's default is the tanh approximation.
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


class Block(nnx.Module):
  """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, dtype, attention_impl: str | None,
               rngs: nnx.Rngs):
    self.norm1 = layer_norm(dim, dtype=dtype, rngs=rngs)
    self.attn = Attention(dim, heads, dtype=dtype, attention_impl=attention_impl, rngs=rngs)
    self.norm2 = layer_norm(dim, dtype=dtype, rngs=rngs)
    self.mlp = Mlp(dim, mlp_dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, drop_rate: float = 0.0, rng: jax.Array | None = None
               ) -> jax.Array:
    """`drop_rate` > 0 with an `rng`: stochastic depth on each residual branch (fine-tuning)."""
    if drop_rate > 0.0 and rng is not None:
      k1, k2 = jax.random.split(rng)
      x = x + drop_path(self.attn(self.norm1(x)), drop_rate, k1)
      return x + drop_path(self.mlp(self.norm2(x)), drop_rate, k2)
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """timm DropPath: zero a whole residual branch per sample, scale survivors by 1 / keep."""
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, 0).astype(x.dtype)


def drop_path_rates(max_rate: float, depth: int) -> list[float]:
  """Linear over depth from 0 to `max_rate` (timm's `torch.linspace(0, rate, depth)`)."""
  if depth == 1:
    return [0.0]
  return [max_rate * i / (depth - 1) for i in range(depth)]


def _block_with_drop_path(rate: float):
  def fn(block, h, key):
    return block(h, rate, key)
  return fn


def _remat_policy(name: str):
  """`ModelConfig.remat_policy` -> a jax.checkpoint policy (None: save nothing)."""
  if name == "dots":
    # The Dense products are dot_generals without batch dimensions; attention's are batched.
    return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
  return None


def run_blocks(blocks: nnx.List, x: jax.Array, remat: bool, drop_path_rate: float = 0.0,
               rng: jax.Array | None = None, remat_policy: str = "full") -> jax.Array:
  """Applies blocks in order, optionally rematerialising each block's activations.

  With `drop_path_rate` > 0 and an `rng`, block i drops its branches at the linear rate i.
  """
  rates = drop_path_rates(drop_path_rate, len(blocks))
  use_dp = drop_path_rate > 0.0 and rng is not None
  policy = _remat_policy(remat_policy)
  for i, block in enumerate(blocks):
    key = jax.random.fold_in(rng, i) if use_dp else None
    rate = rates[i] if use_dp else 0.0
    if remat and use_dp:
      # The rate is a Python float closed over (static); only the key is traced.
      x = nnx.remat(_block_with_drop_path(rate), policy=policy)(block, x, key)
    elif remat:
      x = nnx.remat(lambda b, h: b(h), policy=policy)(block, x)
    else:
      x = block(x, rate, key)
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

  def __call__(self, x: jax.Array, *, train: bool, dtype=None) -> jax.Array:
    """`dtype`, when given, overrides the linears' compute dtype (BatchNorm stays float32)."""
    for dense_layer, norm in zip(self.linears[:-1], self.norms):
      x = jax.nn.relu(norm(dense_layer(x, dtype), train=train))
    return self.linears[-1](x, dtype)

"""Transformer and head building blocks in Flax NNX (timm/MAE semantics, docs/decisions.md#encoder).

Params are always float32; `dtype` is the compute dtype of activations. Softmax, norm statistics
and BatchNorm run in float32 whatever `dtype` is.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
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
      keep = 1.0 - drop_rate
      return self.with_drop_path(x, keep, 1.0 / keep, rng)
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))

  def with_drop_path(self, x: jax.Array, keep: float | jax.Array, scale: float | jax.Array,
                     rng: jax.Array) -> jax.Array:
    """The block with stochastic depth: branches kept with probability `keep`, survivors scaled
    by `scale` (= 1 / keep). Python floats, or float32 scalars (traced when `run_blocks` scans
    over blocks, where block 0's keep = scale = 1 is the identity)."""
    k1, k2 = jax.random.split(rng)
    x = x + _drop_branch(self.attn(self.norm1(x)), keep, scale, k1)
    return x + _drop_branch(self.mlp(self.norm2(x)), keep, scale, k2)


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """timm DropPath: zero a whole residual branch per sample, scale survivors by 1 / keep."""
  return _drop_branch(x, 1.0 - rate, 1.0 / (1.0 - rate), rng)


def _drop_branch(x: jax.Array, keep: float | jax.Array, scale: float | jax.Array,
                 rng: jax.Array) -> jax.Array:
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  # A product with the reciprocal, not a division by keep: XLA rewrites a division by a constant
  # into such a product, but not one by a traced keep; a product is the same op either way.
  scale = scale if isinstance(scale, (int, float)) else scale.astype(x.dtype)
  return jnp.where(mask, x * scale, 0).astype(x.dtype)


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
               rng: jax.Array | None = None, remat_policy: str = "full",
               scan: bool = False) -> jax.Array:
  """Applies blocks in order, optionally rematerialising each block's activations.

  With `drop_path_rate` > 0 and an `rng`, block i drops its branches at the linear rate i, with
  the key `fold_in(rng, i)`. `scan=True` runs the same computation as one `lax.scan` over depth
  (`ModelConfig.scan_blocks`): same numbers, one traced block instead of `len(blocks)`.
  """
  rates = drop_path_rates(drop_path_rate, len(blocks))
  use_dp = drop_path_rate > 0.0 and rng is not None
  policy = _remat_policy(remat_policy)
  if scan and len(blocks) > 1:
    return _scan_blocks(blocks, x, remat, policy, rates if use_dp else None, rng)
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


def _stack(*leaves: jax.Array) -> jax.Array:
  """jnp.stack as one concatenate and one reshape, so the traced program does not grow with the
  number of blocks (jnp.stack adds a reshape per operand)."""
  if leaves[0].ndim == 0:
    return jnp.stack(leaves)
  return jax.lax.concatenate(leaves, 0).reshape((len(leaves),) + leaves[0].shape)


def _scan_blocks(blocks: nnx.List, x: jax.Array, remat: bool, policy,
                 rates: list[float] | None, rng: jax.Array | None) -> jax.Array:
  """`run_blocks` as a scan over depth: the blocks' states stacked along a new leading axis, one
  block's slice merged back into a Block (graphdef shared) and applied per step.

  The parameter layout stays a list of blocks; the stacking is a copy of the block parameters in
  every step (and its transpose unstacks their gradients). Drop path: keep = 1 - rate (float32)
  and scale = 1 / keep (in the branches' dtype), each rounded once from the Python float the loop
  uses, and the keys `fold_in(rng, i)` are scanned inputs; block 0's rate is 0, where
  keep = scale = 1 changes nothing, bit for bit.
  """
  graphdef, first = nnx.split(blocks[0])
  states = [first]
  for block in blocks[1:]:
    g, state = nnx.split(block)
    if g != graphdef:
      raise ValueError("scan over blocks needs blocks of one structure; use scan_blocks=False.")
    states.append(state)
  stacked = jax.tree.map(_stack, *states)

  def apply(state, h, key, keep, scale):
    block = nnx.merge(graphdef, state)
    return block(h) if key is None else block.with_drop_path(h, keep, scale, key)

  if remat:
    apply = jax.checkpoint(apply, policy=policy, prevent_cse=False)
  if rates is None:
    keys = keeps = scales = None
  else:
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(len(blocks)))
    keeps = jnp.asarray([1.0 - r for r in rates], jnp.float32)
    # Rounded straight from float64 to the branches' dtype, as the loop's weak-typed Python
    # floats are (via float32 would round bfloat16 twice).
    branch = jax.eval_shape(lambda s, h: (b := nnx.merge(graphdef, s)).attn(b.norm1(h)), first, x)
    scales = jnp.asarray(np.asarray([1.0 / (1.0 - r) for r in rates], branch.dtype))

  # The residual stream keeps the dtype of the blocks' output (promoting the input, as the first
  # block does: an exact cast), so the scan carry has one type.
  out = jax.eval_shape(lambda s, h: nnx.merge(graphdef, s)(h), first, x)
  x = x.astype(out.dtype)

  def step(h, xs):
    state, key, keep, scale = xs
    return apply(state, h, key, keep, scale), None

  x, _ = jax.lax.scan(step, x, (stacked, keys, keeps, scales))
  return x


class BatchNorm(nnx.Module):
  """BatchNorm over axis -2 of [..., N, C]; leading axes are independent groups.

  Callers put one view, or one group of samples (docs/decisions.md, D9), on each leading index.
  Statistics are float32. As torch's BatchNorm1d: normalise with the biased variance, track the
  unbiased one in the running average; `momentum` follows Flax's convention (0.9 == torch's 0.1).

  Running statistics: an input of three or more axes, [V, ..., N, C], is V successive calls (the
  views, in order): each updates the running averages in turn with its own statistics (averaged
  over the groups between, if any), as the released code's one projector call per view does:
  after views 1 and 2, r = m^2 r + m (1 - m) s_1 + (1 - m) s_2. A 2-D input is one call.
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
      calls = x.shape[0] if x.ndim > 2 else 1
      # [calls, C]: each call's statistics, averaged over its groups; unbiased variance.
      call_mean = jnp.mean(mean.reshape(calls, -1, x.shape[-1]), axis=1)
      call_var = jnp.mean(var.reshape(calls, -1, x.shape[-1]), axis=1) * (n / max(n - 1, 1))
      m = self.momentum
      running_mean, running_var = self.mean[...], self.var[...]
      for i in range(calls):
        running_mean = m * running_mean + (1 - m) * jax.lax.stop_gradient(call_mean[i])
        running_var = m * running_var + (1 - m) * jax.lax.stop_gradient(call_var[i])
      self.mean[...] = running_mean
      self.var[...] = running_var
    else:
      mean, var = self.mean[...], self.var[...]
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


class MLPHead(nnx.Module):
  """`hidden_layers` x [Linear, BatchNorm, ReLU], then Linear: the projector/predictor form.

  Input [V, N, C] or [V, G, g, C] (V views, optionally G groups of g samples, each normalised on
  its own; the views update the running statistics one after another, see `BatchNorm`) or [N, C].
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

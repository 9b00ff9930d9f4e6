"""ViC-MAE: online encoder + MAE decoder + pooled projector/predictor, and the EMA target branch.

One module holds everything, so `nnx.state(model)` is the whole model; `split_model` separates
what the optimizer updates (online params) from what EMA updates (target params) and from the
BatchNorm statistics.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from vicmae_jax import hardware, masking
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.models.layers import MLPHead
from vicmae_jax.models.vit import MAEDecoder, ViTEncoder

TARGET = nnx.PathContains("target")
ONLINE_PARAMS = nnx.All(nnx.Param, nnx.Not(TARGET))
TARGET_PARAMS = nnx.All(nnx.Param, TARGET)


class TargetBranch(nnx.Module):
  """Target encoder + projector; their params follow the online ones by EMA, never by gradient."""

  def __init__(self, encoder: ViTEncoder, projector: MLPHead):
    self.encoder = encoder
    self.projector = projector


class Outputs(NamedTuple):
  """Per-image arrays hold both views with pairs interleaved (`interleave`): `per_view(x)[v]`
  gives view v + 1 of every pair."""
  pred: jax.Array         # [2N, L, p*p*3] reconstruction of both views
  mask: jax.Array         # [2N, L] 1 = masked
  latent: jax.Array       # [2N, 1 + K, D] online encoder output after the final LayerNorm
  online: jax.Array       # [2, N, C] projector (shared) or predictor (ema) output per view
  target: jax.Array | None  # [2, N, C] stop-gradient target projections (ema mode)


def interleave(view1: jax.Array, view2: jax.Array) -> jax.Array:
  """[N, ...] x 2 -> [2N, ...] with rows 2i, 2i + 1 = pair i's two views.

  Interleaving (not concatenating) keeps each pair on the device that holds it when the batch is
  sharded: a concatenation would move half of every device's images to other devices (all-to-all
  of the batch) and its slices back again (collective-permutes of activations).
  """
  return jnp.stack([view1, view2], axis=1).reshape((2 * view1.shape[0],) + view1.shape[1:])


def per_view(x: jax.Array) -> jax.Array:
  """Inverse of `interleave`, stacked: [2N, ...] -> [2, N, ...] (x[0] = view 1 of every pair)."""
  return jnp.swapaxes(x.reshape((x.shape[0] // 2, 2) + x.shape[1:]), 0, 1)


def pool(tokens: jax.Array, how: str) -> jax.Array:
  """[N, 1 + K, D] encoder tokens -> [N, D] float32 global vector: the cls token, or the mean or
  max over the patch tokens (pretraining's pooling and the classifiers' readout alike)."""
  if how == "cls":
    return tokens[:, 0].astype(jnp.float32)
  patches = tokens[:, 1:].astype(jnp.float32)
  if how == "mean":
    return jnp.mean(patches, axis=1)
  if how == "max":
    return jnp.max(patches, axis=1)
  raise ValueError(f"pooling must be cls, mean or max, got {how!r}")


def _grouped(x: jax.Array, group_size: int | None) -> jax.Array:
  """[2, N, D] -> [2, N / g, g, D] so BatchNorm normalises groups of g samples
  (docs/decisions.md, D9)."""
  if group_size is None:
    return x
  views, n, d = x.shape
  if n % group_size:
    raise ValueError(f"bn_group_size {group_size} does not divide the per-view batch {n}.")
  return x.reshape(views, n // group_size, group_size, d)


class ViCMAE(nnx.Module):
  """The pretraining model. `cfg` must be resolved (see `config.model_config`); an "auto" dtype
  is resolved for the platform being built for (`ModelConfig.for_platform`)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg = cfg.for_platform()
    self.encoder = ViTEncoder(cfg, rngs=rngs)
    self.decoder = MAEDecoder(cfg, rngs=rngs)
    dtype = jnp.dtype(cfg.dtype)
    self.projector = MLPHead(cfg.width, cfg.projector_hidden, cfg.projector_out, hidden_layers=2,
                             dtype=dtype, rngs=rngs)
    if cfg.has_target_branch:
      self.predictor = MLPHead(cfg.projector_out, cfg.predictor_hidden, cfg.projector_out,
                               hidden_layers=1, dtype=dtype, rngs=rngs)
      # The target starts as an exact copy of the online branch (BYOL / MoCo v3).
      self.target = TargetBranch(nnx.clone(self.encoder), nnx.clone(self.projector))

  def _heads(self, head: MLPHead, feats: jax.Array, train: bool) -> jax.Array:
    """Runs a projector/predictor on [2, N, C], each view (or group) normalised on its own.

    BatchNorm's running statistics take view 1's and then view 2's statistics, two updates per
    call as the released code's two projector calls make (`layers.BatchNorm`).
    """
    shape = feats.shape
    # In a program built for CPU the heads compute in float32 whatever cfg.dtype is: they see one
    # row per image, and a bf16 GEMM there costs more in casting and transposing their 4096-wide
    # weights each step than it saves (docs/scaling.md, section 7). Accelerators keep
    # cfg.dtype, as the released code's autocast does; their large batches make bf16 GEMMs pay.
    dtype = jnp.float32 if hardware.is_cpu() else None
    out = head(_grouped(feats, self.cfg.bn_group_size), train=train, dtype=dtype)
    return out.reshape(shape[:2] + out.shape[-1:]).astype(jnp.float32)

  def __call__(self, view1: jax.Array, view2: jax.Array, *,
               noise: tuple[jax.Array, jax.Array] | None = None,
               rng: jax.Array | None = None, train: bool = True) -> Outputs:
    """Forward pass of both views.

    Args:
      view1, view2: [N, H, W, 3] normalised images (two frames of a video or two views of an image).
      noise: optional per-view uniform noise, each [N, L], that fixes the masks exactly (as the
        released code and Hugging Face ViTMAE accept); otherwise drawn from `rng` as one
        [2N, L] array in the interleaved order.
      rng: PRNG key for the masking noise when `noise` is None.
      train: BatchNorm uses batch statistics (and updates its running averages) when True.
    """
    cfg = self.cfg
    n = view1.shape[0]
    images = interleave(view1, view2).astype(cfg.dtype)
    if noise is None:
      if rng is None:
        raise ValueError("ViCMAE needs either `noise` or an `rng` to draw the masks.")
      noise_all = masking.uniform_noise(rng, 2 * n, cfg.num_patches)
    else:
      noise_all = interleave(noise[0], noise[1])
    m = masking.random_masking(noise_all, cfg.len_keep)
    latent = self.encoder(images, m.ids_keep)
    pred = self.decoder(latent, m.ids_restore).astype(jnp.float32)
    feats = per_view(pool(latent, cfg.pooling))
    online = self._heads(self.projector, feats, train)
    target = None
    if cfg.has_target_branch:
      online = self._heads(self.predictor, online, train)
      ids = None if cfg.target_sees_full_view else m.ids_keep
      t_latent = self.target.encoder(images, ids)
      t_feats = per_view(pool(t_latent, cfg.pooling))
      target = jax.lax.stop_gradient(self._heads(self.target.projector, t_feats, train))
    return Outputs(pred=pred, mask=m.mask, latent=latent, online=online, target=target)


def split_model(model: ViCMAE):
  """-> (graphdef, online params, target params, everything else: BatchNorm statistics)."""
  return nnx.split(model, ONLINE_PARAMS, TARGET_PARAMS, ...)


def merge_model(graphdef, params: nnx.State, target: nnx.State, rest: nnx.State) -> ViCMAE:
  """Inverse of `split_model`, safe inside jax transforms.

  `copy=True` gives the module fresh Variables at the current trace level, so BatchNorm may
  update its statistics even when some states were captured from an outer trace (e.g. inside
  `jax.grad` of a jitted step).
  """
  return nnx.merge(graphdef, params, target, rest, copy=True)


def count_params(cfg: ModelConfig) -> int:
  """Trainable online parameters (fixed position tables excluded), without allocating any."""
  abstract = nnx.eval_shape(lambda: ViCMAE(cfg, rngs=nnx.Rngs(0)))
  _, params, _, _ = split_model(abstract)
  return sum(x.size for x in jax.tree.leaves(params))

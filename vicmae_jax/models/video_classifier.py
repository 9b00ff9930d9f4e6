"""The video classifier of the MAE-ST fine-tuning recipe (docs/evaluation.md "Video fine-tuning"):
a ViT over t x p x p tubelets with separable space-time position embeddings and head dropout,
initialised from an image encoder by inflating its patch kernel.

The transformer body is `vit.encode_tokens`, the image encoder's own; only the tokenizer and the
readout differ.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vicmae_jax.models import layers, vit
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.models.posembed import sincos_2d


def tubelet_patchify(videos: jax.Array, t: int, p: int) -> jax.Array:
  """[N, T, H, W, C] -> [N, (T/t) * (H/p) * (W/p), t*p*p*C]; tokens (time, row, col), features
  (t, p, q, c), so a kernel tiled over t lines up with the 2-D (p, q, c) patch kernel."""
  n, frames, h, w, c = videos.shape
  x = videos.reshape(n, frames // t, t, h // p, p, w // p, p, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(n, (frames // t) * (h // p) * (w // p), t * p * p * c)


def inflate_patch_kernel(kernel: np.ndarray, t: int) -> np.ndarray:
  """2-D patch kernel [p*p*C, D] -> tubelet kernel [t*p*p*C, D]: repeated over t, divided by t.

  On a static clip the tubelet embedding then equals the 2-D embedding of the frame.
  """
  return np.concatenate([np.asarray(kernel)] * t, axis=0) / t


def separable_pos_embed(spatial: jax.Array, temporal: jax.Array) -> jax.Array:
  """[L_s, D] + [T', D] -> [T' * L_s, D] in (time, space) token order."""
  return (temporal[:, None, :] + spatial[None, :, :]).reshape(-1, spatial.shape[-1])


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Inverted dropout; the identity without an `rng` (evaluation) or at rate 0."""
  if rng is None or rate <= 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


# Folded into the step key for the head dropout; drop path folds in the block index (< depth).
_HEAD_DROPOUT_STREAM = 1 << 20


class VideoClassifier(nnx.Module):
  """ViT over t x p x p tubelets with separable (spatial + temporal) and class position
  embeddings, global average pooling of patch tokens -> fc_norm -> dropout -> head (MAE-ST).

  Drop path and the head dropout are active only when a `rng` is passed (the training step).
  """

  def __init__(self, cfg: ModelConfig, num_classes: int, *, num_frames: int = 16,
               tubelet: int = 2, drop_path_rate: float = 0.0, head_dropout: float = 0.0,
               rngs: nnx.Rngs):
    if num_frames % tubelet:
      raise ValueError(f"num_frames {num_frames} is not a multiple of the tubelet size {tubelet}")
    if not 0.0 <= head_dropout < 1.0:
      raise ValueError(f"head_dropout must be in [0, 1), got {head_dropout}")
    cfg = cfg.for_platform()  # "auto" dtype: the platform being built for
    self.cfg, self.tubelet, self.num_frames = cfg, tubelet, num_frames
    self.drop_path_rate, self.head_dropout = drop_path_rate, head_dropout
    dtype = jnp.dtype(cfg.dtype)
    fan_in = tubelet * cfg.patch * cfg.patch * 3
    self.patch_embed = layers.dense(fan_in, cfg.width, dtype=dtype, rngs=rngs)
    self.cls_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, cfg.width)))
    table = jnp.asarray(sincos_2d(cfg.width, cfg.grid))
    self.pos_embed_spatial = nnx.Param(table[1:][None])
    self.pos_embed_temporal = nnx.Param(jnp.zeros((1, num_frames // tubelet, cfg.width)))
    self.pos_embed_class = nnx.Param(table[:1][None])
    self.blocks = vit.make_blocks(cfg.width, cfg.heads, cfg.mlp_dim, cfg.depth, cfg, rngs=rngs)
    self.fc_norm = layers.layer_norm(cfg.width, dtype=dtype, rngs=rngs)
    self.head = nnx.Linear(cfg.width, num_classes,
                           kernel_init=nnx.initializers.truncated_normal(2e-5),
                           bias_init=nnx.initializers.zeros_init(), dtype=dtype,
                           param_dtype=jnp.float32, rngs=rngs)

  def features(self, videos: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """[N, T, H, W, 3] -> [N, D] (mean of patch tokens, fc_norm)."""
    tokens = tubelet_patchify(videos.astype(self.cfg.dtype), self.tubelet, self.cfg.patch)
    pos = separable_pos_embed(self.pos_embed_spatial[...][0], self.pos_embed_temporal[...][0])
    x = self.patch_embed(tokens) + pos.astype(tokens.dtype)
    x = vit.encode_tokens(self.blocks, self.cls_token[...] + self.pos_embed_class[...], x,
                          self.cfg, self.drop_path_rate, rng)
    return self.fc_norm(jnp.mean(x[:, 1:].astype(jnp.float32), axis=1))

  def __call__(self, videos: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    x = self.features(videos, rng)
    key = None if rng is None else jax.random.fold_in(rng, _HEAD_DROPOUT_STREAM)
    return self.head(dropout(x, self.head_dropout, key)).astype(jnp.float32)


def init_from_image_encoder(model: VideoClassifier, encoder: dict) -> list[str]:
  """Copies a pure image-encoder dict (ViTEncoder layout) into `model`; returns what was set.

  The 2-D patch kernel is inflated to tubelets; the spatial table comes from the encoder's
  (learned) `pos_embed` or the sin-cos one; the temporal table stays zero, so a static clip
  starts out as the image model sees its frame. The final LayerNorm initialises fc_norm.
  """
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  pure["patch_embed"]["kernel"] = inflate_patch_kernel(
      encoder["patch_embed"]["proj"]["kernel"], model.tubelet)
  pure["patch_embed"]["bias"] = np.asarray(encoder["patch_embed"]["proj"]["bias"])
  pure["cls_token"] = np.asarray(encoder["cls_token"])
  pure["blocks"] = jax.tree.map(np.asarray, encoder["blocks"])
  pure["fc_norm"] = jax.tree.map(np.asarray, encoder["norm"])
  set_keys = ["patch_embed (inflated)", "cls_token", "blocks", "fc_norm <- norm"]
  if "pos_embed" in encoder:
    table = np.asarray(encoder["pos_embed"]).reshape(-1, model.cfg.width)
    pure["pos_embed_spatial"], pure["pos_embed_class"] = table[None, 1:], table[None, :1]
    set_keys.append("pos_embed_spatial / pos_embed_class <- pos_embed")
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  return set_keys

"""ViT encoder that encodes only the visible patches, and the MAE decoder (docs/decisions.md#encoder, #decoder)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vicmae_jax import masking
from vicmae_jax.models import layers
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.models.posembed import sincos_2d


def _uniform_bias(bound: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class PatchEmbed(nnx.Module):
  """A Dense on patchified pixels, equal to timm's stride-p Conv2d.

  The kernel is [p*p*3, D] in patchify order (row, column, channel), so Xavier fans are
  (3p^2, D) as in MAE's init; the bias keeps Conv2d's default U(+-1/sqrt(3p^2)).
  """

  def __init__(self, patch: int, dim: int, *, dtype, rngs: nnx.Rngs):
    self.patch = patch
    fan_in = patch * patch * 3
    self.proj = layers.dense(fan_in, dim, dtype=dtype, rngs=rngs,
                             bias_init=_uniform_bias(1.0 / np.sqrt(fan_in)))

  def __call__(self, patches: jax.Array) -> jax.Array:
    return self.proj(patches)


def make_blocks(width: int, heads: int, mlp_dim: int, depth: int, cfg: ModelConfig, *,
                rngs: nnx.Rngs) -> nnx.List:
  """`depth` pre-norm blocks in the model's dtype and attention implementation."""
  return nnx.List([layers.Block(width, heads, mlp_dim, dtype=jnp.dtype(cfg.dtype),
                                attention_impl=cfg.attention_impl, rngs=rngs)
                   for _ in range(depth)])


def encode_tokens(blocks: nnx.List, cls: jax.Array, tokens: jax.Array, cfg: ModelConfig,
                  drop_path_rate: float = 0.0, rng: jax.Array | None = None) -> jax.Array:
  """The encoder body: [N, L, D] embedded tokens (positions added) behind a class token [1, 1, D]
  (its position added) through the blocks -> [N, 1 + L, D], before any final norm. The image
  encoder and the video classifier differ only in how they make `tokens`."""
  cls = jnp.broadcast_to(cls.astype(tokens.dtype), (tokens.shape[0], 1, tokens.shape[-1]))
  return layers.run_blocks(blocks, jnp.concatenate([cls, tokens], axis=1), cfg.remat,
                           drop_path_rate, rng, remat_policy=cfg.remat_policy,
                           scan=cfg.scan_blocks)


class ViTEncoder(nnx.Module):
  """Patch embedding, fixed sin-cos positions, cls token, pre-norm blocks, final LayerNorm."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg = cfg.for_platform()  # "auto" dtype: the platform being built for
    dtype = jnp.dtype(cfg.dtype)
    self.patch_embed = PatchEmbed(cfg.patch, cfg.width, dtype=dtype, rngs=rngs)
    self.cls_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, cfg.width)))
    if cfg.learned_pos_embed:
      # Fine-tuning trains the table, starting from the sin-cos values.
      self.pos_embed = nnx.Param(jnp.asarray(sincos_2d(cfg.width, cfg.grid))[None])
    self.blocks = make_blocks(cfg.width, cfg.heads, cfg.mlp_dim, cfg.depth, cfg, rngs=rngs)
    self.norm = layers.layer_norm(cfg.width, dtype=dtype, rngs=rngs)

  def position_table(self) -> jax.Array:
    """[1 + L, D] position embeddings, row 0 for cls (zeros when fixed)."""
    if self.cfg.learned_pos_embed:
      return self.pos_embed[...][0]
    return jnp.asarray(sincos_2d(self.cfg.width, self.cfg.grid))

  def __call__(self, images: jax.Array, ids_keep: jax.Array | None = None, *,
               drop_path_rate: float = 0.0, drop_path_rng: jax.Array | None = None,
               final_norm: bool = True) -> jax.Array:
    """Encodes [N, H, W, 3] images; with `ids_keep` [N, K] only those patches. -> [N, 1 + K, D].

    `drop_path_rate` (linear over depth) applies only when `drop_path_rng` is given (training).
    `final_norm=False` returns the last block's output (MAE's global-pool classifier pools that
    and normalises with its own fc_norm).
    """
    pos = self.position_table()
    patches = masking.patchify(images, self.cfg.patch)
    pos_patches = jnp.broadcast_to(pos[1:], (patches.shape[0],) + pos[1:].shape)
    if ids_keep is not None:
      # Gathering pixels before the embedding equals embedding all patches then gathering
      # tokens, and skips the embedding of masked patches.
      patches = masking.gather_tokens(patches, ids_keep)
      pos_patches = masking.gather_tokens(pos_patches, ids_keep)
    x = self.patch_embed(patches) + pos_patches.astype(self.cfg.dtype)
    x = encode_tokens(self.blocks, self.cls_token[...] + pos[:1], x, self.cfg, drop_path_rate,
                      drop_path_rng)
    return self.norm(x) if final_norm else x


class MAEDecoder(nnx.Module):
  """Embeds encoder tokens, fills masked positions with a mask token, un-shuffles, predicts pixels."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg = cfg.for_platform()  # "auto" dtype: the platform being built for
    dtype = jnp.dtype(cfg.dtype)
    dim = cfg.decoder_width
    self.embed = layers.dense(cfg.width, dim, dtype=dtype, rngs=rngs)
    self.mask_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, dim)))
    self.blocks = make_blocks(dim, cfg.decoder_heads, 4 * dim, cfg.decoder_depth, cfg, rngs=rngs)
    self.norm = layers.layer_norm(dim, dtype=dtype, rngs=rngs)
    self.pred = layers.dense(dim, cfg.patch_dim, dtype=dtype, rngs=rngs)

  def __call__(self, latent: jax.Array, ids_restore: jax.Array) -> jax.Array:
    """[N, 1 + K, D] encoder output and [N, L] un-shuffle indices -> [N, L, p*p*3] pixels."""
    x = self.embed(latent)
    n, length = ids_restore.shape
    num_masked = length + 1 - x.shape[1]
    mask_tokens = jnp.broadcast_to(self.mask_token[...].astype(x.dtype),
                                   (n, num_masked, x.shape[-1]))
    tokens = masking.gather_tokens(jnp.concatenate([x[:, 1:], mask_tokens], axis=1), ids_restore)
    x = jnp.concatenate([x[:, :1], tokens], axis=1)
    x = x + jnp.asarray(sincos_2d(x.shape[-1], self.cfg.grid)).astype(x.dtype)
    x = layers.run_blocks(self.blocks, x, self.cfg.remat, remat_policy=self.cfg.remat_policy,
                          scan=self.cfg.scan_blocks)
    return self.pred(self.norm(x))[:, 1:]

"""The fine-tuning / probing classifier: a ViT encoder with a linear head (docs/evaluation.md).

Readout "cls": the cls token after the encoder's final LayerNorm (the released recipe).
Readout "mean": MAE's `global_pool=True` branch: the mean of the last block's patch tokens
(before the encoder's final LayerNorm, which this readout leaves unused), then a fresh `fc_norm`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from vicmae_jax.models import layers
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.models.vicmae import pool
from vicmae_jax.models.vit import ViTEncoder

HEAD_INIT_STD = 2e-5


def classifier_model_config(cfg: ModelConfig) -> ModelConfig:
  """The encoder config for fine-tuning: trainable position table, no masking involved, an
  "auto" dtype resolved for the platform being built for (`ModelConfig.for_platform`)."""
  return dataclasses.replace(cfg, learned_pos_embed=True).resolve().for_platform()


class Classifier(nnx.Module):
  """ViTEncoder + (fc_norm when mean-pooling) + Linear head with trunc-normal(2e-5) init."""

  def __init__(self, cfg: ModelConfig, num_classes: int, *, readout: str = "cls",
               drop_path_rate: float = 0.0, rngs: nnx.Rngs):
    if readout not in ("cls", "mean"):
      raise ValueError(f"readout must be 'cls' or 'mean', got {readout!r}")
    self.cfg = classifier_model_config(cfg)
    self.readout = readout
    self.drop_path_rate = drop_path_rate
    self.encoder = ViTEncoder(self.cfg, rngs=rngs)
    dtype = jnp.dtype(self.cfg.dtype)
    if readout == "mean":
      self.fc_norm = layers.layer_norm(self.cfg.width, dtype=dtype, rngs=rngs)
    # timm's trunc_normal_(std) truncates at +-2 (absolute), i.e. effectively a plain normal here.
    self.head = nnx.Linear(self.cfg.width, num_classes,
                           kernel_init=nnx.initializers.truncated_normal(HEAD_INIT_STD),
                           bias_init=nnx.initializers.zeros_init(), dtype=dtype,
                           param_dtype=jnp.float32, rngs=rngs)

  def features(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """[N, H, W, 3] -> [N, D] pre-head features; `rng` enables drop path (training)."""
    mean = self.readout == "mean"
    tokens = self.encoder(images, drop_path_rate=self.drop_path_rate, drop_path_rng=rng,
                          final_norm=not mean)
    feats = pool(tokens, self.readout)
    return self.fc_norm(feats) if mean else feats

  def __call__(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Logits [N, num_classes] in float32."""
    return self.head(self.features(images, rng)).astype(jnp.float32)

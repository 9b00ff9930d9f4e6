"""Analytic FLOP model of a ViC-MAE step (FLOP = 2 x MAC, train = 3 x fwd; the conventions are in
docs/decisions.md#benchmark-conventions-and-goals).

Used as a cross-check of XLA's cost analysis and for MFU where no compiled step is at hand.
"""
from __future__ import annotations

from vicmae_jax.models.config import ModelConfig


def transformer_fwd(tokens: int, dim: int, depth: int, mlp_dim: int) -> float:
  """Forward FLOPs of `depth` pre-norm blocks on one sequence (matmuls and attention only)."""
  per_block = (2 * tokens * dim * 3 * dim      # fused qkv
               + 2 * 2 * tokens * tokens * dim  # scores and weighted values
               + 2 * tokens * dim * dim         # output projection
               + 2 * 2 * tokens * dim * mlp_dim)  # MLP
  return depth * per_block


def mlp_head_fwd(dims: list[int]) -> float:
  return sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))


def encoder_fwd(cfg: ModelConfig, visible: int) -> float:
  """Patch embedding of the visible patches + blocks on cls + visible tokens."""
  return (2 * visible * cfg.patch_dim * cfg.width
          + transformer_fwd(1 + visible, cfg.width, cfg.depth, cfg.mlp_dim))


def decoder_fwd(cfg: ModelConfig) -> float:
  tokens = 1 + cfg.num_patches
  return (2 * (1 + cfg.len_keep) * cfg.width * cfg.decoder_width
          + transformer_fwd(tokens, cfg.decoder_width, cfg.decoder_depth, 4 * cfg.decoder_width)
          + 2 * tokens * cfg.decoder_width * cfg.patch_dim)


def train_flops_per_pair(cfg: ModelConfig) -> float:
  """Training FLOPs of one pair (two views): 3 x forward of the online branch, plus the forward
  of the target branch in `ema_target` mode."""
  projector = mlp_head_fwd([cfg.width, cfg.projector_hidden, cfg.projector_hidden, cfg.projector_out])
  online_view = encoder_fwd(cfg, cfg.len_keep) + decoder_fwd(cfg) + projector
  total = 2 * 3 * online_view
  if cfg.has_target_branch:
    predictor = mlp_head_fwd([cfg.projector_out, cfg.predictor_hidden, cfg.projector_out])
    visible = cfg.num_patches if cfg.target_sees_full_view else cfg.len_keep
    total += 2 * (3 * predictor + encoder_fwd(cfg, visible) + projector)
  return float(total)

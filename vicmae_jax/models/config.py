"""Model hyper-parameters: one frozen dataclass and the table of ViT variants.

Everything that decides a parameter shape lives here, so abstract shapes, parameter counts, the
PyTorch key mapping and the FLOP model all read one object.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from vicmae_jax import hardware

ContrastiveMode = Literal["ema_target", "shared_projector"]
REMAT_POLICIES = ("full", "dots")
Pooling = Literal["mean", "cls", "max"]


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
  width: int
  depth: int
  heads: int
  mlp_dim: int
  patch: int


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
  width: int
  depth: int
  heads: int


# Encoders as in the MAE / ViC-MAE constructors (docs/decisions.md#encoder); g/14 as timm's
# vit_giant_patch14 (MLP 6144). "test" is a tiny model for unit tests.
ENCODERS: dict[str, EncoderSpec] = {
    "test": EncoderSpec(width=32, depth=2, heads=2, mlp_dim=128, patch=4),
    "Ti/16": EncoderSpec(width=192, depth=12, heads=3, mlp_dim=768, patch=16),
    "S/16": EncoderSpec(width=384, depth=12, heads=6, mlp_dim=1536, patch=16),
    "B/16": EncoderSpec(width=768, depth=12, heads=12, mlp_dim=3072, patch=16),
    "L/16": EncoderSpec(width=1024, depth=24, heads=16, mlp_dim=4096, patch=16),
    "H/14": EncoderSpec(width=1280, depth=32, heads=16, mlp_dim=5120, patch=14),
    "g/14": EncoderSpec(width=1408, depth=40, heads=16, mlp_dim=6144, patch=14),
}

# MAE decoders (docs/decisions.md#decoder): S uses 256 x 8, the big encoders 512 x 8. Ti gets a small
# 192 x 4 decoder (the model the CPU tests use).
DECODERS: dict[str, DecoderSpec] = {
    "test": DecoderSpec(width=16, depth=1, heads=2),
    "Ti/16": DecoderSpec(width=192, depth=4, heads=6),
    "S/16": DecoderSpec(width=256, depth=8, heads=8),
    "B/16": DecoderSpec(width=512, depth=8, heads=16),
    "L/16": DecoderSpec(width=512, depth=8, heads=16),
    "H/14": DecoderSpec(width=512, depth=8, heads=16),
    "g/14": DecoderSpec(width=512, depth=8, heads=16),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """All architecture choices of a ViC-MAE model.

  Encoder/decoder sizes default to the variant's table entries; any `None` field is filled from
  the table by `resolve()`, so configs can override single values (e.g. a shallower decoder).
  """

  variant: str = "B/16"
  image_size: int = 224
  mask_ratio: float = 0.5
  # Encoder overrides (None = take from the variant table).
  width: int | None = None
  depth: int | None = None
  heads: int | None = None
  mlp_dim: int | None = None
  patch: int | None = None
  # Decoder.
  decoder_width: int | None = None
  decoder_depth: int | None = None
  decoder_heads: int | None = None
  # Global representation and heads (docs/decisions.md#global-representation-and-heads).
  pooling: Pooling = "mean"
  contrastive_mode: ContrastiveMode = "ema_target"
  projector_hidden: int = 4096
  projector_out: int = 128
  predictor_hidden: int = 4096
  # None: BatchNorm statistics over the whole (micro-)batch of one view (docs/decisions.md, D9); an int mimics the
  # released per-GPU BatchNorm by normalising groups of that many samples.
  bn_group_size: int | None = None
  # docs/decisions.md, D2: the target encoder sees the online branch's visible tokens unless this is True.
  target_sees_full_view: bool = False
  # Numerics and memory. `dtype` is the compute dtype of activations and GEMMs; params are always
  # float32, and losses, softmax, norm statistics, BatchNorm and the EMA stay float32 whatever it
  # is. "auto": bfloat16 on TPU and GPU, float32 on CPU, resolved once from the platform of the
  # mesh the model is built for (`for_platform`, hardware.resolve_dtype); an explicit float32,
  # bfloat16 or float16 is used on every platform.
  dtype: str = "auto"
  remat: bool = False
  # What a rematerialised block keeps for the backward pass: "full" keeps only its input and
  # recomputes everything; "dots" also keeps the outputs of its weight matmuls (qkv, projection,
  # MLP) and recomputes the rest (norms, GELU, attention): less recompute, more memory.
  remat_policy: str = "full"
  # Run the transformer blocks as one lax.scan over depth (same numbers, same parameter layout):
  # trades compile time that no longer grows with depth for a per-step copy of the stacked
  # block params (and their gradients).
  scan_blocks: bool = False
  # None: models.attention.attention (XLA); else passed to jax.nn.dot_product_attention ("cudnn")
  attention_impl: str | None = None
  # Fine-tuning reuses the encoder with a trainable position embedding.
  learned_pos_embed: bool = False

  def resolve(self) -> "ModelConfig":
    """Returns a copy with every `None` size filled from the variant table."""
    if self.variant not in ENCODERS:
      raise ValueError(f"Unknown model variant {self.variant!r}; choose one of {sorted(ENCODERS)}.")
    enc, dec = ENCODERS[self.variant], DECODERS[self.variant]
    fill = {
        "width": enc.width, "depth": enc.depth, "heads": enc.heads, "mlp_dim": enc.mlp_dim,
        "patch": enc.patch, "decoder_width": dec.width, "decoder_depth": dec.depth,
        "decoder_heads": dec.heads,
    }
    out = dataclasses.replace(
        self, **{k: v for k, v in fill.items() if getattr(self, k) is None})
    out.validate()
    return out

  @property
  def has_target_branch(self) -> bool:
    """What the contrastive mode decides about the model: `ema_target` adds a predictor and an
    EMA target encoder + projector (InfoNCE against the target); `shared_projector` has neither
    (NT-Xent between the two views' projections)."""
    return self.contrastive_mode == "ema_target"

  def validate(self) -> None:
    """Raises ValueError on values that cannot build a model, before anything is compiled."""
    if not 0.0 < self.mask_ratio < 1.0:
      raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}.")
    if self.image_size % self.patch:
      raise ValueError(f"image_size {self.image_size} is not a multiple of patch {self.patch}.")
    if self.width % self.heads or self.decoder_width % self.decoder_heads:
      raise ValueError("width must be divisible by heads (encoder and decoder).")
    if self.width % 4 or self.decoder_width % 4:
      raise ValueError("2-D sin-cos position embeddings need widths divisible by 4.")
    if self.pooling not in ("mean", "cls", "max"):
      raise ValueError(f"pooling must be mean, cls or max, got {self.pooling!r}.")
    if self.contrastive_mode not in ("ema_target", "shared_projector"):
      raise ValueError(f"contrastive_mode must be ema_target or shared_projector, "
                       f"got {self.contrastive_mode!r}.")
    if self.dtype != "auto" and self.dtype not in hardware.DTYPES:
      raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}.")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy must be one of {sorted(REMAT_POLICIES)}, "
                       f"got {self.remat_policy!r}.")
    if self.len_keep < 1:
      raise ValueError(f"mask_ratio {self.mask_ratio} leaves no visible patch.")

  def for_platform(self, platform: str | None = None) -> "ModelConfig":
    """A copy with a concrete `dtype`: "auto" resolved for `platform` (default: the platform of
    the program being built, `hardware.target_platform`); an explicit dtype is kept. The
    trainers call it once with their mesh's platform; the models call it when built, so a
    config that reaches them unresolved (a model built directly) gets its platform's dtype."""
    if self.dtype != "auto":
      return self
    platform = platform or hardware.target_platform()
    return dataclasses.replace(self, dtype=hardware.resolve_dtype(self.dtype, platform))

  @property
  def grid(self) -> int:
    return self.image_size // self.patch

  @property
  def num_patches(self) -> int:
    return self.grid * self.grid

  @property
  def len_keep(self) -> int:
    # int() truncation as in the released code (docs/decisions.md#masking).
    return int(self.num_patches * (1.0 - self.mask_ratio))

  @property
  def patch_dim(self) -> int:
    return self.patch * self.patch * 3


def model_config(variant: str = "B/16", **overrides) -> ModelConfig:
  """Builds and resolves a ModelConfig for `variant` with field overrides."""
  return ModelConfig(variant=variant, **overrides).resolve()

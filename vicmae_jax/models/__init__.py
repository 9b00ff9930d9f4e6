"""ViC-MAE model family: config table, ViT encoder, MAE decoder, heads, composed model."""
from vicmae_jax.models.config import DECODERS, ENCODERS, ModelConfig, model_config
from vicmae_jax.models.vicmae import (ONLINE_PARAMS, TARGET_PARAMS, Outputs, TargetBranch, ViCMAE,
                                      count_params, interleave, merge_model, per_view, pool,
                                      split_model)
from vicmae_jax.models.vit import MAEDecoder, ViTEncoder

__all__ = [
    "DECODERS", "ENCODERS", "ModelConfig", "model_config", "ONLINE_PARAMS", "TARGET_PARAMS",
    "Outputs", "TargetBranch", "ViCMAE", "count_params", "interleave", "per_view", "pool",
    "split_model",
    "merge_model", "MAEDecoder", "ViTEncoder",
]

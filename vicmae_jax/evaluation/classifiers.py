"""The fine-tuning models of a config: the image or video classifier with its initial weights.

The architecture is the config's, or the init source's when `init.use_source_arch` (a
pretraining workdir or an export records it); the encoder is loaded from `init`
(evaluation/init.py), and a video model inflates the loaded image encoder to tubelets.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from vicmae_jax import hardware
from vicmae_jax.evaluation import init as init_lib
from vicmae_jax.evaluation.config import EvalConfig, eval_config
from vicmae_jax.models import video_classifier
from vicmae_jax.models.classifier import Classifier
from vicmae_jax.models.config import ModelConfig

_ARCH_FIELDS = ("variant", "width", "depth", "heads", "mlp_dim", "patch")


def resolve_model_config(config: EvalConfig | ml_collections.ConfigDict) -> ModelConfig:
  """The config's model, with the architecture of the init source when `init.use_source_arch`."""
  config = eval_config(config)
  cfg = config.model
  if config.init.source in ("workdir", "export") and config.init.use_source_arch:
    src = init_lib.source_model_config(config.init.source, config.init.path)
    cfg = dataclasses.replace(cfg, **{k: getattr(src, k) for k in _ARCH_FIELDS}).resolve()
  return cfg


def for_mesh(model_cfg: ModelConfig, mesh) -> ModelConfig:
  """`model_cfg` with a concrete compute dtype for the platform of `mesh` ("auto": bfloat16 on TPU
  and GPU, float32 on CPU; an explicit dtype is kept), and the log line saying which: the
  fine-tuning trainer resolves it once, after the mesh exists and before building the model."""
  logging.info("%s", hardware.dtype_line(model_cfg.dtype, mesh))
  return model_cfg.for_platform(hardware.platform_of(mesh))


def build_classifier(config: EvalConfig | ml_collections.ConfigDict, model_cfg: ModelConfig,
                     num_classes: int) -> Classifier:
  config = eval_config(config)
  return Classifier(model_cfg, num_classes, readout=config.head.readout,
                    drop_path_rate=config.head.drop_path,
                    rngs=nnx.Rngs(params=jax.random.PRNGKey(config.seed)))


def new_video_model(config: EvalConfig, model_cfg: ModelConfig, num_classes: int):
  return video_classifier.VideoClassifier(
      model_cfg, num_classes, num_frames=config.video.num_frames, tubelet=config.video.tubelet,
      drop_path_rate=config.head.drop_path, head_dropout=config.video.head_dropout,
      rngs=nnx.Rngs(params=jax.random.PRNGKey(config.seed)))


def build_video_model(config: EvalConfig | ml_collections.ConfigDict, model_cfg: ModelConfig,
                      num_classes: int):
  """VideoClassifier with the image encoder of `config.init` inflated to tubelets."""
  config = eval_config(config)
  model = new_video_model(config, model_cfg, num_classes)
  if config.init.source == "none":
    return model, None
  image = build_classifier(config, model_cfg, 1)
  report = init_lib.init_encoder(image, config.init.source, config.init.path,
                                 config.init.layout or None)
  encoder = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(image.encoder, nnx.Param)))
  loaded = video_classifier.init_from_image_encoder(model, encoder)
  logging.info("video model initialised from the image encoder: %s", loaded)
  return model, report


def _with_source(config: EvalConfig, source: str) -> EvalConfig:
  return dataclasses.replace(config, init=dataclasses.replace(config.init, source=source))


def initial_model(config: EvalConfig, model_cfg: ModelConfig, num_classes: int,
                   resuming: bool) -> tuple[nnx.Module, Any]:
  """The classifier with its initial weights, and the init report (None when resuming: the
  checkpoint overwrites everything, so the init source is not read)."""
  if config.is_video:
    return build_video_model(_with_source(config, "none") if resuming else config, model_cfg,
                             num_classes)
  model = build_classifier(config, model_cfg, num_classes)
  report = None if resuming else init_lib.init_encoder(
      model, config.init.source, config.init.path, config.init.layout or None)
  return model, report

"""The one place that reads a pretraining ConfigDict: typed settings out, every check up front.

`validate` runs before anything is built or compiled and raises one `ConfigError` naming every
problem, so a typo or an impossible batch size costs seconds, not a compile.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from vicmae_jax import optim
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.train_state import StepConfig

DATA_DOCS = "docs/data.md"
_SIZE_FIELDS = ("width", "depth", "heads", "mlp_dim", "patch", "decoder_width", "decoder_depth",
                "decoder_heads")
# Source kinds whose `path` (and `root`) must exist on local disk.
_LOCAL_KINDS = ("kinetics_csv", "video_csv", "ssv2", "mit", "video_folder", "image_folder",
                "image_csv", "frames")


class ConfigError(ValueError):
  """A config that cannot run; the message lists every problem found."""


def model_config(c: ml_collections.ConfigDict) -> ModelConfig:
  """ConfigDict.model -> resolved ModelConfig (0 / '' mean "from the variant table" / None)."""
  m = dict(c.model)
  for key in _SIZE_FIELDS:
    if not m.get(key):
      m[key] = None
  m["bn_group_size"] = m.get("bn_group_size") or None
  m["attention_impl"] = m.get("attention_impl") or None
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  return ModelConfig(**{k: v for k, v in m.items() if k in known}).resolve()


def step_config(c: ml_collections.ConfigDict, model: ModelConfig, total_steps: int) -> StepConfig:
  return StepConfig(
      patch=model.patch, mode=model.contrastive_mode, total_steps=total_steps,
      temperature=c.loss.temperature, weight_recon=c.loss.weight_recon,
      weight_contrast=c.loss.weight_contrast, contrast_ramp_steps=c.loss.contrast_ramp_steps,
      contrast_start_weight=c.loss.contrast_start_weight, norm_pix=c.loss.norm_pix,
      accum_steps=c.optim.accum_steps, ema_base=c.ema.base, ema_final=c.ema.final)


def schedule(c: ml_collections.ConfigDict, num_examples: int | None) -> optim.Schedule:
  """Steps per epoch (from the dataset size and the batch), total and warm-up steps."""
  if c.steps_per_epoch:
    per_epoch = c.steps_per_epoch
  elif num_examples:
    per_epoch = max(num_examples // c.batch_size, 1)
  else:
    per_epoch = 1
  return optim.schedule(per_epoch, num_epochs=c.num_epochs, warmup_epochs=c.optim.warmup_epochs,
                        total_steps=c.total_steps)


def input_config(c: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The pipeline's config: sources with `demo` expanded, image size taken from the model."""
  from vicmae_jax import data
  cfg = c.input.to_dict()
  cfg["image_size"] = c.model.image_size
  sources = []
  for spec in cfg["sources"]:
    if spec.get("kind") == "demo":
      # Media the project makes itself: clips it encodes and photos scikit-image ships.
      root = spec.get("path") or os.path.join(workdir, "demo_data")
      sources += data.demo_config(root, image_size=c.model.image_size)["sources"]
    else:
      sources.append(spec)
  cfg["sources"] = sources
  return cfg


def _missing_data(c: ml_collections.ConfigDict) -> list[str]:
  problems = []
  for n, spec in enumerate(c.input.sources):
    kind = spec.get("kind")
    if c.synthetic_data or kind not in _LOCAL_KINDS + ("tfds",):
      continue
    # A TFDS source names a dataset, not a path; only its data_dir is on disk.
    keys = ("data_dir",) if kind == "tfds" else ("path", "root", "labels")
    for key in keys:
      path = spec.get(key)
      if not path or "://" in str(path):
        continue
      probe = path.split(",")[0]
      if any(ch in probe for ch in "*?["):
        probe = os.path.dirname(probe)
      if not os.path.exists(probe):
        problems.append(f"input.sources[{n}] ({kind}) {key} {path!r} does not exist; see "
                        f"{DATA_DOCS} for how to prepare this dataset")
  return problems


def validate(c: ml_collections.ConfigDict, device_count: int, process_count: int = 1,
             check_data: bool = True) -> ModelConfig:
  """Checks a pretraining config against the devices; returns the resolved ModelConfig.

  `check_data=False` skips the data checks (compiling for a slice needs no data).
  """
  problems = []
  model = None
  try:
    model = model_config(c)
  except (ValueError, TypeError) as e:
    problems.append(f"model: {e}")
  accum = c.optim.accum_steps
  if accum < 1:
    problems.append(f"optim.accum_steps must be >= 1, got {accum}")
  elif c.batch_size % accum:
    problems.append(f"batch_size {c.batch_size} is not divisible by optim.accum_steps {accum}")
  elif (c.batch_size // accum) % device_count:
    problems.append(f"micro-batch {c.batch_size // accum} (batch_size {c.batch_size} / "
                    f"accum_steps {accum}) is not divisible by the {device_count} devices")
  if c.batch_size % process_count:
    problems.append(f"batch_size {c.batch_size} is not divisible by {process_count} processes")
  data, fsdp = c.mesh.data, c.mesh.fsdp
  if data != -1 and fsdp != -1 and data * fsdp != device_count:
    problems.append(f"mesh data={data} x fsdp={fsdp} != {device_count} devices")
  if model is not None and model.bn_group_size and (c.batch_size // max(accum, 1)) % model.bn_group_size:
    problems.append(f"model.bn_group_size {model.bn_group_size} does not divide the micro-batch")
  if c.mode != "pretrain":
    problems.append(f"mode {c.mode!r} is not a pretraining mode")
  if check_data and not c.synthetic_data and not c.input.sources:
    problems.append(f"input.sources is empty; see {DATA_DOCS} (or set synthetic_data=True)")
  if check_data:
    problems += _missing_data(c)
  if problems:
    raise ConfigError("Invalid config:\n  " + "\n  ".join(problems))
  return model

"""Pretraining configs: ConfigDict in, typed settings out, every check up front.

`PretrainConfig` (frozen dataclasses all the way down) holds every pretraining key with its
default; configs/common.py builds the recipes' ConfigDict from it (`pretrain_defaults`), so every
key is settable from the command line, and `pretrain_config` reads a ConfigDict back, rejecting
keys it does not know. The trainer reads only the typed object. `validate` runs before anything
is built or compiled and raises one `ConfigError` naming every problem, so a typo or an
impossible batch size costs seconds, not a compile.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any

import ml_collections

from vicmae_jax import fs, hardware, optim, paths, typed_config
from vicmae_jax.data.config import InputConfig
from vicmae_jax.ema import EmaConfig
from vicmae_jax.losses import LossConfig
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.run_lib import CheckpointConfig, ProfileConfig
from vicmae_jax.sharding import MeshConfig
from vicmae_jax.train_step import StepConfig

DATA_DOCS = "docs/data.md"
# Source kinds whose `path` (and `root`) must exist on local disk (the demo and the study make
# their own).
_FILE_BACKED = tuple(k for k in paths.FILE_KINDS if k not in ("demo", "study"))


class ConfigError(ValueError):
  """A config that cannot run; the message lists every problem found."""


@dataclasses.dataclass(frozen=True)
class KnnEvalConfig:
  """In-loop readouts on a small labelled split every `every_steps` (0: off), so the curves show
  representation quality as pretraining goes: kNN (k = 20, temperature-weighted votes) and, with
  `probe_epochs` > 0, the project's linear probe (BatchNorm + linear head; SGD by default, MAE's
  LARS with probe_optimizer="lars") trained on the same frozen features. `data` is a labelled
  source spec of evaluation/data.py (image_folder, tfds, toy or study)."""

  every_steps: int = 0
  batch_size: int = 64
  k: int = 20
  temperature: float = 0.07
  probe_epochs: int = 0            # 0: kNN only
  probe_batch_size: int = 64       # small splits: several steps per epoch
  probe_base_lr: float = 1.0       # lr = base_lr x batch / 256 (MAE's linear-probe rule)
  # MAE's LARS does not move the head in the few hundred steps of a small split (it stays at
  # chance); SGD with the same head, schedule and momentum does (evaluation/linear_probe.py).
  probe_optimizer: str = "sgd"
  random_control: bool = False     # also read out a freshly initialised encoder (once)
  data: dict = dataclasses.field(
      default_factory=lambda: dict(kind="image_folder", train="", val=""))

  def __post_init__(self):
    # Checked here, at start-up: the probe first runs at the first readout, steps into training.
    from vicmae_jax.evaluation import linear_probe
    typed_config.check(**{f"probe_optimizer in {linear_probe.OPTIMIZERS}":
                          self.probe_optimizer in linear_probe.OPTIMIZERS})


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  """Every pretraining setting; the released ViC-MAE recipe with ViT-B/16 by default."""

  mode: str = "pretrain"
  seed: int = 0
  model: ModelConfig = ModelConfig()
  loss: LossConfig = LossConfig()
  ema: EmaConfig = EmaConfig()
  optim: optim.OptimConfig = optim.OptimConfig()
  batch_size: int = 4096          # global pairs per optimizer update
  num_epochs: float = 800.0
  steps_per_epoch: int = 0        # 0: dataset size // batch_size
  total_steps: int = 0            # 0: num_epochs * steps_per_epoch
  input: InputConfig = InputConfig()
  synthetic_data: bool = False    # random tensors instead of the pipeline (benchmarks, tests)
  mesh: MeshConfig = MeshConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()
  log_every_steps: int = 50
  image_every_steps: int = 1000   # reconstruction images (0: never)
  num_image_examples: int = 4
  profile: ProfileConfig = ProfileConfig()
  max_consecutive_skipped: int = 5  # non-finite updates in a row before the run stops
  knn_eval: KnnEvalConfig = KnnEvalConfig()

  def __post_init__(self):
    typed_config.check(**run_length_conditions(self))


def run_length_conditions(c) -> dict[str, bool]:
  """Batch and run length checks every training mode shares (pretraining, fine-tuning)."""
  return {"batch_size > 0": c.batch_size > 0, "num_epochs > 0": c.num_epochs > 0,
          "steps_per_epoch >= 0": c.steps_per_epoch >= 0, "total_steps >= 0": c.total_steps >= 0,
          # With epochs deciding the length, a warm-up as long as the run is a typo.
          "optim.warmup_epochs < num_epochs (or an explicit total_steps)":
              bool(c.total_steps) or c.optim.warmup_epochs < c.num_epochs}


def _optional_fields(cls: type) -> set[str]:
  """Fields whose type admits None: a ConfigDict holds them as 0 / '' ("not set")."""
  hints = typing.get_type_hints(cls)
  return {f.name for f in dataclasses.fields(cls) if type(None) in typing.get_args(hints[f.name])}


def model_defaults() -> dict[str, Any]:
  """ModelConfig's defaults as ConfigDict values: None becomes 0 (sizes) or '' (names)."""
  hints = typing.get_type_hints(ModelConfig)
  out = typed_config.to_dict(ModelConfig())
  for name in _optional_fields(ModelConfig):
    if out[name] is None:
      out[name] = "" if str in typing.get_args(hints[name]) else 0
  return out


def pretrain_defaults() -> dict[str, Any]:
  """PretrainConfig's defaults as the nested dict a recipe's ConfigDict starts from (input
  without image_size: pretraining takes it from the model)."""
  out = typed_config.to_dict(PretrainConfig())
  out["model"] = model_defaults()
  del out["input"]["image_size"]
  return out


def model_config(c: ml_collections.ConfigDict) -> ModelConfig:
  """ConfigDict.model -> resolved ModelConfig (0 / '' mean "from the variant table" / None)."""
  m = dict(c.model)
  for key in _optional_fields(ModelConfig):
    if key in m and not m[key]:
      m[key] = None
  return typed_config.from_mapping(ModelConfig, m, "model").resolve()


def pretrain_config(c: ml_collections.ConfigDict, workdir: str) -> PretrainConfig:
  """The typed settings of a pretraining ConfigDict (unknown keys are errors), with the model
  resolved and the input completed by `input_config`."""
  d = c.to_dict()
  d["model"] = model_config(c)
  d["input"] = input_config(c, workdir)
  if "knn_eval" in d and "data" in d["knn_eval"]:
    d["knn_eval"]["data"] = paths.resolve_source(d["knn_eval"]["data"])
  return typed_config.from_mapping(PretrainConfig, d)


def as_pretrain_config(c: PretrainConfig | ml_collections.ConfigDict) -> PretrainConfig:
  """`c` typed (a ConfigDict is read with demo media paths left relative: for building steps)."""
  return c if isinstance(c, PretrainConfig) else pretrain_config(c, "")


def for_mesh(c: PretrainConfig, mesh) -> PretrainConfig:
  """`c` with a concrete model dtype for the platform of `mesh`: "auto" becomes bfloat16 on TPU
  and GPU, float32 on CPU (`hardware.resolve_dtype`); an explicit dtype is kept. The trainer
  calls it once, after the mesh exists, and builds the model, the step and the log from it; the
  checkpoints keep the config as written."""
  return dataclasses.replace(c, model=c.model.for_platform(hardware.platform_of(mesh)))


def step_config(c: PretrainConfig, total_steps: int) -> StepConfig:
  return StepConfig(patch=c.model.patch, contrastive_mode=c.model.contrastive_mode,
                    total_steps=total_steps, loss=c.loss, ema=c.ema,
                    accum_steps=c.optim.accum_steps)


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


def _demo_folder(workdir: str) -> str:
  """Where the demo media are made: WORKDIR/demo_data, or a local cache folder when the workdir
  is in object storage (the media are written with local encoders)."""
  if fs.is_url(workdir):
    return os.path.join(os.path.expanduser("~"), ".cache", "vicmae_jax", "demo_data")
  return os.path.join(workdir, "demo_data")


def input_config(c: ml_collections.ConfigDict, workdir: str) -> InputConfig:
  """The pipeline's typed settings: image size from the model, the demo media (made on first
  use by the pipeline) under WORKDIR/demo_data unless a `demo` source names a path, every file
  path absolute (relative ones are relative to the current directory)."""
  cfg = c.input.to_dict()
  cfg["image_size"] = c.model.image_size
  cfg["sources"] = [paths.resolve_source(
      dict(s, path=s.get("path") or _demo_folder(workdir))
      if s.get("kind") == "demo" else s) for s in cfg["sources"]]
  return InputConfig.of(cfg)


def _missing_data(c: ml_collections.ConfigDict) -> list[str]:
  """Every data path of the sources that names nothing (local or remote: one `fs` call each, so
  a mistyped gs:// bucket or a missing shard is reported before anything is compiled)."""
  problems = []
  for n, spec in enumerate(c.input.sources):
    kind = spec.get("kind")
    if c.synthetic_data or kind not in _FILE_BACKED + ("tfds",):
      continue
    # A TFDS source names a dataset, not a path; only its data_dir is a path.
    keys = ("data_dir",) if kind == "tfds" else ("path", "root", "labels")
    for key in keys:
      value = spec.get(key)
      for part in (str(value).split(",") if value else ()):
        part = part.strip()
        if any(ch in part for ch in "*?["):
          found, what = bool(fs.glob(part)), "matches no file"
        else:
          found, what = fs.exists(part), "does not exist"
        if not found:
          problems.append(f"input.sources[{n}] ({kind}) {key} {part!r} {what}; see "
                          f"{DATA_DOCS} for how to prepare this dataset")
    if kind == "frames" and spec.get("path") and fs.isdir(spec["path"]) and not fs.glob(
        fs.join(spec["path"], "*.array_record")):
      problems.append(f"input.sources[{n}] (frames) path {spec['path']!r} holds no "
                      f"*.array_record shards; see {DATA_DOCS} (tools.extract_frames)")
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
  if model is not None:
    try:  # every key known, every typed section valid (pair sampling, ...)
      pretrain_config(c, "")
    except (ValueError, TypeError) as e:
      problems.append(str(e))
  if c.mode != "pretrain":
    problems.append(f"mode {c.mode!r} is not a pretraining mode")
  if check_data and not c.synthetic_data and not c.input.sources:
    problems.append(f"input.sources is empty; see {DATA_DOCS} (or set synthetic_data=True)")
  if check_data:
    problems += _missing_data(c)
  if problems:
    raise ConfigError("Invalid config:\n  " + "\n  ".join(problems))
  return model

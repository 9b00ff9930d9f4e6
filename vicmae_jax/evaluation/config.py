"""The typed settings of the evaluation modes: fine-tuning, linear probe, kNN, feature extraction.

`EvalConfig` (frozen dataclasses all the way down, as `config_lib.PretrainConfig` is for
pretraining) holds every key of `configs/finetune_*.py`, `linprobe_*.py` and `knn_*.py` with its
default: the released ViT-B/16 ImageNet fine-tuning recipe, MAE's linear probe and k = 20,
T = 0.07 (docs/evaluation.md). configs/eval_common.py starts its ConfigDict from `eval_defaults()`,
so every key is settable from the command line; `eval_config` reads a ConfigDict back, rejecting
keys it does not know (by path), and the trainers read only the typed object.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from vicmae_jax import config_lib, optim, paths, typed_config
from vicmae_jax.data.config import InputConfig
from vicmae_jax.evaluation.init import SOURCES as INIT_SOURCES
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.run_lib import CheckpointConfig
from vicmae_jax.sharding import MeshConfig

MODES = ("finetune", "linprobe", "knn", "extract_features")


@dataclasses.dataclass(frozen=True)
class InitConfig:
  """Where the encoder's weights come from."""

  source: str = "workdir"        # none (random) | workdir | export | pytorch
  path: str = ""                 # the pretraining workdir, export directory or checkpoint file
  layout: str = ""               # a pytorch checkpoint's key layout ('' = detected)
  use_source_arch: bool = True   # the architecture of the source, when it records one


@dataclasses.dataclass(frozen=True)
class HeadConfig:
  """The classifier on the encoder: `readout` cls token or mean of the patch tokens."""

  readout: str = "cls"
  drop_path: float = 0.1


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """A labelled source with a train and a val split (docs/evaluation.md, "Data")."""

  kind: str = "tfds"             # tfds | image_folder | image_csv | toy | kinetics_csv | ssv2 | ...
  name: str = "imagenet2012"     # tfds: the dataset
  train: str = "train"           # the training split: a tfds split name, folder or index file
  val: str = "validation"        # the validation split, likewise
  data_dir: str = ""             # tfds: where the prepared dataset lives
  image_key: str = "image"       # tfds: feature names
  label_key: str = "label"
  root: str = ""                 # index files: the folder relative paths start from
  labels: str = ""               # ssv2: labels.json (template -> class id)
  on_missing: str = "error"      # index rows naming missing files: error | skip
  allow_outside_root: bool = False  # index rows may name files outside `root` (or the CSV's folder)
  threads: int = 16              # read threads per process
  num_workers: int = 0           # Grain worker processes of the training input (0: in-process)
  # Training split: bad inputs replaced and counted as in pretraining (same defaults, one place:
  # data/config.py); evaluation splits leave them out and list them instead.
  bad_input_max_fraction: float = InputConfig.bad_input_max_fraction
  bad_input_min_examples: int = InputConfig.bad_input_min_examples
  bad_input_max_retries: int = InputConfig.bad_input_max_retries
  train_size: int = 0            # toy kinds: examples per split
  val_size: int = 0
  toy: str = "color"             # toy: color | position | stripes
  num_classes: int = 0           # toy: classes
  size: int = 0                  # toy kinds: image side
  frames: int = 16               # toy_video: frames per video
  seed: int = 0                  # toy kinds: generator seed

  def spec(self, **extra: Any) -> dict[str, Any]:
    """The source spec the builders read (`evaluation.data.build_source`, video_data's)."""
    return {**dataclasses.asdict(self), **extra}


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW with layer-wise lr decay; lr = base_lr x batch / 256 (optim.peak_learning_rate)."""

  base_lr: float = 5e-4
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.05
  warmup_epochs: float = 5.0
  min_lr: float = 1e-6
  layer_decay: float = 0.65
  grad_clip: float = 0.0        # global-norm clip (0: off)
  accum_steps: int = 1

  def __post_init__(self):
    optim.check_adamw(self)
    typed_config.check(**{"0 < layer_decay <= 1": 0 < self.layer_decay <= 1})


@dataclasses.dataclass(frozen=True)
class AugConfig:
  """timm's fine-tuning augmentation (the released recipe's values)."""

  rand_augment_n: int = 2        # RandAugment: ops per image
  rand_augment_m: float = 9.0    # ... and their magnitude
  reprob: float = 0.25           # random erasing probability
  mixup: float = 0.8             # mixup alpha (0: off)
  cutmix: float = 1.0            # cutmix alpha (0: off)
  switch_prob: float = 0.5       # cutmix instead of mixup when both are on
  mix_prob: float = 1.0          # batches mixed at all
  smoothing: float = 0.1         # label smoothing
  crop_pct: float = 0.875        # evaluation: centre crop of the resized image
  scale_min: float = 0.08        # RandomResizedCrop's smallest area
  hflip: bool = True             # horizontal flips (off for SSv2's direction classes)


@dataclasses.dataclass(frozen=True)
class VideoConfig:
  """Video fine-tuning: off for images, MAE-ST's K400 recipe otherwise."""

  enabled: bool = False
  num_frames: int = 16           # frames per clip
  stride: int = 4                # frames between sampled frames
  tubelet: int = 2               # frames per patch in time
  sampling: str = "clip"         # clip (a window) | segment (one frame per segment, SSv2)
  test_spatial: int = 3          # test views per video: crops across the frame ...
  test_temporal: int = 7         # ... x clips across the video, averaged per video
  repeat_aug: int = 2            # clips per decoded video, counted in batch_size (an epoch takes
                                 # repeat_aug x the steps)
  head_dropout: float = 0.3      # before the head, training only
  train_crop: str = "rrc"        # rrc (RandomResizedCrop with aug.scale_min) | jitter
  jitter_scales: tuple[int, ...] = (256, 320)  # jitter: short-side range at 224 px, scaled to
                                               # the model's image size, then a random crop
  short_side: int = 320          # decoded frames' short side bound


@dataclasses.dataclass(frozen=True)
class LinprobeConfig:
  """MAE's linear probe (BatchNorm without affine + linear head, LARS), one head per readout."""

  readouts: str = "cls,mean"     # comma-separated: cls and/or mean
  epochs: int = 90
  batch_size: int = 16384        # lr = base_lr x batch_size / 256
  base_lr: float = 0.1
  warmup_epochs: int = 10
  weight_decay: float = 0.0
  trust_coefficient: float = 0.001  # LARS
  augment: bool = True           # True: MAE's protocol, a fresh RandomResizedCrop + flip of every
                                 # image in every epoch; False: features cached once (centre crop)
  scale_min: float = 0.08        # augment: RandomResizedCrop's smallest area


@dataclasses.dataclass(frozen=True)
class KnnConfig:
  """Temperature-weighted kNN votes per readout."""

  readouts: str = "cls,mean"
  k: int = 20
  temperature: float = 0.07


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
  """`extract_features`: the splits written, and ArrayRecord copies besides the .npy files."""

  splits: str = "train,val"
  array_record: bool = False


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Every setting of the evaluation modes (`mode` picks one)."""

  mode: str = "finetune"
  seed: int = 0
  model: ModelConfig = ModelConfig()
  num_classes: int = 0          # 0: from the data source
  init: InitConfig = InitConfig()
  head: HeadConfig = HeadConfig()
  data: DataConfig = DataConfig()
  batch_size: int = 1024
  eval_batch_size: int = 1024
  num_epochs: float = 100.0
  steps_per_epoch: int = 0      # 0: dataset size // batch_size
  total_steps: int = 0          # 0: num_epochs * steps_per_epoch
  optim: OptimConfig = OptimConfig()
  aug: AugConfig = AugConfig()
  video: VideoConfig = VideoConfig()
  eval_every_steps: int = 0     # 0: at the end only
  log_every_steps: int = 50
  # Non-finite updates in a row before the run stops (as pretraining's, same default).
  max_consecutive_skipped: int = config_lib.PretrainConfig.max_consecutive_skipped
  mesh: MeshConfig = MeshConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()
  linprobe: LinprobeConfig = LinprobeConfig()
  knn: KnnConfig = KnnConfig()
  features: FeaturesConfig = FeaturesConfig()

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
    if self.init.source not in INIT_SOURCES:
      raise ValueError(f"init.source must be one of {INIT_SOURCES}, got {self.init.source!r}")
    typed_config.check(**config_lib.run_length_conditions(self),
                       **{"eval_batch_size > 0": self.eval_batch_size > 0})

  @property
  def is_video(self) -> bool:
    return self.video.enabled


def eval_defaults() -> dict[str, Any]:
  """EvalConfig's defaults as the nested dict an evaluation recipe's ConfigDict starts from."""
  out = typed_config.to_dict(EvalConfig())
  out["model"] = config_lib.model_defaults()
  return out


def eval_config(c: EvalConfig | ml_collections.ConfigDict) -> EvalConfig:
  """The typed settings of an evaluation ConfigDict (unknown keys are errors, by path), with the
  model resolved; an EvalConfig is returned as it is."""
  if isinstance(c, EvalConfig):
    return c
  d = c.to_dict()
  d["model"] = config_lib.model_config(c)
  # File paths absolute, once (relative ones are relative to the current directory).
  d["data"] = paths.resolve_source(d.get("data", {}))
  if isinstance(d.get("init", {}).get("path"), str):
    d["init"]["path"] = paths.resolve(d["init"]["path"])
  try:
    return typed_config.from_mapping(EvalConfig, d)
  except ValueError as e:
    raise config_lib.ConfigError(f"Invalid config: {e}") from e

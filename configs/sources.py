"""Dataset source builders and the argument syntax shared by the named pretraining configs.

Every builder returns one `input.sources` entry (vicmae_jax/data/pipeline.py) laid out as in
docs/data.md under a data root. `weight` is left unset on purpose: the pipeline then mixes
sources in their natural proportions, as the released code's single combined dataset did
(docs/decisions.md#data-augmentations-and-mixing).

Argument syntax (after the colon: `--config=configs/vitl_k400.py:frames,data_root=/data`):

  tiny                 tiny local smoke variant: tiny ViT, bundled demo media, 4 steps
  data_root=DIR        dataset root (default: $VICMAE_DATA_ROOT, else ./data)
  frames               pre-extracted ArrayRecord frame shards instead of raw videos
  variant=L/16         ViT variant (configs that train more than one size)
  imagenet=folder|tfds ImageNet-1k as an image folder (default) or through TFDS
  imagenet_folder=DIR  the ImageNet train folder (default: {data_root}/imagenet/train)
  tfds_data_dir=DIR    TFDS data dir (default: $TFDS_DATA_DIR, else {data_root}/tensorflow_datasets)
"""
from __future__ import annotations

import logging
import os
from typing import Any

import ml_collections

from configs import common

DEFAULT_DATA_ROOT = "./data"
# Kinetics versions and the folder each lives in under the data root (docs/data.md section 2).
KINETICS_DIRS = {400: "k400", 600: "k600", 700: "k700"}


def default_data_root() -> str:
  return os.environ.get("VICMAE_DATA_ROOT") or DEFAULT_DATA_ROOT


def parse_args(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """`common.parse_arg` with the shared keys (tiny, data_root, frames) added.
  """
  shared = dict(tiny=False, data_root=default_data_root(), frames=False)
  shared.update(defaults)
  return common.parse_arg(arg, **shared)


def imagenet_args() -> dict[str, Any]:
  """Defaults of the ImageNet arguments, for configs that train on IN1K."""
  return dict(imagenet="folder", imagenet_folder="", tfds_data_dir="")


def kinetics(data_root: str, version: int = 400, frames: bool = False) -> dict[str, Any]:
  """Kinetics-{400,600,700} train split: the official CSV and trimmed clips, or frame shards."""
  name = KINETICS_DIRS[version]
  if frames:
    return dict(kind="frames", path=os.path.join(data_root, f"{name}_frames", "train"),
                name=name)
  # Videos vanish from YouTube, so every copy misses some CSV rows: skip them with a logged count.
  return dict(kind="kinetics_csv", path=os.path.join(data_root, name, "annotations", "train.csv"),
              root=os.path.join(data_root, name, "train"), on_missing="skip", name=name)


def moments_in_time(data_root: str, frames: bool = False) -> dict[str, Any]:
  """Moments in Time v1 training clips (class folders of 3-s mp4), or frame shards."""
  if frames:
    return dict(kind="frames", path=os.path.join(data_root, "mit_frames", "train"), name="mit")
  return dict(kind="mit", path=os.path.join(data_root, "Moments_in_Time_Raw", "training"),
              name="mit")


def imagenet(data_root: str, args: ml_collections.ConfigDict) -> dict[str, Any]:
  """ImageNet-1k train: an ImageFolder tree (default) or TFDS `imagenet2012`.

  The folder is the default because `config_lib.validate` checks local paths up front, so a
  missing ImageNet fails before anything compiles; TFDS sources are only opened by the pipeline.
  """
  if args.imagenet == "tfds":
    data_dir = (args.tfds_data_dir or os.environ.get("TFDS_DATA_DIR")
                or os.path.join(data_root, "tensorflow_datasets"))
    return dict(kind="tfds", path="imagenet2012", split="train", data_dir=data_dir, name="in1k")
  if args.imagenet != "folder":
    raise ValueError(f"imagenet must be 'folder' or 'tfds', got {args.imagenet!r}.")
  path = args.imagenet_folder or os.path.join(data_root, "imagenet", "train")
  return dict(kind="image_folder", path=path, name="in1k")


def finish(c: ml_collections.ConfigDict, args: ml_collections.ConfigDict,
           sources: list[dict[str, Any]]) -> ml_collections.ConfigDict:
  """Installs the sources, or the tiny smoke variant (which replaces them with demo media)."""
  c.input.sources = sources
  if args.tiny:
    common.tiny_overrides(c)
    defaults = dict(data_root=default_data_root(), frames=False, **imagenet_args())
    ignored = [f"{k}={args[k]}" for k, v in defaults.items() if k in args and args[k] != v]
    if ignored:
      logging.warning("tiny: the smoke variant trains on the bundled demo media; ignored: %s",
                      ", ".join(ignored))
  return c

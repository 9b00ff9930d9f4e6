"""Defaults shared by every pretraining config, and `:key=value` argument parsing.

A config file defines `get_config(arg=None) -> ml_collections.ConfigDict`. The optional argument
comes after a colon on the command line (`--config=configs/vitl_k400.py:tiny`), as in big_vision.
"""
from __future__ import annotations

import ml_collections

from vicmae_jax import config_lib


def parse_arg(arg: str | None, *, strict: bool = True, **defaults) -> ml_collections.ConfigDict:
  """'tiny,variant=S/16,batch=64' -> ConfigDict(tiny=True, variant='S/16', batch=64).

  Values are cast to the type of the default given for the key; bare words are True flags. A key
  without a default is an error naming the known ones (a mistyped `:tyny` must not silently run
  the full recipe), unless `strict=False` (a config that hands the rest to another one).
  """
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  keys = [item.partition("=")[0] for item in arg.split(",") if item]
  unknown = sorted(set(keys) - set(defaults))
  if strict and unknown:
    raise ValueError(f"Unknown config argument(s) {unknown}; known: {sorted(defaults)}.")
  for item in arg.split(","):
    if not item:
      continue
    key, sep, value = item.partition("=")
    if not sep:
      out[key] = True
      continue
    default = defaults.get(key)
    if isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    elif default is not None:
      out[key] = type(default)(value)
    else:
      out[key] = value
  return out


def base_config() -> ml_collections.ConfigDict:
  """The released ViC-MAE recipe with ViT-B/16: every pretraining key at its default.

  The keys, defaults and their meaning live in `vicmae_jax.config_lib.PretrainConfig` (and the
  dataclasses it holds: ModelConfig, LossConfig, EmaConfig, OptimConfig, InputConfig, ...); model
  sizes of 0 and empty names mean "from the variant table". Recipe files override what differs.
  """
  c = ml_collections.ConfigDict(config_lib.pretrain_defaults())
  c.input.num_workers = 8       # the recipe decodes in 8 worker processes per host
  return c


def tiny_overrides(c: ml_collections.ConfigDict, workdir_data: str = "") -> ml_collections.ConfigDict:
  """Shrinks a recipe for a local smoke run: tiny ViT, small images, the bundled demo media."""
  c.model.update(variant="test", image_size=32, width=64, depth=2, heads=4, mlp_dim=256, patch=8,
                 decoder_width=32, decoder_depth=1, decoder_heads=4, projector_hidden=128,
                 predictor_hidden=128)
  c.batch_size = 16
  c.total_steps = 4
  c.optim.warmup_epochs = 0.0
  c.input.sources = [dict(kind="demo", path=workdir_data)]
  c.input.num_workers = 0
  c.input.read_threads = 1
  c.input.bad_input_min_examples = 50
  c.checkpoint.every_steps = 2
  c.log_every_steps = 1
  c.image_every_steps = 2
  return c

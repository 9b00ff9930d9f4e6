"""Defaults shared by every pretraining config, and `:key=value` argument parsing.

A config file defines `get_config(arg=None) -> ml_collections.ConfigDict`. The optional argument
comes after a colon on the command line (`--config=configs/vitl_k400.py:tiny`), as in big_vision.
"""
from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'tiny,variant=S/16,batch=64' -> ConfigDict(tiny=True, variant='S/16', batch=64).

  Values are cast to the type of the default given for the key; bare words are True flags.
  """
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
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
  """The released ViC-MAE recipe (SPEC.md 6.1) with ViT-B/16; files override what differs."""
  c = ml_collections.ConfigDict()
  c.mode = "pretrain"
  c.seed = 0

  # Zeros mean "take the variant's table value"; bn_group_size 0 means whole-batch BatchNorm (D9).
  c.model = ml_collections.ConfigDict(dict(
      variant="B/16", image_size=224, mask_ratio=0.5, pooling="mean",
      contrastive_mode="ema_target", projector_hidden=4096, projector_out=128,
      predictor_hidden=4096, bn_group_size=0, target_sees_full_view=False, dtype="float32",
      remat=False, remat_policy="full", attention_impl="", width=0, depth=0, heads=0, mlp_dim=0,
      patch=0,
      decoder_width=0, decoder_depth=0, decoder_heads=0))
  c.loss = ml_collections.ConfigDict(dict(
      temperature=0.1, weight_recon=0.97, weight_contrast=0.03, contrast_ramp_steps=0,
      contrast_start_weight=0.0, norm_pix=True))
  c.ema = ml_collections.ConfigDict(dict(base=0.996, final=1.0))
  c.optim = ml_collections.ConfigDict(dict(
      base_lr=1.5e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.05, warmup_epochs=40.0,
      min_lr=0.0, grad_clip=0.0, accum_steps=1))

  c.batch_size = 4096           # global pairs per optimizer update
  c.num_epochs = 800.0
  c.steps_per_epoch = 0         # 0: dataset size // batch_size
  c.total_steps = 0             # 0: num_epochs * steps_per_epoch

  # Input pipeline (vicmae_jax/data/pipeline.py documents every key); image_size comes from model.
  c.input = ml_collections.ConfigDict(dict(
      sources=[], pair_sampling=dict(mode="distant", gap=32, gap_max=64, unit="frames"),
      repeated_sampling=1, video_spatial_only=False, num_workers=8, read_threads=2,
      worker_buffer_size=2, decode_threads=1, max_side=1024, bad_input_max_fraction=0.01,
      bad_input_min_examples=500, device_prefetch=2))
  c.synthetic_data = False      # random tensors instead of the pipeline (benchmarks, tests)

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, fsdp_min_mb=4.0))
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, keep=3, async_save=True))
  c.log_every_steps = 50
  c.image_every_steps = 1000
  c.num_image_examples = 4
  c.profile = ml_collections.ConfigDict(dict(start_step=10, num_steps=0))
  c.max_consecutive_skipped = 5
  # In-loop kNN (k = 20, temperature-weighted votes) on a labelled split every N steps, so the
  # curves show representation quality as pretraining goes; 0 = off. `data` is a labelled
  # source spec of vicmae_jax/evaluation/data.py (image_folder, tfds or toy); keep it small.
  c.knn_eval = ml_collections.ConfigDict(dict(
      every_steps=0, batch_size=64, k=20, temperature=0.07,
      data=dict(kind="image_folder", train="", val="")))
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

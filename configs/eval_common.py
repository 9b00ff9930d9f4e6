"""Defaults shared by the evaluation configs (finetune_*.py, linprobe_*.py, knn_*.py).

`base_config(mode)` is the released ViT-B/16 ImageNet fine-tuning recipe; the probe and kNN
sections hold the MAE linear-probe fallback and k = 20, T = 0.07 (all in docs/evaluation.md).
The defaults live in `vicmae_jax.evaluation.config.EvalConfig`.
"""
from __future__ import annotations

import ml_collections

from vicmae_jax.evaluation import config as eval_config


def base_config(mode: str = "finetune") -> ml_collections.ConfigDict:
  """Every evaluation key at its default (`vicmae_jax.evaluation.config.EvalConfig`, where the
  keys, defaults and their meaning live), with `mode` set; recipe files override what differs."""
  c = ml_collections.ConfigDict(eval_config.eval_defaults())
  c.mode = mode
  return c


def tiny(c: ml_collections.ConfigDict, data_dir: str = "") -> ml_collections.ConfigDict:
  """A CPU smoke run: test-size ViT at 32 px on the toy set (or an image folder `data_dir`)."""
  c.model.update(variant="test", image_size=32, width=32, depth=2, heads=2, mlp_dim=64, patch=4)
  c.init.update(source="none")
  if data_dir:
    c.data.update(kind="image_folder", train=f"{data_dir}/train", val=f"{data_dir}/val")
  else:
    c.data.update(kind="toy", toy="color", train_size=128, val_size=60, num_classes=4, size=32)
  c.data.threads = 1
  c.batch_size = 16
  c.eval_batch_size = 24   # does not divide the 60 toy validation images: exercised padding
  c.total_steps = 20
  c.num_epochs = 1.0
  c.optim.warmup_epochs = 0.0
  c.optim.base_lr = 1e-2
  c.checkpoint.update(every_steps=10, async_save=False)
  c.log_every_steps = 5
  # LARS changes each weight by about lr * trust of its norm per step; MAE's ~7,000 steps at
  # lr 6.4 and trust 1e-3 become ~200 steps here, so the tiny probe uses a larger trust ratio.
  c.linprobe.update(epochs=100, batch_size=128, warmup_epochs=5, base_lr=1.0, trust_coefficient=0.1)
  return c


def apply_data_args(c: ml_collections.ConfigDict, args: ml_collections.ConfigDict
                    ) -> ml_collections.ConfigDict:
  """`data=DIR` (an ImageNet-layout folder with train/ and val/) and the `tiny` switch, shared by
  the image evaluation configs; `tiny` keeps an explicit `init=...,path=...`."""
  if args.data:
    c.data.update(kind="image_folder", train=f"{args.data}/train", val=f"{args.data}/val")
  if args.tiny:
    tiny(c, args.data)
    if args.path:
      c.init.update(source=args.init, path=args.path)
  return c

"""Defaults shared by the evaluation configs (finetune_*.py, linprobe_*.py, knn_*.py).

`base_config(mode)` is the released ViT-B/16 ImageNet fine-tuning recipe; the probe and kNN
sections hold the MAE linear-probe fallback and k = 20, T = 0.07 (all in docs/evaluation.md).
"""
from __future__ import annotations

import ml_collections

from configs import common


def base_config(mode: str = "finetune") -> ml_collections.ConfigDict:
  c = common.base_config()
  c.mode = mode
  # Pretraining-only sections stay (shared loaders read them) but are unused here.
  c.num_classes = 0          # 0: from the data source
  c.init = ml_collections.ConfigDict(dict(source="workdir", path="", layout="",
                                          use_source_arch=True))
  c.head = ml_collections.ConfigDict(dict(readout="cls", drop_path=0.1))
  c.data = ml_collections.ConfigDict(dict(
      kind="tfds", name="imagenet2012", train="train", val="validation", data_dir="",
      image_key="image", label_key="label", threads=16, train_size=0, val_size=0, toy="color",
      num_classes=0, size=0, seed=0))
  c.batch_size = 1024
  c.eval_batch_size = 1024
  c.num_epochs = 100.0
  c.steps_per_epoch = 0
  c.total_steps = 0
  c.optim = ml_collections.ConfigDict(dict(
      base_lr=5e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05, warmup_epochs=5.0,
      min_lr=1e-6, layer_decay=0.65, grad_clip=0.0, accum_steps=1))
  c.aug = ml_collections.ConfigDict(dict(
      rand_augment_n=2, rand_augment_m=9.0, reprob=0.25, mixup=0.8, cutmix=1.0,
      switch_prob=0.5, mix_prob=1.0, smoothing=0.1, crop_pct=0.875, scale_min=0.08, hflip=True))
  # Video fine-tuning (docs/evaluation.md): off for image configs; the rest is MAE-ST's K400 recipe.
  # repeat_aug: clips per decoded video, counted in batch_size (steps per epoch x repeat_aug);
  # head_dropout: before the head, training only; train_crop: 'rrc' (RandomResizedCrop with
  # aug.scale_min, MAE-ST) or 'jitter' (short side in jitter_scales, given for 224 px and scaled
  # to the model's image size, then a random crop); short_side bounds the decoded frames.
  c.video = ml_collections.ConfigDict(dict(
      enabled=False, num_frames=16, stride=4, tubelet=2, sampling="clip", test_spatial=3,
      test_temporal=7, repeat_aug=2, head_dropout=0.3, train_crop="rrc", jitter_scales=(256, 320),
      short_side=320))
  c.eval_every_steps = 0      # 0: at the end only (plus once per `eval_every_steps` otherwise)
  c.log_every_steps = 50
  c.checkpoint.every_steps = 1000
  c.linprobe = ml_collections.ConfigDict(dict(
      readouts="cls,mean", epochs=90, batch_size=16384, base_lr=0.1, warmup_epochs=10,
      weight_decay=0.0, trust_coefficient=0.001,
      # True: MAE's protocol, a fresh RandomResizedCrop + flip of every training image in every
      # epoch through the frozen encoder. False: features cached once (centre crop), seconds.
      augment=True, scale_min=0.08))
  c.knn = ml_collections.ConfigDict(dict(readouts="cls,mean", k=20, temperature=0.07))
  c.features = ml_collections.ConfigDict(dict(splits="train,val", array_record=False))
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

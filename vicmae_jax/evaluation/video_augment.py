"""Clip augmentation for video fine-tuning (MAE-ST): one crop box, flip, RandAugment draw and
erasing box for all frames of a training clip; the spatial test crops. uint8 [T, H, W, 3] frames
in; normalised float32 clips out.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from vicmae_jax.data import augment as base_aug
from vicmae_jax.evaluation import augment


def _resize_frames(clip: np.ndarray, height: int, width: int) -> np.ndarray:
  # Area averaging when shrinking (no aliasing), bilinear when enlarging small crops.
  shrink = height * width < clip.shape[1] * clip.shape[2]
  interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
  return np.stack([cv2.resize(np.ascontiguousarray(f), (width, height), interpolation=interp)
                   for f in clip])


def random_resized_crop_clip(clip: np.ndarray, rng: np.random.Generator, size: int,
                             scale: tuple[float, float] = (0.08, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
  """One RandomResizedCrop box (relative area `scale`, aspect `ratio`) for every frame."""
  top, left, h, w = base_aug.crop_box(rng, clip.shape[1], clip.shape[2], scale, ratio)
  return _resize_frames(clip[:, top:top + h, left:left + w], size, size)


def jitter_scales_for(image_size: int, scales: tuple[int, int] = (256, 320),
                      reference: int = 224) -> tuple[int, int]:
  """Short-side jitter range given for `reference` px crops, scaled to `image_size` (never below
  the crop)."""
  return tuple(max(image_size, int(round(s * image_size / reference))) for s in scales)


def short_side_jitter_crop(clip: np.ndarray, rng: np.random.Generator, size: int,
                           scales: tuple[int, int] = (256, 320)) -> np.ndarray:
  """SlowFast's train crop: short side resized to a random length in `scales` (one for the
  clip), then one random size x size crop."""
  short = max(int(round(rng.uniform(*scales))), size)
  h, w = clip.shape[1:3]
  if h <= w:
    nh, nw = short, max(int(math.floor(w * short / h)), short)
  else:
    nh, nw = max(int(math.floor(h * short / w)), short), short
  resized = _resize_frames(clip, nh, nw)
  top, left = int(rng.integers(0, nh - size + 1)), int(rng.integers(0, nw - size + 1))
  return resized[:, top:top + size, left:left + size]


def clip_rand_augment(clip: np.ndarray, rng: np.random.Generator, *, num_ops: int = 2,
                      magnitude: float = 7.0, magnitude_std: float = 0.5, prob: float = 0.5
                      ) -> np.ndarray:
  """RandAugment with one draw per clip (MAE-ST's video RandAugment): the op sequence, each op's
  on/off, magnitude and sign are sampled once and applied identically to every frame, using the
  op implementations of `evaluation.augment` (uint8 [T, H, W, 3] in and out)."""
  frames = [Image.fromarray(np.ascontiguousarray(f)) for f in clip]
  for name in rng.choice(augment.RAND_OPS, size=num_ops, replace=True):
    if rng.random() > prob:
      continue
    m = float(np.clip(rng.normal(magnitude, magnitude_std), 0.0, 10.0)) if magnitude_std > 0 \
        else magnitude
    # The ops draw their sign from the generator they are given: the same seed for every frame
    # gives every frame the same sign.
    op_seed = int(rng.integers(2**63))
    frames = [augment._op(str(name), f, m, np.random.default_rng(op_seed)) for f in frames]
  return np.stack([np.asarray(f) for f in frames])


def clip_random_erasing(x: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
  """MAE-ST's cube erasing on a normalised float clip [T, H, W, C]: one box for all frames,
  fresh per-pixel noise in each (`augment.random_erasing` on the frames stacked on channels)."""
  t, h, w, c = x.shape
  stacked = np.ascontiguousarray(x.transpose(1, 2, 0, 3)).reshape(h, w, t * c)
  out = augment.random_erasing(stacked, rng, prob=prob)
  if out is stacked:
    return x
  return np.ascontiguousarray(out.reshape(h, w, t, c).transpose(2, 0, 1, 3))


def augment_clip(clip: np.ndarray, rng: np.random.Generator, *, size: int, crop: str = "rrc",
                 scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 jitter_scales: tuple[int, int] = (256, 320), hflip: bool = True,
                 rand_augment_n: int = 0, rand_augment_m: float = 7.0,
                 rand_augment_mstd: float = 0.5, reprob: float = 0.0) -> np.ndarray:
  """One training clip: crop ('rrc' | 'jitter') -> flip -> clip RandAugment -> normalise ->
  cube random erasing; uint8 [T, H, W, 3] -> float32 [T, size, size, 3].

  RandAugment runs on the 224 px crop (timm's image order), not on the full frame before the
  crop as MAE-ST does: the same ops at a fraction of the cost.
  """
  if crop == "rrc":
    x = random_resized_crop_clip(clip, rng, size, scale, ratio)
  elif crop == "jitter":
    x = short_side_jitter_crop(clip, rng, size, jitter_scales)
  else:
    raise ValueError(f"unknown video train crop {crop!r} (rrc or jitter)")
  if hflip and rng.random() < 0.5:
    x = x[:, :, ::-1]
  if rand_augment_n > 0:
    x = clip_rand_augment(x, rng, num_ops=rand_augment_n, magnitude=rand_augment_m,
                          magnitude_std=rand_augment_mstd)
  x = base_aug.normalize(x.astype(np.float32)).astype(np.float32)
  if reprob > 0:
    x = clip_random_erasing(x, rng, reprob)
  return x


def spatial_crops(frames: np.ndarray, size: int, num_crops: int = 3) -> list[np.ndarray]:
  """Resize the short side to `size`, then `num_crops` size x size crops spread along the long
  side (3: left/centre/right or top/centre/bottom, as SlowFast / MAE-ST test)."""
  t, h, w, c = frames.shape
  scale = size / min(h, w)
  nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
  resized = np.stack([cv2.resize(f, (nw, nh), interpolation=cv2.INTER_AREA) for f in frames])
  crops = []
  for i in range(num_crops):
    frac = 0.5 if num_crops == 1 else i / (num_crops - 1)
    top = int(round((nh - size) * frac)) if nh > nw else (nh - size) // 2
    left = int(round((nw - size) * frac)) if nw >= nh else (nw - size) // 2
    crops.append(resized[:, top:top + size, left:left + size])
  return crops


def eval_views(clips: np.ndarray, *, size: int, spatial: int = 3) -> list[np.ndarray]:
  """[temporal, T, H, W, 3] uint8 -> temporal x spatial normalised clips (temporal-major)."""
  views = []
  for clip in clips:
    for crop in spatial_crops(clip, size, spatial):
      views.append(base_aug.normalize(crop.astype(np.float32)).astype(np.float32))
  return views

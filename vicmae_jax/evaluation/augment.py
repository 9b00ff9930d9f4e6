"""Host-side (numpy / PIL) fine-tuning augmentations, following timm's `create_transform` recipe.

RandAugment is timm's `rand-m9-mstd0.5-inc1`: the 15 ops of timm's "increasing" set with timm's
magnitude ranges; each of `n` ops (drawn with replacement) is applied with probability 0.5 at a
magnitude drawn from N(m, mstd) clipped to [0, 10], larger magnitude = stronger. Left out:
timm's random choice between bilinear and bicubic resampling in the geometric ops (bilinear). Mixup / CutMix are timm's
`Mixup(mode='batch')` with label smoothing folded into the soft targets.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from vicmae_jax.data import augment as base_aug

_FILL = (128, 128, 128)


def _level(m: float, max_value: float, rng: np.random.Generator, signed: bool = True) -> float:
  v = m / 10.0 * max_value
  return -v if signed and rng.random() < 0.5 else v


def _affine(img: Image.Image, matrix: tuple) -> Image.Image:
  return img.transform(img.size, Image.AFFINE, matrix, resample=Image.BILINEAR, fillcolor=_FILL)


def _op(name: str, img: Image.Image, m: float, rng: np.random.Generator) -> Image.Image:
  w, h = img.size
  if name == "AutoContrast":
    return ImageOps.autocontrast(img)
  if name == "Equalize":
    return ImageOps.equalize(img)
  if name == "Invert":
    return ImageOps.invert(img)
  if name == "Rotate":
    return img.rotate(_level(m, 30.0, rng), resample=Image.BILINEAR, fillcolor=_FILL)
  if name == "Posterize":  # increasing: keep 4 down to 0 bits (timm / TF UDA)
    return posterize(img, 4 - int(m / 10.0 * 4))
  if name == "Solarize":   # increasing: lower threshold at higher magnitude
    return ImageOps.solarize(img, int(256 - m / 10.0 * 256))
  if name == "SolarizeAdd":  # add up to 110 to the pixels below 128
    return solarize_add(img, int(m / 10.0 * 110))
  if name in ("Color", "Contrast", "Brightness", "Sharpness"):
    enhancer = getattr(ImageEnhance, name)(img)
    return enhancer.enhance(1.0 + _level(m, 0.9, rng))
  if name == "ShearX":
    return _affine(img, (1, _level(m, 0.3, rng), 0, 0, 1, 0))
  if name == "ShearY":
    return _affine(img, (1, 0, 0, _level(m, 0.3, rng), 1, 0))
  if name == "TranslateX":
    return _affine(img, (1, 0, _level(m, 0.45, rng) * w, 0, 1, 0))
  if name == "TranslateY":
    return _affine(img, (1, 0, 0, 0, 1, _level(m, 0.45, rng) * h))
  raise ValueError(name)


def posterize(img: Image.Image, bits: int) -> Image.Image:
  """Keeps the top `bits` bits of each value; 0 bits gives black (newer PIL refuses 0)."""
  mask = (0xFF << (8 - bits)) & 0xFF
  return img.point([i & mask for i in range(256)] * len(img.getbands()))


def solarize_add(img: Image.Image, add: int, threshold: int = 128) -> Image.Image:
  """Adds `add` (clipped at 255) to every channel value below `threshold`."""
  lut = [min(255, i + add) if i < threshold else i for i in range(256)]
  return img.point(lut * len(img.getbands()))


RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
            "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
            "TranslateX", "TranslateY")


def rand_augment(img: np.ndarray, rng: np.random.Generator, *, num_ops: int = 2,
                 magnitude: float = 9.0, magnitude_std: float = 0.5, prob: float = 0.5
                 ) -> np.ndarray:
  """timm-style RandAugment on a uint8 HxWx3 image."""
  pil = Image.fromarray(img)
  for name in rng.choice(RAND_OPS, size=num_ops, replace=True):
    if rng.random() > prob:
      continue
    m = float(np.clip(rng.normal(magnitude, magnitude_std), 0.0, 10.0)) if magnitude_std > 0 \
        else magnitude
    pil = _op(str(name), pil, m, rng)
  return np.asarray(pil)


def random_erasing(x: np.ndarray, rng: np.random.Generator, *, prob: float = 0.25,
                   area: tuple[float, float] = (0.02, 1 / 3),
                   log_aspect: tuple[float, float] = (math.log(0.3), math.log(1 / 0.3))
                   ) -> np.ndarray:
  """timm RandomErasing(mode='pixel', count 1) on a normalised float HxWxC image."""
  if rng.random() >= prob:
    return x
  h, w, c = x.shape
  for _ in range(10):
    target = rng.uniform(*area) * h * w
    aspect = math.exp(rng.uniform(*log_aspect))
    eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
    if eh < h and ew < w:
      top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
      x = x.copy()
      x[top:top + eh, left:left + ew] = rng.normal(size=(eh, ew, c)).astype(x.dtype)
      return x
  return x


def train_transform(img: np.ndarray, rng: np.random.Generator, *, size: int,
                    rand_augment_n: int = 2, rand_augment_m: float = 9.0,
                    reprob: float = 0.25, scale: tuple[float, float] = (0.08, 1.0),
                    hflip: bool = True) -> np.ndarray:
  """RRC + flip + RandAugment + normalise + random erasing -> float32 HxWx3."""
  x = base_aug.random_resized_crop(img, rng, size, scale, (3 / 4, 4 / 3))
  if hflip and rng.random() < 0.5:
    x = x[:, ::-1]
  if rand_augment_n > 0:
    x = rand_augment(np.ascontiguousarray(x), rng, num_ops=rand_augment_n,
                     magnitude=rand_augment_m)
  x = base_aug.normalize(x.astype(np.float32)).astype(np.float32)
  if reprob > 0:
    x = random_erasing(x, rng, prob=reprob)
  return x


def eval_transform(img: np.ndarray, *, size: int, crop_pct: float = 0.875) -> np.ndarray:
  """Resize the short side to size / crop_pct (bicubic), centre crop `size`, normalise."""
  h, w = img.shape[:2]
  short = int(math.floor(size / crop_pct))
  if h <= w:
    nh, nw = short, max(int(round(w * short / h)), short)
  else:
    nw, nh = short, max(int(round(h * short / w)), short)
  x = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC)
  top, left = (nh - size) // 2, (nw - size) // 2
  x = x[top:top + size, left:left + size]
  return base_aug.normalize(x.astype(np.float32)).astype(np.float32)


def smooth_one_hot(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
  """Smoothed one-hot targets; a label < 0 (a placeholder for an input that failed to load)
  gets an all-zero row, which adds nothing to the soft-target loss."""
  labels = np.asarray(labels)
  off = smoothing / num_classes
  out = np.full((len(labels), num_classes), off, np.float32)
  out[np.arange(len(labels)), np.maximum(labels, 0)] = 1.0 - smoothing + off
  out[labels < 0] = 0.0
  return out


def mixup_cutmix(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, *,
                 num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, prob: float = 1.0, smoothing: float = 0.1
                 ) -> tuple[np.ndarray, np.ndarray]:
  """timm Mixup(mode='batch'): one lambda per batch, partner = the batch reversed.

  Returns (mixed images, soft targets [B, num_classes]).
  """
  targets = smooth_one_hot(labels, num_classes, smoothing)
  use_mix = mixup_alpha > 0 or cutmix_alpha > 0
  if not use_mix or rng.random() >= prob:
    return images, targets
  use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
  lam = float(rng.beta(cutmix_alpha, cutmix_alpha) if use_cutmix
              else rng.beta(mixup_alpha, mixup_alpha))
  flipped = images[::-1]
  if use_cutmix:
    h, w = images.shape[-3:-1]  # images [B, H, W, C] or clips [B, T, H, W, C]
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    images = images.copy()
    images[..., y0:y1, x0:x1, :] = flipped[..., y0:y1, x0:x1, :]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)  # correct lambda by the real box area
  else:
    images = lam * images + (1.0 - lam) * flipped
  return images.astype(np.float32), (lam * targets + (1.0 - lam) * targets[::-1]).astype(np.float32)

"""The released code's two-view augmentations (docs/data.md section 5), as pure functions of
(frames, numpy Generator).

View 1: random resized crop, flip, colour jitter (p 0.8), grayscale (p 0.2), Gaussian blur (p 1).
View 2: the same but solarisation (p 0.2) instead of blur. Both normalised with ImageNet statistics.
`spatial_only` (docs/decisions.md, D7; for frames) keeps only a crop of scale 0.5-1 and the flip.

Documented deviation (docs/decisions.md#known-deviations-from-the-released-code): the released
code draws one blur sigma per GPU batch; here each image draws its own, because examples are
produced one at a time in data workers.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

cv2.setNumThreads(1)  # data workers are processes: one thread each avoids oversubscription

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  size: int = 224
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip_p: float = 0.5
  jitter_p: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.2
  hue: float = 0.1
  gray_p: float = 0.2
  blur_p: float = 1.0  # view 1 only
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  blur_kernel: tuple[int, int] = (5, 9)  # (x, y) as torchvision GaussianBlur(kernel_size=(5, 9))
  solarize_p: float = 0.2  # view 2 only
  spatial_only: bool = False  # `video_spatial_only` (docs/decisions.md, D7): crop 0.5-1 + flip only
  spatial_only_scale: tuple[float, float] = (0.5, 1.0)
  uint8_output: bool = False  # un-normalised uint8 views; normalise on device with `normalize`


def crop_box(rng: np.random.Generator, height: int, width: int, scale: tuple[float, float],
             ratio: tuple[float, float]) -> tuple[int, int, int, int]:
  """torchvision RandomResizedCrop parameters (top, left, h, w): 10 tries, then a centre crop."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    w, h = int(round(height * ratio[1])), height
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(img: np.ndarray, rng: np.random.Generator, size: int,
                        scale: tuple[float, float], ratio: tuple[float, float]) -> np.ndarray:
  top, left, h, w = crop_box(rng, img.shape[0], img.shape[1], scale, ratio)
  # INTER_AREA as the released (FFCV) code; it averages when shrinking, which avoids aliasing.
  return cv2.resize(img[top:top + h, left:left + w], (size, size), interpolation=cv2.INTER_AREA)


def _affine(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """Per-pixel colour transform (3x3, or 3x4 with bias): cv2 is ~10x faster than numpy broadcasting."""
  return cv2.transform(x, np.asarray(matrix, np.float32))


def _clip(x: np.ndarray) -> np.ndarray:
  return np.clip(x, 0, 255, out=x)


_GRAY3 = np.tile(LUMA, (3, 1))  # maps RGB to (luma, luma, luma)
_NORM = np.concatenate([np.diag(1 / (255 * STD)), (-MEAN / STD)[:, None]], 1)


def _hue_matrix(shift: float) -> np.ndarray:
  """Rotation about the gray axis of RGB space by `shift` turns (FFCV-SSL's hue jitter)."""
  c, s = math.cos(2 * math.pi * shift), math.sin(2 * math.pi * shift)
  a, b = (1 - c) / 3, math.sqrt(1 / 3) * s
  return np.array([[c + a, a - b, a + b], [a + b, c + a, a - b], [a - b, a + b, c + a]], np.float32)


def color_jitter(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
  """Brightness, contrast, saturation, hue in this fixed order (FFCV-SSL), on float32 0-255."""
  b = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
  c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
  s = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
  h = rng.uniform(-cfg.hue, cfg.hue)
  mean_gray = float(np.dot(cv2.mean(x)[:3], LUMA))  # contrast: toward the pre-jitter mean gray
  x = _clip(x * np.float32(b))
  x = _clip(x * np.float32(c) + np.float32((1 - c) * mean_gray))
  x = _clip(_affine(x, s * np.eye(3) + (1 - s) * _GRAY3))  # blend with the pixel's own gray
  return _clip(_affine(x, _hue_matrix(h)))


def normalize(x):
  """ImageNet normalisation of 0-255 RGB; works on numpy or jax arrays (for the uint8 mode)."""
  return (x / 255.0 - MEAN) / STD


def augment_view(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
                 view: int) -> np.ndarray:
  """One view of a uint8 HxWx3 image; `view` 1 gets the blur, view 2 the solarisation."""
  scale = cfg.spatial_only_scale if cfg.spatial_only else cfg.scale
  x = random_resized_crop(img, rng, cfg.size, scale, cfg.ratio)
  if rng.uniform() < cfg.flip_p:
    x = cv2.flip(x, 1)
  if not cfg.spatial_only:
    x = x.astype(np.float32)
    if rng.uniform() < cfg.jitter_p:
      x = color_jitter(x, rng, cfg)
    if rng.uniform() < cfg.gray_p:
      x = _affine(x, _GRAY3)
    if view == 2 and rng.uniform() < cfg.solarize_p:
      x = np.where(x >= 128, 255 - x, x)
    if view == 1 and rng.uniform() < cfg.blur_p:
      sigma = rng.uniform(*cfg.blur_sigma)
      # Blur commutes with the per-channel affine normalisation, so blurring first is the same
      # as the released code's blur of the normalised batch. REFLECT_101 = torch 'reflect'.
      x = cv2.GaussianBlur(np.ascontiguousarray(x), cfg.blur_kernel, sigmaX=sigma, sigmaY=sigma,
                           borderType=cv2.BORDER_REFLECT_101)
  if cfg.uint8_output:
    return np.ascontiguousarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))
  return _affine(np.asarray(x, np.float32), _NORM)  # == normalize(x), fused


def two_views(frame_a: np.ndarray, frame_b: np.ndarray, rng: np.random.Generator,
              cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
  """View 1 from `frame_a`, view 2 from `frame_b` (the same array for two views of an image)."""
  return augment_view(frame_a, rng, cfg, 1), augment_view(frame_b, rng, cfg, 2)

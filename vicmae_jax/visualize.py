"""Reconstruction grids: original | masked | reconstruction, for TensorBoard and as PNG."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vicmae_jax import masking

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def reconstruct_pixels(pred: jax.Array, images: jax.Array, mask: jax.Array, patch: int,
                       norm_pix: bool = True) -> tuple[jax.Array, jax.Array]:
  """(masked view, reconstruction pasted with the visible patches), both [N, H, W, 3] normalised.

  Norm-pix predictions are mapped back with each patch's own mean and std, as MAE's
  visualisation does; visible patches show the input itself.
  """
  target = masking.patchify(images.astype(jnp.float32), patch)
  if norm_pix:
    mean = jnp.mean(target, axis=-1, keepdims=True)
    std = jnp.sqrt(jnp.var(target, axis=-1, keepdims=True, ddof=1) + 1e-6)
    pred = pred * std + mean
  m = mask[..., None]
  masked = masking.unpatchify(target * (1 - m), patch)
  pasted = masking.unpatchify(target * (1 - m) + pred * m, patch)
  return masked, pasted


def to_uint8(images: np.ndarray) -> np.ndarray:
  """ImageNet-normalised [..., 3] -> uint8 RGB."""
  x = np.asarray(images, np.float32) * IMAGENET_STD + IMAGENET_MEAN
  return (np.clip(x, 0.0, 1.0) * 255).round().astype(np.uint8)


def grid(original: np.ndarray, masked: np.ndarray, recon: np.ndarray, pad: int = 2,
         min_side: int = 128) -> np.ndarray:
  """One row per example: original | masked | reconstruction, as a uint8 [H', W', 3] image.

  Tiles smaller than `min_side` are enlarged by pixel repetition so patches stay visible.
  """
  scale = max(1, min_side // original.shape[1])
  rows = []
  for o, m, r in zip(*(to_uint8(x) for x in (original, masked, recon))):
    o, m, r = (np.repeat(np.repeat(x, scale, axis=0), scale, axis=1) for x in (o, m, r))
    h = o.shape[0]
    sep = np.full((h, pad, 3), 255, np.uint8)
    rows.append(np.concatenate([o, sep, m, sep, r], axis=1))
    rows.append(np.full((pad, rows[-1].shape[1], 3), 255, np.uint8))
  return np.concatenate(rows[:-1], axis=0)


def save_png(image: np.ndarray, path) -> None:
  from PIL import Image
  from etils import epath
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:
    Image.fromarray(image).save(f, format="PNG")

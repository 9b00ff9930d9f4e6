"""Small labelled image sets made on the fly (tests, `:tiny` configs); no download needed.

"color":    the class sets the mean colour of a noisy image (easy; any encoder separates it).
"position": a bright square on a noisy random-colour background; the class is the quadrant
            of the square. Needs spatial information, so a random encoder does worse on it.
"stripes":  horizontal, vertical, diagonal stripes or a checkerboard, with random colours,
            period and phase; colour dominates a random encoder's features, the orientation is
            what ViC-MAE pretraining on such images brings out (tests/evaluation/test_eval_probe).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image


def make_toy(kind: str, num: int, *, num_classes: int = 4, size: int = 32, seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 images [num, size, size, 3], int32 labels [num]); labels cycle over classes."""
  rng = np.random.default_rng(seed)
  labels = (np.arange(num) % num_classes).astype(np.int32)
  rng.shuffle(labels)
  imgs = np.empty((num, size, size, 3), np.uint8)
  if kind == "color":
    palette = np.stack([np.array([np.cos(a), np.cos(a + 2.1), np.cos(a + 4.2)])
                        for a in np.linspace(0, 2 * np.pi, num_classes, endpoint=False)])
    for i, y in enumerate(labels):
      img = 128 + 70 * palette[y] + rng.normal(0, 40, (size, size, 3))
      imgs[i] = np.clip(img, 0, 255)
  elif kind == "position":
    if num_classes != 4:
      raise ValueError("the position toy has 4 classes (quadrants)")
    half, s = size // 2, size // 4
    for i, y in enumerate(labels):
      img = rng.uniform(40, 140, 3) + rng.normal(0, 25, (size, size, 3))
      top = (y // 2) * half + rng.integers(0, half - s + 1)
      left = (y % 2) * half + rng.integers(0, half - s + 1)
      img[top:top + s, left:left + s] = rng.uniform(200, 255, 3)
      imgs[i] = np.clip(img, 0, 255)
  elif kind == "stripes":
    if num_classes != 4:
      raise ValueError("the stripes toy has 4 classes")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i, y in enumerate(labels):
      # Horizontal, vertical, diagonal (either way: a horizontal flip keeps the class) or a
      # checkerboard, with random period, phase and colours.
      period, phase = rng.uniform(4, 9), rng.uniform(0, 2 * np.pi, 2)
      angle = {0: np.pi / 2, 1: 0.0, 2: rng.choice([np.pi / 4, -np.pi / 4]), 3: 0.0}[int(y)]
      angle += rng.uniform(-0.15, 0.15)
      u = xx * np.cos(angle) + yy * np.sin(angle)
      wave = np.sin(2 * np.pi * u / period + phase[0])
      if y == 3:
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        wave = wave * np.sin(2 * np.pi * v / period + phase[1])
      a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
      img = np.where(wave[..., None] > 0, a, b) + rng.normal(0, 20, (size, size, 3))
      imgs[i] = np.clip(img, 0, 255)
  else:
    raise ValueError(f"unknown toy kind {kind!r}")
  return imgs, labels


def write_image_folder(root: str, images: np.ndarray, labels: np.ndarray) -> str:
  """Writes root/class_<k>/<i>.png (ImageNet layout); returns root."""
  for i, (img, y) in enumerate(zip(images, labels)):
    folder = os.path.join(root, f"class_{int(y):03d}")
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(img).save(os.path.join(folder, f"{i:05d}.png"))
  return root

"""Robust image decoding to HxWx3 uint8 RGB.

The format is sniffed from the bytes, never the file name (ImageNet has PNG data named .JPEG).
Grayscale, palette, CMYK, RGBA and 16-bit images all come out as 8-bit RGB; very large JPEGs are
reduced inside the decoder (DCT scaling, nearly free) and anything still over `max_side` is
downscaled before augmentation.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from vicmae_jax import fs
from vicmae_jax.data.badinput import BadInput

# Transparent pixels become the ImageNet mean colour, which normalises to ~0 (a neutral input).
_ALPHA_BACKGROUND = (124, 116, 104)

# The decompression-bomb rule is ours, not PIL's: PIL refuses anything over ~179 Mpx at open,
# before knowing that a JPEG decodes at 1/8 scale for nearly nothing (a real 14000x14000 photo).
# We count the pixels the decoder will actually produce and refuse above `max_pixels`.
Image.MAX_IMAGE_PIXELS = None
DEFAULT_MAX_PIXELS = 200_000_000   # ~600 MB of RGB: a true bomb, not a large photo


def _to_rgb(img: Image.Image) -> Image.Image:
  mode = img.mode
  if mode == 'RGB':
    return img
  if mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'):
    # PIL's convert('L') clips 16-bit values at 255; rescale the full range instead.
    arr = np.asarray(img, np.float64)
    peak = 65535.0 if mode.startswith('I;16') or arr.max() > 255 else 255.0
    arr = np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, 'L').convert('RGB')
  if mode in ('RGBA', 'LA', 'PA') or (mode == 'P' and 'transparency' in img.info):
    rgba = img.convert('RGBA')
    background = Image.new('RGBA', rgba.size, _ALPHA_BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert('RGB')
  return img.convert('RGB')  # L, P, CMYK (Adobe inversion handled by the JPEG plugin), YCbCr, 1


def decode_image(data: bytes, max_side: int | None = 1024, name: str = '',
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """Decodes image bytes to HxWx3 uint8 RGB with EXIF orientation applied.

  Large JPEGs are decoded reduced (DCT scaling to about `max_side`); an image whose decode would
  still produce more than `max_pixels` pixels is refused as a decompression bomb.
  Raises BadInput('empty' | 'corrupt_image') instead of PIL's assorted errors; the detail says
  which rule refused the image.
  """
  if not data:
    raise BadInput('empty', name)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')  # EXIF warnings
      img = Image.open(io.BytesIO(data))
      full = img.size
      if max_side and img.format == 'JPEG' and max(img.size) > 2 * max_side:
        img.draft(img.mode if img.mode != 'CMYK' else 'CMYK', (max_side, max_side))
      pixels = img.size[0] * img.size[1]  # what the decoder will produce (after any draft)
      if max_pixels and pixels > max_pixels:
        raise BadInput('corrupt_image', name,
                       f'max_pixels: {full[0]}x{full[1]} {img.format} would decode to {pixels:,} '
                       f'pixels, over the limit {max_pixels:,} (a decompression bomb? raise '
                       f'input.max_pixels to accept it)')
      img.load()
      img = ImageOps.exif_transpose(img) if 0x0112 in img.getexif() else img
      img = _to_rgb(img)
      if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.BILINEAR, reducing_gap=2.0)
      arr = np.asarray(img)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as e:
    raise BadInput('corrupt_image', name, f'{type(e).__name__}: {e}') from None
  if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
    raise BadInput('corrupt_image', name, f'unexpected decoded shape {arr.shape}')
  return arr


def read_image(path: str, max_side: int | None = 1024,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """Reads and decodes an image file; missing or empty files raise the matching BadInput."""
  try:
    data = fs.read_bytes(path)
  except FileNotFoundError:
    raise BadInput('missing', path) from None
  except OSError as e:
    raise BadInput('corrupt_image', path, str(e)) from None
  if not data:
    raise BadInput('empty', path)
  return decode_image(data, max_side, path, max_pixels)


IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.gif', '.tif', '.tiff')


def is_image_file(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS

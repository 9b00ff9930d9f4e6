"""Synthetic media for tests, the input benchmark and the demo config.

Every video frame carries its own index in the pixels: a 4 x 3 grid of 16 px blocks in the top-left
64 x 48 corner, each block black (bit 0) or white (bit 1). Blocks this large survive any lossy codec,
so tests can read back which frame a decoder returned and check the gaps between frames.
"""
from __future__ import annotations

import fractions
import io
import logging
import os
import shutil
import time
from collections.abc import Sequence

import av
import numpy as np
from PIL import Image

BLOCK = 16
GRID_COLS, GRID_ROWS = 4, 3
INDEX_BITS = GRID_COLS * GRID_ROWS  # 4096 distinct frame indices
CODECS = {'h264': ('libx264', '.mp4'), 'mpeg4': ('mpeg4', '.mp4'), 'vp9': ('libvpx-vp9', '.webm'),
          'vp8': ('libvpx', '.webm')}


def draw_index(img: np.ndarray, index: int) -> np.ndarray:
  """Writes `index` as binary blocks into the top-left corner of an HxWx3 uint8 image (in place)."""
  for bit in range(INDEX_BITS):
    r, c = divmod(bit, GRID_COLS)
    img[r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK] = 255 if (index >> bit) & 1 else 0
  return img


def read_index(img: np.ndarray) -> int:
  """Reads back the index written by `draw_index` (uses each block's interior, away from edges)."""
  index = 0
  for bit in range(INDEX_BITS):
    r, c = divmod(bit, GRID_COLS)
    block = img[r * BLOCK + 4:(r + 1) * BLOCK - 4, c * BLOCK + 4:(c + 1) * BLOCK - 4]
    if block.mean() > 128:
      index |= 1 << bit
  return index


def _texture(height: int, width: int, seed: int) -> np.ndarray:
  """A smooth random colour texture, twice the frame size so it can pan (like a moving camera)."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (height // 8 + 2, width // 4 + 2, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(small).resize((2 * width, height), Image.BILINEAR))


def frame_image(index: int, height: int, width: int, texture: np.ndarray | None = None,
                noise: np.random.Generator | None = None) -> np.ndarray:
  """Frame `index`: a panning texture (if given) plus light noise, index blocks drawn on top."""
  if texture is None:
    img = np.full((height, width, 3), (37 * index) % 200 + 28, np.uint8)
    img[:, :, 1] = (np.arange(width) * 255 // max(width - 1, 1))[None, :]
  else:
    shift = (3 * index) % width
    img = texture[:, shift:shift + width].copy()
  if noise is not None:
    img = np.clip(img.astype(np.int16) + noise.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
  return draw_index(img, index)


def write_video(path: str, *, num_frames: int = 60, fps: int = 30, width: int = 64, height: int = 48,
                codec: str = 'h264', frame_times: Sequence[float] | None = None, rotation: int = 0,
                textured: bool = False, gop: int | None = None, bframes: int | None = None,
                seed: int = 0) -> list[float]:
  """Encodes a clip whose frame i shows index i; returns the presentation time (s) of every frame.

  Args:
    path: output file; the container follows the extension (.mp4, .webm, .avi, .mkv).
    num_frames: number of frames.
    fps: nominal frame rate (also the time base when `frame_times` is None).
    width, height: frame size, at least 64 x 48 so the index blocks fit.
    codec: 'h264' (libx264 defaults: B-frames on, keyint 250), 'mpeg4', 'vp9' or 'vp8'.
    frame_times: per-frame times in seconds for variable frame rate (millisecond time base).
    rotation: display-matrix rotation in degrees counterclockwise (phone-style metadata).
    textured: a panning texture with noise (realistic bitrate for benchmarks), not flat colour.
    gop: keyframe interval; None keeps the encoder default.
    bframes: max B-frames; None keeps the encoder default (3 for libx264).
    seed: texture/noise seed.
  """
  if width < GRID_COLS * BLOCK or height < GRID_ROWS * BLOCK:
    raise ValueError(f'frames must be at least 64x48 to carry their index, got {width}x{height}')
  encoder = CODECS[codec][0]
  container = av.open(path, 'w')
  stream = container.add_stream(encoder, rate=fps)
  stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
  if gop is not None:
    stream.codec_context.gop_size = gop
  if bframes is not None:
    stream.codec_context.max_b_frames = bframes
  if codec in ('vp9', 'vp8'):
    stream.options = {'deadline': 'realtime', 'cpu-used': '8'}  # keep tests fast
  if rotation:
    stream.set_display_rotation(rotation)
  time_base = fractions.Fraction(1, 1000) if frame_times is not None else fractions.Fraction(1, fps)
  if frame_times is not None:
    stream.codec_context.time_base = time_base
  texture = _texture(height, width, seed) if textured else None
  noise = np.random.default_rng(seed) if textured else None
  times = []
  for i in range(num_frames):
    frame = av.VideoFrame.from_ndarray(frame_image(i, height, width, texture, noise), format='rgb24')
    if frame_times is not None:
      frame.pts = int(round(frame_times[i] * 1000))
    else:
      frame.pts = i
    frame.time_base = time_base
    times.append(float(frame.pts * time_base))
    for packet in stream.encode(frame):
      container.mux(packet)
  for packet in stream.encode():
    container.mux(packet)
  container.close()
  return times


def vfr_times(num_frames: int, seed: int = 0) -> list[float]:
  """Irregular frame times: intervals drawn from {20, 33, 50, 80} ms, like a phone's variable rate."""
  rng = np.random.default_rng(seed)
  steps = rng.choice([0.020, 0.033, 0.050, 0.080], size=num_frames)
  return [float(t) for t in np.concatenate([[0.0], np.cumsum(steps[:-1])])]


def image_bytes(kind: str, *, size: tuple[int, int] = (80, 60), seed: int = 0) -> bytes:
  """Encodes a test image of one of the awkward kinds found in real datasets.

  Kinds: 'rgb_jpeg', 'gray_jpeg', 'cmyk_jpeg', 'rgba_png', 'gray16_png', 'palette_png', 'png' (also
  used for PNG data named .JPEG), 'large_jpeg' (6000 x 4000).
  """
  w, h = (6000, 4000) if kind == 'large_jpeg' else size
  rng = np.random.default_rng(seed)
  rgb = np.zeros((h, w, 3), np.uint8)
  rgb[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
  rgb[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
  rgb[..., 2] = rng.integers(100, 156)
  img = Image.fromarray(rgb)
  buf = io.BytesIO()
  if kind in ('rgb_jpeg', 'large_jpeg'):
    img.save(buf, 'JPEG', quality=90)
  elif kind == 'gray_jpeg':
    img.convert('L').save(buf, 'JPEG')
  elif kind == 'cmyk_jpeg':
    img.convert('CMYK').save(buf, 'JPEG')
  elif kind == 'rgba_png':
    rgba = img.convert('RGBA')
    rgba.putalpha(128)
    rgba.save(buf, 'PNG')
  elif kind == 'gray16_png':
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(buf, 'PNG')  # mode I;16
  elif kind == 'palette_png':
    img.convert('P').save(buf, 'PNG')
  elif kind == 'png':
    img.save(buf, 'PNG')
  else:
    raise ValueError(f'unknown image kind {kind!r}')
  return buf.getvalue()


def write_demo_data(root: str, *, num_videos: int = 6, num_frames: int = 48, fps: int = 24,
                    width: int = 96, height: int = 64, frames: bool = True) -> dict[str, str]:
  """Writes a tiny fully-local dataset: H.264 clips in class folders plus scikit-image sample photos.

  With `frames` (the default) the clips are then decoded once, every frame kept, into the
  pre-extracted format the `frames` source reads (ArrayRecord shards of JPEG frames written by
  `vicmae_jax.tools.extract_frames`, the production fast path): a pair is then two small JPEG
  decodes, not an H.264 open, seek and decode per example.

  Returns {'videos': folder of clips, 'images': folder of JPEGs} and, with `frames`,
  'frames': folder of frame shards; existing files and folders are reused.
  """
  from skimage import data as skdata  # imported lazily: only the demo needs it

  videos, images = os.path.join(root, 'videos'), os.path.join(root, 'images')
  partial = os.path.join(root, '.partial')
  os.makedirs(partial, exist_ok=True)
  for i in range(num_videos):
    folder = os.path.join(videos, f'class_{i % 2}')
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f'clip_{i:03d}.mp4')
    if not os.path.exists(path):
      # Per-process temp names outside the scanned folders: concurrent writers (one per
      # process of a multi-host job) never share a file, and no scan sees a partial one.
      tmp = os.path.join(partial, f'{os.getpid()}_{i}.mp4')
      write_video(tmp, num_frames=num_frames, fps=fps, width=width, height=height,
                  textured=True, seed=i)
      os.replace(tmp, path)
  os.makedirs(images, exist_ok=True)
  for name in ('astronaut', 'coffee', 'chelsea', 'rocket', 'camera', 'hubble_deep_field'):
    path = os.path.join(images, f'{name}.jpg')
    if not os.path.exists(path):
      arr = getattr(skdata, name)()
      tmp = os.path.join(partial, f'{os.getpid()}_{name}.jpg')
      Image.fromarray(arr).save(tmp, 'JPEG', quality=90)
      os.replace(tmp, path)
  out = {'videos': videos, 'images': images}
  if frames:
    out['frames'] = extract_demo_frames(videos, os.path.join(root, 'frames'), partial,
                                        frames_per_video=num_frames, expected=num_videos)
  return out


def extract_demo_frames(videos: str, out: str, partial: str, *, frames_per_video: int,
                        expected: int) -> str:
  """Pre-extracts the demo clips into `out` once (a folder that exists is complete and reused).

  Every frame is kept (`frames_per_video` = the clips' length) at its own size, so the frames
  source's pair sampling lands on exact frames: `fixed_gap` pairs are `gap` frames apart, as when
  decoding the clips. The shards are written under a per-process name in `partial` and the folder
  is renamed into place whole: concurrent processes never see a partial one, the first rename
  wins and the others discard theirs.
  """
  if os.path.isdir(out):
    return out
  from vicmae_jax.data import index as index_lib  # lazy: only the demo media need them
  from vicmae_jax.tools import extraction

  tmp = os.path.join(partial, f'{os.getpid()}_frames')
  shutil.rmtree(tmp, ignore_errors=True)  # left by a killed process that had this pid
  start = time.time()
  # In this process (no pool to start): the same shards `extract_frames` writes.
  summary = extraction.extract_in_process(
      tmp, index_lib.read_index(dict(kind='video_folder', path=videos)),
      extraction.Options(frames_per_video=frames_per_video, short_side=0))
  if summary.get('written') != expected:
    raise RuntimeError(f'demo frames: {summary.get("written")} of {expected} clips extracted '
                       f'({summary})')
  try:
    os.rename(tmp, out)
  except OSError:
    if not os.path.isdir(out):
      raise
    shutil.rmtree(tmp, ignore_errors=True)  # another process's complete copy is already there
  logging.info('demo media: %d clips pre-extracted to %s in %.1f s (once; reused from now on)',
               expected, out, time.time() - start)
  return out

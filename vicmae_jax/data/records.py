"""Record format of pre-extracted frames (one ArrayRecord record per video).

    b'VMF1' | uint32 little-endian header length | JSON header | JPEG bytes of every frame

The header holds the source path, label, the frames' presentation times and byte sizes, and the
clip's start, duration and frame rate, so pairs can be re-drawn every epoch with the same sampler
as online decoding. Kept dependency-free (no TF, no protobuf) so any tool can read it.
"""
from __future__ import annotations

import io
import json
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

MAGIC = b'VMF1'
# group_size:1 makes each record its own chunk, which is what random access wants; JPEG bytes do
# not compress further, so compression would only cost time.
WRITER_OPTIONS = 'group_size:1,uncompressed'


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, 'JPEG', quality=quality)
  return buf.getvalue()


def encode_record(frames: Sequence[bytes], times: Sequence[float], *, path: str, label: int,
                  start: float, duration: float, fps: float) -> bytes:
  header = json.dumps({'path': path, 'label': int(label), 'times': [float(t) for t in times],
                       'sizes': [len(f) for f in frames], 'start': float(start),
                       'duration': float(duration), 'fps': float(fps)}).encode()
  return b''.join([MAGIC, struct.pack('<I', len(header)), header, *frames])


def decode_record(record: bytes) -> tuple[dict[str, Any], list[bytes]]:
  """Returns (header, list of JPEG byte strings)."""
  if record[:4] != MAGIC:
    raise ValueError('not a frame record (bad magic)')
  (n,) = struct.unpack('<I', record[4:8])
  header = json.loads(record[8:8 + n])
  frames, offset = [], 8 + n
  for size in header['sizes']:
    frames.append(record[offset:offset + size])
    offset += size
  if offset != len(record):
    raise ValueError(f'frame record has {len(record) - offset} unexpected trailing bytes')
  return header, frames

"""Random-access sources of raw frame pairs: videos, image files, TFDS images, pre-extracted frames.

A source maps a record index and a numpy Generator to `k` pairs of uint8 RGB frames (two frames of
one video, or the same image twice for two views). Sources are plain picklable objects so Grain can
ship them to `mp_prefetch` workers; decoding happens lazily in those workers.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from vicmae_jax import fs
from vicmae_jax.data import images, index as index_lib, records, video
from vicmae_jax.data.badinput import BadInput

Pairs = list[tuple[np.ndarray, np.ndarray]]


class PairSource(Protocol):
  is_video: bool

  def __len__(self) -> int: ...

  def describe(self, i: int) -> str: ...

  def load(self, i: int, rng: np.random.Generator, k: int) -> Pairs: ...


class _IndexedFiles:
  """A source over the files of an index: its length, the file behind a record, its classes."""

  index: index_lib.Index

  def __len__(self) -> int:
    return len(self.index)

  def describe(self, i: int) -> str:
    return self.index.paths[i]

  @property
  def num_classes(self) -> int:
    return len(self.index.classes) or int(max(self.index.labels) + 1)


class VideoSource(_IndexedFiles):
  """Frame pairs decoded online from video files (PyAV)."""
  is_video = True

  def __init__(self, index: index_lib.Index, sampling: video.PairSampling, *, threads: int = 1,
               max_side: int | None = 1024, reseek_s: float = 5.0):
    self.index, self.sampling = index, sampling
    self.threads, self.max_side, self.reseek_s = threads, max_side, reseek_s

  def load(self, i: int, rng: np.random.Generator, k: int) -> Pairs:
    pairs, _ = video.load_pairs(self.index.paths[i], rng, self.sampling, k, threads=self.threads,
                                max_side=self.max_side, reseek_s=self.reseek_s)
    return pairs


class ImageFileSource(_IndexedFiles):
  """Two views of one image file (ImageNet folder layout, flat folders, lists of paths)."""
  is_video = False

  def __init__(self, index: index_lib.Index, *, max_side: int | None = 1024,
               max_pixels: int | None = images.DEFAULT_MAX_PIXELS):
    self.index, self.max_side, self.max_pixels = index, max_side, max_pixels

  def get(self, i: int) -> tuple[np.ndarray, int]:
    """(image, label): the labelled view evaluation reads (evaluation.data.LabelledSource)."""
    return (images.read_image(self.index.paths[i], self.max_side, self.max_pixels),
            int(self.index.labels[i]))

  def load(self, i: int, rng: np.random.Generator, k: int) -> Pairs:
    img = self.get(i)[0]
    return [(img, img)] * k


class TfdsImageSource:
  """Images from `tfds.data_source` (ArrayRecord-prepared TFDS datasets such as imagenet2012).

  Images are read as encoded bytes (SkipDecoding) and decoded here, which is faster (JPEG draft
  mode for large images) and shares the robust decoder with image folders.
  """
  is_video = False

  def __init__(self, name: str, split: str = 'train', data_dir: str | None = None, *,
               image_key: str = 'image', label_key: str = 'label', max_side: int | None = 1024,
               max_pixels: int | None = images.DEFAULT_MAX_PIXELS):
    import tensorflow_datasets as tfds  # lazy: TF import is slow and only this source needs it

    self.name, self.split, self.image_key, self.max_side = name, split, image_key, max_side
    self.label_key, self.max_pixels = label_key, max_pixels
    self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                                    decoders={image_key: tfds.decode.SkipDecoding()})

  def __len__(self) -> int:
    return len(self._source)

  def describe(self, i: int) -> str:
    return f'tfds:{self.name}/{self.split}[{i}]'

  @property
  def num_classes(self) -> int:
    return int(self._source.dataset_info.features[self.label_key].num_classes)

  def get(self, i: int) -> tuple[np.ndarray, int]:
    """(image, label): the labelled view evaluation reads (evaluation.data.LabelledSource)."""
    example = self._source[i]
    img = images.decode_image(example[self.image_key], self.max_side, self.describe(i),
                              self.max_pixels)
    return img, int(example[self.label_key])

  def load(self, i: int, rng: np.random.Generator, k: int) -> Pairs:
    data = self._source[i][self.image_key]
    img = images.decode_image(data, self.max_side, self.describe(i), self.max_pixels)
    return [(img, img)] * k


class FrameRecordSource:
  """Pairs re-drawn every epoch from frames pre-extracted by `vicmae_jax.tools.extract_frames`.

  Pair times come from the same sampler as online decoding and snap to the nearest stored frame,
  so gaps are quantised to the stored spacing (duration / frames_per_video).
  """
  is_video = True

  def __init__(self, paths: Sequence[str], sampling: video.PairSampling, *,
               max_side: int | None = 1024):
    import grain  # lazy: keeps `import vicmae_jax.data.sources` light

    self.paths = list(paths)
    if not self.paths:
      raise index_lib.IndexFormatError('no ArrayRecord shards given for a frames source')
    self._source = grain.sources.ArrayRecordDataSource(self.paths)
    self.sampling, self.max_side = sampling, max_side

  def __len__(self) -> int:
    return len(self._source)

  def describe(self, i: int) -> str:
    try:
      return records.decode_record(self._source[i])[0]['path']
    except Exception:  # noqa: BLE001 - only used for messages
      return f'{self.paths[0]}...[{i}]'

  def load(self, i: int, rng: np.random.Generator, k: int) -> Pairs:
    try:
      header, jpegs = records.decode_record(self._source[i])
    except ValueError as e:
      raise BadInput('unreadable', f'record {i}', str(e)) from None
    times = np.asarray(header['times'])
    if len(times) < 2:
      raise BadInput('too_short', header['path'], f'{len(times)} stored frame(s)')
    wanted = video.sample_pair_times(rng, header['start'], header['duration'], header['fps'],
                                     self.sampling, k)
    # With every frame stored (the demo's and the study's shards) a time belongs to the frame
    # displayed then, [pts, pts + 1/fps): compare with frame centres, which gives online decoding's
    # exact gaps. With a few frames stored at segment centres (extract_frames' default) the
    # nearest stored time is the segment holding it.
    frame_s = 1.0 / max(float(header['fps']), 1e-6)
    dense = np.median(np.diff(times)) <= 1.5 * frame_s
    nearest = np.abs(wanted[..., None] - (times + 0.5 * frame_s * dense)).argmin(-1)  # [k, 2]
    same = nearest[:, 0] == nearest[:, 1]
    nearest[same, 1] = np.minimum(nearest[same, 1] + 1, len(times) - 1)  # keep two distinct frames
    nearest[same & (nearest[:, 1] == nearest[:, 0]), 0] -= 1
    cache: dict[int, np.ndarray] = {}
    for j in np.unique(nearest):
      cache[j] = images.decode_image(jpegs[j], self.max_side, header['path'])
    return [(cache[a], cache[b]) for a, b in nearest]


def expand_shards(path: str) -> list[str]:
  """A directory of shards, a glob, or a comma-separated list of files (local or any fs URL)."""
  if fs.isdir(path):
    return fs.glob(fs.join(path, '*.array_record'))
  return [p for part in path.split(',') for p in fs.glob(part.strip())]


def build_source(spec: dict[str, Any], *, sampling: video.PairSampling, threads: int = 1,
                 max_side: int | None = 1024, reseek_s: float = 5.0,
                 max_pixels: int | None = images.DEFAULT_MAX_PIXELS) -> PairSource:
  """Creates a source from one entry of `config.sources` (see pipeline.py for the keys)."""
  kind = spec['kind']
  if kind == 'tfds':
    return TfdsImageSource(spec['path'], spec.get('split', 'train'), spec.get('data_dir'),
                           image_key=spec.get('image_key', 'image'), max_side=max_side,
                           max_pixels=max_pixels)
  if kind == 'frames':
    return FrameRecordSource(expand_shards(spec['path']), sampling, max_side=max_side)
  idx = index_lib.read_index(spec)
  if kind in index_lib.IMAGE_KINDS:
    return ImageFileSource(idx, max_side=max_side, max_pixels=max_pixels)
  return VideoSource(idx, sampling, threads=threads, max_side=max_side, reseek_s=reseek_s)

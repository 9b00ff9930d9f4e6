"""Labelled video data for fine-tuning: sources, clip transforms, and multi-view test batches.

Sources give `(uint8 [T, H, W, 3] frames, label)`. Training takes one clip per video (16 x 4
frames at a random start, or SSv2 segment sampling), one random-resized-crop box and flip for
the whole clip; testing takes `spatial x temporal` views per video (3 x 7 for K400), each video
decoded once, all views of all videos exactly once (padded, masked, counted).
"""
from __future__ import annotations

from typing import Any, Iterator

import cv2
import numpy as np

from vicmae_jax.data import augment as base_aug
from vicmae_jax.data import index as index_lib
from vicmae_jax.data import video as video_io
from vicmae_jax.evaluation import metrics, video
from vicmae_jax.evaluation.data import _local_rows, to_global


class VideoFileSource:
  """Videos of an `Index` (Kinetics CSV, SSv2 JSON, class folders), decoded whole (short clips).

  `max_side` bounds the decoded resolution; a clip of K400 (10 s) decodes in well under a second
  at 320 px.
  """

  def __init__(self, index: index_lib.Index, max_side: int | None = 320):
    self.index, self.max_side = index, max_side
    self.num_classes = len(index.classes) or int(max(index.labels) + 1)

  def __len__(self) -> int:
    return len(self.index)

  def get(self, i: int) -> tuple[np.ndarray, int]:
    frames = video_io.load_all_frames_naive(self.index.paths[i], self.max_side)
    if not frames:
      raise ValueError(f"{self.index.paths[i]}: no frames decoded")
    return np.stack(frames), int(self.index.labels[i])


class ArrayVideoSource:
  def __init__(self, videos: np.ndarray, labels: np.ndarray, num_classes: int):
    self.videos, self.labels, self.num_classes = videos, np.asarray(labels), num_classes

  def __len__(self) -> int:
    return len(self.labels)

  def get(self, i: int) -> tuple[np.ndarray, int]:
    return self.videos[i], int(self.labels[i])


def make_toy_videos(num: int, *, frames: int = 16, size: int = 16, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Two classes that only motion separates: a bright bar moving right (0) or left (1)."""
  rng = np.random.default_rng(seed)
  labels = (np.arange(num) % 2).astype(np.int32)
  vids = np.empty((num, frames, size, size, 3), np.uint8)
  for i, y in enumerate(labels):
    base = rng.uniform(40, 120, 3) + rng.normal(0, 10, (size, size, 3))
    start = int(rng.integers(0, size))
    for t in range(frames):
      img = base.copy()
      col = (start + (t if y == 0 else -t)) % size
      img[:, col] = 250
      vids[i, t] = np.clip(img, 0, 255)
  return vids, labels


def build_video_source(spec: dict[str, Any], split: str):
  """{'kind': 'kinetics_csv', 'train': CSV, 'val': CSV, 'root': DIR} | {'kind': 'ssv2',
  'train': JSON, 'val': JSON, 'root': DIR, 'labels': labels.json} | {'kind': 'video_folder',
  'train': DIR, 'val': DIR} | {'kind': 'toy_video', 'train_size', 'val_size', 'size', 'frames'}."""
  kind = spec["kind"]
  if kind == "toy_video":
    vids, labels = make_toy_videos(spec.get(f"{split}_size", 16), frames=spec.get("frames", 16),
                                   size=spec.get("size", 16),
                                   seed=spec.get("seed", 0) + (split != "train"))
    return ArrayVideoSource(vids, labels, 2)
  if kind == "kinetics_csv":
    idx = index_lib.read_kinetics_csv(spec[split], spec["root"])
  elif kind == "ssv2":
    idx = index_lib.read_ssv2_json(spec[split], spec["root"], spec.get("labels") or None)
  elif kind == "video_folder":
    idx = index_lib.scan_folder(spec[split], (".mp4", ".webm", ".mkv", ".avi", ".mov"))
  else:
    raise ValueError(f"Unknown video source kind {kind!r}")
  return VideoFileSource(idx, spec.get("max_side", 320))


def _resize_clip(clip: np.ndarray, size: int) -> np.ndarray:
  return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in clip])


def train_clip_transform(frames: np.ndarray, rng: np.random.Generator, *, size: int,
                         num_frames: int = 16, stride: int = 4, sampling: str = "clip",
                         scale: tuple[float, float] = (0.08, 1.0), hflip: bool = True
                         ) -> np.ndarray:
  """One training clip: temporal sampling, one RRC box + flip for all frames, normalise."""
  if sampling == "segment":
    idx = video.segment_indices(len(frames), num_frames, rng=rng)
  else:
    idx = video.clip_indices(len(frames), num_frames, stride, rng=rng)
  clip = frames[idx]
  top, left, h, w = base_aug.crop_box(rng, clip.shape[1], clip.shape[2], scale, (3 / 4, 4 / 3))
  clip = _resize_clip(clip[:, top:top + h, left:left + w], size)
  if hflip and rng.random() < 0.5:
    clip = clip[:, :, ::-1]
  return base_aug.normalize(clip.astype(np.float32)).astype(np.float32)


def eval_views(frames: np.ndarray, *, size: int, num_frames: int = 16, stride: int = 4,
               sampling: str = "clip", spatial: int = 3, temporal: int = 7) -> list[np.ndarray]:
  """spatial x temporal normalised clips of one video (temporal-major order)."""
  views = []
  for t in range(temporal):
    if sampling == "segment":
      idx = video.segment_indices(len(frames), num_frames)
    else:
      idx = video.clip_indices(len(frames), num_frames, stride, view=t, num_views=temporal)
    for crop in video.spatial_crops(frames[idx], size, spatial):
      views.append(base_aug.normalize(crop.astype(np.float32)).astype(np.float32))
  return views


def view_batches(source, global_batch: int, *, sharding=None, **view_kwargs
                 ) -> Iterator[dict[str, Any]]:
  """Batches {'image' (clips), 'label', 'mask', 'video'} over every view of every video once."""
  rows = _local_rows(global_batch)
  buf: dict[str, list] = {"image": [], "label": [], "video": []}

  def emit(n):
    batch = {k: np.stack(v[:n]) for k, v in buf.items()}
    for v in buf.values():
      del v[:n]
    batch = metrics.pad_batch(batch, global_batch)
    return to_global({k: v[rows] for k, v in batch.items()}, sharding)

  for i in range(len(source)):
    frames, label = source.get(i)
    for clip in eval_views(frames, **view_kwargs):
      buf["image"].append(clip)
      buf["label"].append(np.int32(label))
      buf["video"].append(np.int64(i))
    while len(buf["image"]) >= global_batch:
      yield emit(global_batch)
  if buf["image"]:
    yield emit(len(buf["image"]))

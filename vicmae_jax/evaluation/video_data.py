"""Labelled video data for fine-tuning: sources, clip decoding, clip augmentation, test views.

Decoding. Sources give the frames at indices chosen *before* decoding: `read(i, select)` calls
`select(num_video_frames)` with the frame count from the container's metadata
(`data.video.probe`: duration x average rate), then `data.video.decode_at_times` seeks to the
keyframe before the first wanted frame, decodes forward only as far as the last one (whole GOPs
in between that hold no wanted frame are demuxed, not decoded) and converts only the wanted
frames to RGB. Training reads one clip (16 frames x stride 4, about 2 s of a 10 s Kinetics
video; or the 16 SSv2 segment frames); testing reads the union of a video's temporal views in
one pass and cuts the spatial x temporal views from it. A video whose metadata is missing, or
whose stream ends before its header says, is decoded whole (`load_all_frames_naive`) and the
indices are drawn from the real frame count; these fallbacks are counted in
`VideoFileSource.counts` and logged.

Training (MAE-ST): each visited video gives `repeat_aug` clips (decoded once, augmented
`repeat_aug` times, as MAE-ST's fine-tuning loader: one temporal window, independent spatial
augmentation), one crop box / flip / RandAugment draw / erasing box for all frames of a clip.
"""
from __future__ import annotations

import collections
import functools
import logging
import math
import threading
from typing import Any, Callable, Iterator

import av
import cv2
import numpy as np
from PIL import Image

from vicmae_jax.data import augment as base_aug
from vicmae_jax.data import index as index_lib
from vicmae_jax.data import video as video_io
from vicmae_jax.data.badinput import BadInput
from vicmae_jax.evaluation import augment, metrics, video
from vicmae_jax.sharding import local_rows as _local_rows, to_global

Select = Callable[[int], np.ndarray]


# --- sources --------------------------------------------------------------------------------------
class VideoFileSource:
  """Videos of an `Index` (Kinetics CSV, SSv2 JSON, class folders), decoded by seeking.

  `short_side` bounds the decoded short side (swscale downsizes during the RGB conversion);
  Kinetics is usually stored at short side 320 already. `counts` holds 'seek' (videos read by
  seeking), 'frames_decoded' (frames out of the decoder on that path) and 'full_decode_<why>'
  (fallbacks to a whole-video decode).
  """

  def __init__(self, index: index_lib.Index, short_side: int | None = 320, threads: int = 1):
    self.index, self.short_side, self.threads = index, short_side, threads
    self.num_classes = len(index.classes) or int(max(index.labels) + 1)
    self.counts: collections.Counter = collections.Counter()
    self._lock = threading.Lock()  # the train iterator's loader threads share one source

  def __len__(self) -> int:
    return len(self.index)

  def _count(self, key: str, n: int = 1) -> int:
    with self._lock:
      self.counts[key] += n
      return self.counts[key]

  def _max_side(self, container: av.container.InputContainer) -> int | None:
    """The long-side bound that makes the short side `short_side` (frame_to_rgb bounds the long
    side)."""
    cc = container.streams.video[0].codec_context
    if not self.short_side or not cc.width or not cc.height:
      return self.short_side or None
    return int(math.ceil(self.short_side * max(cc.width, cc.height) / min(cc.width, cc.height)))

  def read(self, i: int, select: Select) -> tuple[np.ndarray, int]:
    """uint8 frames [*select(n).shape, H, W, 3] of video `i` and its label.

    `select(n)` maps the video's frame count to frame indices (any shape, repeats allowed). It is
    called once, or a second time with the true count after a fallback to a whole decode.
    """
    path, label = self.index.paths[i], int(self.index.labels[i])
    container = video_io.open_video(path, self.threads)
    try:
      max_side = self._max_side(container)
      try:
        info = video_io.probe(container, path)
        n = int(round(info.duration * info.fps))
        why = "" if n >= 1 else "no_duration"
      except (BadInput, av.error.FFmpegError):
        why = "no_metadata"
      if not why:
        idx = np.asarray(select(n), np.int64)
        start = max(info.start, _first_pts(container, info.start))
        times = start + (idx.reshape(-1) + 0.5) / info.fps  # slot j shows frame j (CFR)
        stats: dict[str, int] = {}
        try:
          decoded = video_io.decode_at_times(container, times, path=path, stats=stats)
        except BadInput as e:
          if e.kind != "truncated":
            raise
          why = "stream_shorter_than_header"
        else:
          self._count("seek")
          self._count("frames_decoded", stats.get("decoded", 0))
          rgb: dict[int, np.ndarray] = {}
          for frame, _ in decoded:
            if id(frame) not in rgb:  # one frame may serve several indices (short clips, views)
              rgb[id(frame)] = video_io.frame_to_rgb(frame, max_side)
          frames = np.stack([rgb[id(frame)] for frame, _ in decoded])
          return frames.reshape(idx.shape + frames.shape[1:]), label
    finally:
      container.close()
    return self._read_whole(path, label, max_side, select, why)

  def _read_whole(self, path: str, label: int, max_side: int | None, select: Select,
                  why: str) -> tuple[np.ndarray, int]:
    frames = video_io.load_all_frames_naive(path, max_side)
    if not frames:
      raise ValueError(f"{path}: no frames decoded")
    count = self._count(f"full_decode_{why}")
    if count <= 10 or count % 1000 == 0:  # a bad dataset should not flood the log
      logging.warning("%s: decoding the whole video (%s); %d such videos so far", path, why,
                      count)
    idx = np.asarray(select(len(frames)), np.int64)
    out = np.stack([frames[j] for j in idx.reshape(-1)])
    return out.reshape(idx.shape + out.shape[1:]), label


def _first_pts(container: av.container.InputContainer, default: float) -> float:
  """Presentation time (s) of the first packet, then back to the start.

  Usually the stream start; AVI with B-frames shows its first frame one tick after it, which
  would shift every index by one.
  """
  stream = container.streams.video[0]
  first = default
  for packet in container.demux(stream):
    if packet.size:
      if packet.is_keyframe and packet.pts is not None:
        first = float(packet.pts * stream.time_base)
      break
  container.seek(0, stream=stream)
  return first


class ArrayVideoSource:
  """In-memory uint8 videos [N, T, H, W, 3] (tests, toy runs)."""

  def __init__(self, videos: np.ndarray, labels: np.ndarray, num_classes: int):
    self.videos, self.labels, self.num_classes = videos, np.asarray(labels), num_classes

  def __len__(self) -> int:
    return len(self.labels)

  def read(self, i: int, select: Select) -> tuple[np.ndarray, int]:
    frames = self.videos[i]
    return frames[np.asarray(select(len(frames)), np.int64)], int(self.labels[i])


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
  'train': DIR, 'val': DIR} | {'kind': 'toy_video', 'train_size', 'val_size', 'size', 'frames'};
  file sources take 'short_side' (decode bound, default 320)."""
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
  return VideoFileSource(idx, spec.get("short_side", 320))


# --- frame indices (the math lives in video.clip_indices / video.segment_indices) -----------------
def train_indices(num_video_frames: int, rng: np.random.Generator, *, num_frames: int = 16,
                  stride: int = 4, sampling: str = "clip") -> np.ndarray:
  """[num_frames] indices of one random training clip."""
  if sampling == "segment":
    return video.segment_indices(num_video_frames, num_frames, rng=rng)
  return video.clip_indices(num_video_frames, num_frames, stride, rng=rng)


def view_indices(num_video_frames: int, *, num_frames: int = 16, stride: int = 4,
                 sampling: str = "clip", temporal: int = 7) -> np.ndarray:
  """[temporal, num_frames] indices of the test views (starts spread evenly over the video)."""
  if sampling == "segment":
    return np.stack([video.segment_indices(num_video_frames, num_frames, view=t,
                                           num_views=temporal) for t in range(temporal)])
  return np.stack([video.clip_indices(num_video_frames, num_frames, stride, view=t,
                                      num_views=temporal) for t in range(temporal)])


# --- clip augmentation ----------------------------------------------------------------------------
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


def load_train_clips(index: int, rng: np.random.Generator, *, source, repeats: int = 1,
                     num_frames: int = 16, stride: int = 4, sampling: str = "clip",
                     **aug) -> list[tuple[np.ndarray, int]]:
  """`repeats` augmented clips of video `index` from one decode (`TrainIterator.sample_fn`).

  The clip's frames are drawn once (MAE-ST fine-tuning repeats the spatial augmentation of one
  temporal window); `aug` goes to `augment_clip`.
  """
  time_seed = int(rng.integers(2**63))

  def select(n: int) -> np.ndarray:  # the same draw if called again after a fallback
    return train_indices(n, np.random.default_rng(time_seed), num_frames=num_frames,
                         stride=stride, sampling=sampling)

  frames, label = source.read(index, select)
  return [(augment_clip(frames, r, **aug), label) for r in rng.spawn(repeats)]


# --- test views -----------------------------------------------------------------------------------
def eval_views(clips: np.ndarray, *, size: int, spatial: int = 3) -> list[np.ndarray]:
  """[temporal, T, H, W, 3] uint8 -> temporal x spatial normalised clips (temporal-major)."""
  views = []
  for clip in clips:
    for crop in video.spatial_crops(clip, size, spatial):
      views.append(base_aug.normalize(crop.astype(np.float32)).astype(np.float32))
  return views


def view_batches(source, global_batch: int, *, sharding=None, size: int, num_frames: int = 16,
                 stride: int = 4, sampling: str = "clip", spatial: int = 3, temporal: int = 7
                 ) -> Iterator[dict[str, Any]]:
  """Batches {'image' (clips), 'label', 'mask', 'video'} over every view of every video once;
  each video is decoded once (the union of its temporal views)."""
  rows = _local_rows(global_batch)
  buf: dict[str, list] = {"image": [], "label": [], "video": []}
  select = functools.partial(view_indices, num_frames=num_frames, stride=stride,
                             sampling=sampling, temporal=temporal)

  def emit(n):
    batch = {k: np.stack(v[:n]) for k, v in buf.items()}
    for v in buf.values():
      del v[:n]
    batch = metrics.pad_batch(batch, global_batch)
    return to_global({k: v[rows] for k, v in batch.items()}, sharding)

  for i in range(len(source)):
    clips, label = source.read(i, select)
    for clip in eval_views(clips, size=size, spatial=spatial):
      buf["image"].append(clip)
      buf["label"].append(np.int32(label))
      buf["video"].append(np.int64(i))
    while len(buf["image"]) >= global_batch:
      yield emit(global_batch)
  if buf["image"]:
    yield emit(len(buf["image"]))

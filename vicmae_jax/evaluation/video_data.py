"""Labelled videos for fine-tuning: sources that decode only the frames a clip needs, and the
batching of training clips and test views. Which frames: `video_sampling`; how they are
augmented: `video_augment`; the decoding itself: `data.video.frames_at_times` (the pretraining
loader's decode path).

Sources give the frames at indices chosen *before* decoding: `read(i, select)` calls
`select(num_video_frames)` with the frame count from the container's metadata
(`data.video.probe`: duration x average rate) and decodes those frames only. Training reads one
clip (16 frames x stride 4, about 2 s of a 10 s Kinetics video; or the 16 SSv2 segment frames);
testing reads the union of a video's temporal views in one pass and cuts the spatial x temporal
views from it. A video whose metadata is missing, or whose stream ends before its header says,
is decoded whole (`load_all_frames_naive`) and the indices are drawn from the real frame count;
these fallbacks are counted in `VideoFileSource.counts` and logged. A video that cannot give
its frames (missing, empty, unreadable container, corrupt payload even in a whole decode) raises
`BadInput`: replaced in training (evaluation/data.py), left out and listed at test.

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
import numpy as np

from vicmae_jax.data import index as index_lib
from vicmae_jax.data import video as video_io
from vicmae_jax.data.badinput import BadInput, SkippedInputs
from vicmae_jax.evaluation import metrics, video_augment, video_sampling
from vicmae_jax.evaluation.progress import PassProgress
from vicmae_jax.sharding import local_rows, to_global

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

  def __getstate__(self) -> dict[str, Any]:  # Grain ships sources to worker processes
    return {k: v for k, v in self.__dict__.items() if k != "_lock"}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()

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

  def describe(self, i: int) -> str:
    return self.index.paths[i]

  def read(self, i: int, select: Select) -> tuple[np.ndarray, int]:
    """uint8 frames [*select(n).shape, H, W, 3] of video `i` and its label.

    `select(n)` maps the video's frame count to frame indices (any shape, repeats allowed). It is
    called once, or a second time with the true count after a fallback to a whole decode.
    Raises `BadInput` (missing, empty, unreadable, truncated) for a video that cannot give them.
    """
    path, label = self.index.paths[i], int(self.index.labels[i])
    container = video_io.open_video(path, self.threads)
    cause = None  # the seek path's failure, reported if the whole decode fails too
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
        stats: dict[str, int] = {}
        try:
          start = max(info.start, video_io.first_pts(container, info.start))
          times = start + (idx.reshape(-1) + 0.5) / info.fps  # slot j shows frame j (CFR)
          rgb, _ = video_io.frames_at_times(container, times, max_side=max_side, path=path,
                                            stats=stats)
        except av.error.FFmpegError as e:  # the demuxer gave up (first_pts)
          raise BadInput("unreadable", path, video_io.ffmpeg_cause(e)) from None
        except BadInput as e:
          if e.kind != "truncated":
            raise
          why, cause = "stream_shorter_than_header", e
        else:
          self._count("seek")
          self._count("frames_decoded", stats.get("decoded", 0))
          frames = np.stack(rgb)
          return frames.reshape(idx.shape + frames.shape[1:]), label
    finally:
      container.close()
    return self._read_whole(path, label, max_side, select, why, cause)

  def _read_whole(self, path: str, label: int, max_side: int | None, select: Select,
                  why: str, cause: BadInput | None = None) -> tuple[np.ndarray, int]:
    try:
      frames = video_io.load_all_frames_naive(path, max_side)
    except av.error.FFmpegError as e:
      # Corrupt payload (e.g. h264 "Error splitting the input into NAL units"): the seek path
      # already named it a decode error; without one, the file is unreadable.
      raise cause or BadInput("unreadable", path, f"whole decode: {e}") from None
    if not frames:
      raise cause or BadInput("unreadable", path, "no frames decoded")
    count = self._count(f"full_decode_{why}")
    if count <= 10 or count % 1000 == 0:  # a bad dataset should not flood the log
      logging.warning("%s: decoding the whole video (%s); %d such videos so far", path, why,
                      count)
    idx = np.asarray(select(len(frames)), np.int64)
    out = np.stack([frames[j] for j in idx.reshape(-1)])
    return out.reshape(idx.shape + out.shape[1:]), label


class ArrayVideoSource:
  """In-memory uint8 videos [N, T, H, W, 3] (tests, toy runs)."""

  def __init__(self, videos: np.ndarray, labels: np.ndarray, num_classes: int):
    self.videos, self.labels, self.num_classes = videos, np.asarray(labels), num_classes

  def __len__(self) -> int:
    return len(self.labels)

  def describe(self, i: int) -> str:
    return f"video {i}"

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
  if kind not in ("kinetics_csv", "ssv2", "video_folder"):
    raise ValueError(f"Unknown video source kind {kind!r}")
  return VideoFileSource(index_lib.read_split(spec, split), spec.get("short_side", 320))


# --- batching -------------------------------------------------------------------------------------
def load_train_clips(index: int, rng: np.random.Generator, *, source, repeats: int = 1,
                     num_frames: int = 16, stride: int = 4, sampling: str = "clip",
                     **aug) -> list[tuple[np.ndarray, int]]:
  """`repeats` augmented clips of video `index` from one decode (`TrainIterator.sample_fn`).

  The clip's frames are drawn once (MAE-ST fine-tuning repeats the spatial augmentation of one
  temporal window); `aug` goes to `augment_clip`.
  """
  time_seed = int(rng.integers(2**63))

  def select(n: int) -> np.ndarray:  # the same draw if called again after a fallback
    return video_sampling.train_indices(n, np.random.default_rng(time_seed), num_frames=num_frames,
                         stride=stride, sampling=sampling)

  frames, label = source.read(index, select)
  return [(video_augment.augment_clip(frames, r, **aug), label) for r in rng.spawn(repeats)]


def view_batches(source, global_batch: int, *, sharding=None, size: int, num_frames: int = 16,
                 stride: int = 4, sampling: str = "clip", spatial: int = 3, temporal: int = 7,
                 skipped: SkippedInputs | None = None, name: str = "video test"
                 ) -> Iterator[dict[str, Any]]:
  """Batches {'image' (clips), 'label', 'mask', 'video'} over every view of every readable
  video once; each video is decoded once (the union of its temporal views). An unreadable video
  gives no views and is recorded in `skipped` (every process reads every video, so each holds
  the whole list). Progress lines (videos done, rate, ETA) are logged as `name`."""
  skipped = skipped if skipped is not None else SkippedInputs(name)
  progress = PassProgress(name, len(source), unit="videos")
  rows = local_rows(global_batch)
  buf: dict[str, list] = {"image": [], "label": [], "video": []}
  select = functools.partial(video_sampling.view_indices, num_frames=num_frames, stride=stride,
                             sampling=sampling, temporal=temporal)

  def emit(n):
    batch = {k: np.stack(v[:n]) for k, v in buf.items()}
    for v in buf.values():
      del v[:n]
    batch = metrics.pad_batch(batch, global_batch)
    return to_global({k: v[rows] for k, v in batch.items()}, sharding)

  for i in range(len(source)):
    try:
      clips, label = source.read(i, select)
    except BadInput as e:
      skipped.add(i, e)
      clips = None
    progress.update(1)
    if clips is None:
      continue
    for clip in video_augment.eval_views(clips, size=size, spatial=spatial):
      buf["image"].append(clip)
      buf["label"].append(np.int32(label))
      buf["video"].append(np.int64(i))
    while len(buf["image"]) >= global_batch:
      yield emit(global_batch)
  if buf["image"]:
    yield emit(len(buf["image"]))
  progress.finish(f"{len(skipped)} unreadable, left out" if len(skipped) else "")

"""Which frames of a video a clip shows: MAE-ST / SlowFast clip sampling (16 frames, stride 4)
and TSN / VideoMAE segment sampling (SSv2), for training (random) and test (evenly spread views).
Pure functions of the video's frame count; decoding only the chosen frames is the source's job.
"""
from __future__ import annotations

import math

import numpy as np


def clip_indices(num_video_frames: int, num_frames: int = 16, stride: int = 4, *,
                 rng: np.random.Generator | None = None, view: int = 0,
                 num_views: int = 1) -> np.ndarray:
  """Frame indices of one clip of `num_frames` frames `stride` apart (K400: 16 x 4).

  Training (`rng`): a uniformly random start. Test: `num_views` starts spread evenly over the
  video, this is view `view` (the 7 temporal views of the 3 x 7 protocol). Clips that run past
  the end repeat the last frame.
  """
  span = (num_frames - 1) * stride + 1
  room = max(num_video_frames - span, 0)
  if rng is not None:
    start = int(rng.integers(0, room + 1))
  elif num_views > 1:
    start = int(round(view * room / (num_views - 1)))
  else:
    start = room // 2
  return np.minimum(start + stride * np.arange(num_frames), num_video_frames - 1)


def segment_indices(num_video_frames: int, num_segments: int = 16, *,
                    rng: np.random.Generator | None = None, view: int = 0,
                    num_views: int = 1) -> np.ndarray:
  """SSv2 / TSN segment sampling: one frame per equal segment.

  Training (`rng`): a random frame in each segment. Test: the middle of each segment for one
  view; with `num_views` > 1, view v takes the frame at fraction v / num_views of every segment
  (2 views: segment starts and middles, as VideoMAE's SSv2 test).
  """
  edges = np.linspace(0, num_video_frames, num_segments + 1)
  if rng is not None:
    frac = rng.uniform(size=num_segments)
  else:
    frac = 0.5 if num_views <= 1 else view / num_views
  idx = edges[:-1] + frac * (edges[1:] - edges[:-1])
  return np.minimum(np.floor(idx).astype(np.int64), num_video_frames - 1)


def train_indices(num_video_frames: int, rng: np.random.Generator, *, num_frames: int = 16,
                  stride: int = 4, sampling: str = "clip") -> np.ndarray:
  """[num_frames] indices of one random training clip."""
  if sampling == "segment":
    return segment_indices(num_video_frames, num_frames, rng=rng)
  return clip_indices(num_video_frames, num_frames, stride, rng=rng)


def view_indices(num_video_frames: int, *, num_frames: int = 16, stride: int = 4,
                 sampling: str = "clip", temporal: int = 7) -> np.ndarray:
  """[temporal, num_frames] indices of the test views (starts spread evenly over the video)."""
  if sampling == "segment":
    return np.stack([segment_indices(num_video_frames, num_frames, view=t,
                                           num_views=temporal) for t in range(temporal)])
  return np.stack([clip_indices(num_video_frames, num_frames, stride, view=t,
                                      num_views=temporal) for t in range(temporal)])


def num_test_views(spatial: int = 3, temporal: int = 7) -> int:
  """Views per video at test: spatial x temporal (K400: 3 x 7 = 21)."""
  return int(math.prod((spatial, temporal)))

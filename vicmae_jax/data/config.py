"""Typed settings of the pretraining input pipeline: every key, its default, its meaning.

This is the one place the defaults of `config.input` keys live (augmentation strengths are
constants of data/augment.AugmentConfig, not config keys; pretraining replaces `image_size` with
`model.image_size`). `InputConfig.of(mapping)` reads a dict or ConfigDict
(unknown keys are errors); configs/common.py starts every recipe from these defaults, so each
key is settable from the command line (`--config.input.reseek_s=2`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from vicmae_jax import typed_config


@dataclasses.dataclass(frozen=True)
class PairSampling:
  """How the two frames of a pair are placed in time (docs/decisions.md, D6).

  mode: 'distant' (clip cut in two equal halves, one frame uniformly from each), 'fixed_gap'
    (first frame uniform, second `gap` later) or 'random_gap' (gap uniform in [gap, gap_max]).
  unit: 'frames' (converted with the stream's average frame rate; exact for constant rate) or
    'seconds'. Gaps longer than the clip are clamped to it.
  """
  mode: str = 'distant'
  gap: float = 32
  gap_max: float = 64
  unit: str = 'frames'

  def __post_init__(self):
    if self.mode not in ('distant', 'fixed_gap', 'random_gap'):
      raise ValueError(f'unknown pair sampling mode {self.mode!r}')
    if self.unit not in ('frames', 'seconds'):
      raise ValueError(f'unknown gap unit {self.unit!r}')
    if self.gap < 0 or (self.mode == 'random_gap' and self.gap_max < self.gap):
      raise ValueError(f'bad gaps {self.gap}, {self.gap_max}')


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """The pipeline's settings (data/pipeline.py documents the batch contract)."""

  # Source specs, each a dict {kind, path, weight, name, root, split, data_dir, labels,
  # on_missing} read by data/sources.py (docs/data.md lists the kinds).
  sources: tuple[dict, ...] = ()
  image_size: int = 224                 # output side; pretraining takes it from model.image_size
  pair_sampling: PairSampling = PairSampling()
  repeated_sampling: int = 1            # pairs (or image view pairs) per decoded clip/image
  video_spatial_only: bool = False      # frames get crop 0.5-1 + flip only (docs/decisions.md, D7)
  uint8_output: bool = False            # uint8 0-255 views (normalise on device)
  num_workers: int = 0                  # mp_prefetch processes per host (0: in-process)
  read_threads: int = 2                 # threads per worker
  worker_buffer_size: int = 2           # batches buffered per worker
  decode_threads: int = 1               # FFmpeg threads per decode (1 is best, a worker per core)
  max_side: int = 1024                  # larger images/frames are downscaled before augmenting
  max_pixels: int = 200_000_000         # decodes larger than this (after JPEG draft) are refused
  reseek_s: float = 5.0                 # seek instead of demuxing forward past this gap
  bad_input_max_fraction: float = 0.01  # stop when more than this fraction of inputs is bad...
  bad_input_min_examples: int = 500     # ...once this many were attempted
  bad_input_max_retries: int = 5        # replacements tried for one bad example
  device_prefetch: int = 2              # global batches assembled on device ahead of use
  # A resume whose data position was saved with other num_workers or process count: 'error'
  # stops and says what changed; 'restart' keeps the model state and restarts the data order.
  on_layout_change: str = 'error'

  def __post_init__(self):
    if self.on_layout_change not in ('error', 'restart'):
      raise ValueError(f"on_layout_change must be error or restart, got {self.on_layout_change!r}")

  @classmethod
  def of(cls, config: Any) -> "InputConfig":
    """The settings of a dict, a ConfigDict or an InputConfig (returned as it is)."""
    if isinstance(config, cls):
      return config
    return typed_config.from_mapping(cls, config, "input")

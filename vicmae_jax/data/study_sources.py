"""The study dataset (`data/study.py`) as sources: kind `study` in pretraining and evaluation.

  pretraining  {'kind': 'study', 'part': 'videos' | 'images', 'path': ROOT, 'data_scale': 1.0,
                'preset': 'default'}
  labelled     {'kind': 'study', 'path': ROOT, 'data_scale': 1.0, 'preset': 'default'}
               (its splits: the probe's train and val)

The dataset is written under ROOT on first use (atomically; concurrent runs write identical
files), then its clips are pre-extracted once into ROOT/frames with every frame kept, so a pair
costs two small JPEG decodes (the production fast path) and frame gaps are exact. An empty
`path` means a cache folder named after the spec, shared by every run on the machine.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from vicmae_jax.data import index as index_lib, study

PARTS = ('videos', 'images')


def spec_for(data_scale: float = 1.0, preset: str = 'default') -> study.StudyDataSpec:
  """The dataset spec of a source: a named preset (study.PRESETS), per-class counts scaled."""
  presets = getattr(study, 'PRESETS', {'default': study.StudyDataSpec()})
  if preset not in presets:
    raise ValueError(f'unknown study data preset {preset!r}; presets: {sorted(presets)}')
  spec = presets[preset]
  return spec if data_scale == 1.0 else study.scaled(spec, data_scale)


def default_root(spec: study.StudyDataSpec) -> str:
  digest = hashlib.sha1(json.dumps(dataclasses.asdict(spec), sort_keys=True,
                                   default=str).encode()).hexdigest()[:10]
  return os.path.join(os.path.expanduser('~'), '.cache', 'vicmae_jax',
                      f'study_v{study.GENERATOR_VERSION}_{digest}')


def prepare(path: str = '', data_scale: float = 1.0, preset: str = 'default') -> dict[str, str]:
  """Writes the dataset (once) and its frame shards (once); returns the folders by part."""
  from vicmae_jax.tools import extraction
  spec = spec_for(data_scale, preset)
  root = os.path.abspath(path) if path else default_root(spec)
  try:
    study.write_study_data(root, spec)
  except (OSError, ValueError):
    # Another process may have finished the same dataset first; accept it if it is whole.
    if study.read_manifest(root) is None:
      raise
    study.write_study_data(root, spec)
  frames = os.path.join(root, 'frames')
  if not os.path.exists(os.path.join(frames, 'summary.json')):
    videos = index_lib.read_index(dict(kind='video_folder', path=os.path.join(root, 'videos')))
    extraction.extract_in_process(frames, videos, extraction.Options(
        frames_per_video=spec.frames, short_side=0, quality=95, videos_per_shard=64))
  return {'root': root, 'videos': frames, 'images': os.path.join(root, 'images'),
          'train': os.path.join(root, 'probe', 'train'),
          'val': os.path.join(root, 'probe', 'val')}


def _prepare(spec: dict[str, Any]) -> dict[str, str]:
  return prepare(spec.get('path', ''), float(spec.get('data_scale', 1.0)),
                 spec.get('preset', 'default'))


def pretrain_source(spec: dict[str, Any]) -> dict[str, Any]:
  """A `study` pretraining source -> the frames or image-folder source it stands for."""
  part = spec.get('part', 'videos')
  if part not in PARTS:
    raise ValueError(f"study source part must be one of {PARTS}, got {part!r}")
  folders = _prepare(spec)
  rest = {k: v for k, v in spec.items()
          if k not in ('kind', 'part', 'path', 'data_scale', 'preset')}
  kind = 'frames' if part == 'videos' else 'image_folder'
  return {'name': f'study_{part}', **rest, 'kind': kind, 'path': folders[part]}


def labelled_index(spec: dict[str, Any], split: str) -> index_lib.Index:
  """The probe's `train` or `val` split as a labelled index (class folders 0_zero ... 9_nine)."""
  folders = _prepare(spec)
  return index_lib.read_index(dict(kind='image_folder', path=folders[split]))

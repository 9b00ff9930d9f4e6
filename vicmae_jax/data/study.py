"""A labelled video + image dataset the project makes itself, for small-scale ablation studies.

Ten classes, the digits 0-9, drawn as stroke glyphs. In every video one glyph of one class
persists while everything that does not define the class changes smoothly over time: position,
scale, rotation, the glyph's colour, a panning background photo, the lighting, and an occluder
that crosses the frame. Still images and the probe splits are single frames of the same
generator. docs/study_data.md describes the design, every parameter and the measured checks
(the class is not readable from raw pixels, colour histograms or pixel nearest neighbours).

Layout written by `write_study_data(root)`::

    root/videos/<class>/v00000.mp4        H.264 pretraining clips (kind 'video_folder')
    root/images/<class>/i00000.png        pretraining still images (kind 'image_folder')
    root/probe/train/<class>/p00000.png   labelled probe train split
    root/probe/val/<class>/p00000.png     held-out probe val split
    root/study_data.json                  the spec, the counts, the generator version

with class folders `0_zero` ... `9_nine` (sorted by name they are numbered 0-9).

Every file comes from its own random stream, seeded by (spec.seed, split, class, index): the
splits never share a rendered object, and the same spec writes the same pixels (the H.264 encoder
runs single-threaded). Glyphs are the module's own polylines rasterised with a distance field in
numpy, not OpenCV text (OpenCV 5 replaced the Hershey fonts, so `cv2.putText` draws differently
across the versions the project allows).
"""
from __future__ import annotations

import argparse
import colorsys
import dataclasses
import fractions
import functools
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# 2: background scenes cut along a clip; the hue turns; saturation and value drift.
GENERATOR_VERSION = 2
CLASS_NAMES = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
SPLITS = ('videos', 'images', 'probe_train', 'probe_val')
# Seed-sequence words of the four random streams (never reuse a number for another split).
STREAM_IDS = {'videos': 1, 'images': 2, 'probe_train': 3, 'probe_val': 4}
SPLIT_DIRS = {'videos': 'videos', 'images': 'images', 'probe_train': 'probe/train',
              'probe_val': 'probe/val'}
MANIFEST = 'study_data.json'
# Photos bundled with scikit-image (no download): natural scenes, textures, microscopy, sky.
# Left out: 'page' and 'text' (printed characters, digit-like), flat or binary ones.
DEFAULT_BACKGROUNDS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field',
                       'immunohistochemistry', 'retina', 'camera', 'brick', 'grass', 'gravel',
                       'moon', 'coins', 'stereo_motorcycle')
GLYPH_STYLES = ('sans', 'segment', 'serif', 'hand')


@dataclasses.dataclass(frozen=True)
class StudyDataSpec:
  """Everything that decides the dataset's pixels (docs/study_data.md has the table).

  Fractions of the frame are of its side; "drifting" values follow a smooth stationary random
  process over the clip (two sinusoids, random phases, frequencies in `drift_cycles`), so any
  single frame, and a still image, sees the same distribution of each nuisance.
  """
  # Size and counts.
  num_classes: int = 10
  size: int = 64                          # frame side (px), square
  frames: int = 48                        # frames per video
  fps: int = 24
  videos_per_class: int = 24
  images_per_class: int = 24
  probe_train_per_class: int = 100
  probe_val_per_class: int = 50
  seed: int = 0
  # Object (the class): glyph construction per video.
  glyph_styles: tuple[str, ...] = GLYPH_STYLES
  stroke_width: tuple[float, float] = (0.08, 0.15)    # stroke width / glyph height
  glyph_aspect: tuple[float, float] = (0.55, 0.8)     # glyph width / height
  slant: tuple[float, float] = (-0.15, 0.3)           # horizontal shear (italic > 0)
  glyph_warp: float = 0.04                             # smooth control-point jitter / height
  # Geometry over time.
  scale: tuple[float, float] = (0.45, 0.9)            # glyph height / frame, drifting
  rotation_deg: float = 40.0                           # drifting in [-r, r]
  position_slack: float = 0.05                         # glyph box may leave the frame this much
  drift_cycles: tuple[float, float, float] = (0.25, 0.75, 1.5)  # slow in [a, b], fast in [b, c]
  # Colour of the object.
  saturation: tuple[float, float] = (0.3, 1.0)
  value: tuple[float, float] = (0.3, 1.0)
  # The hue wobbles +-hue_drift (fraction of the circle) around a turn of hue_turns circles per
  # clip (near 1 the hue comes back; saturation and value still drift).
  hue_drift: float = 0.08
  hue_turns: tuple[float, float] = (0.5, 1.0)
  colour_drift: bool = True                            # saturation, value drift over their ranges
  outline_width: tuple[float, float] = (0.012, 0.03)  # contrasting outline / frame
  # Background: a bundled photo, cropped, panning and zooming.
  backgrounds: tuple[str, ...] = DEFAULT_BACKGROUNDS
  background_scale: float = 3.0                        # photo short side / frame side
  background_zoom: tuple[float, float] = (1.0, 2.0)   # photo px per frame px, drifting
  background_pan: tuple[float, float] = (0.5, 1.5)    # frame widths of photo pixels per clip: on
                                                       # screen / zoom (5-15 sides at 'smooth')
  background_scenes: int = 4                           # independent photo windows along a clip...
  background_fade: float = 0.08                        # ...crossfading over this fraction of it
  # Lighting of the whole frame.
  brightness: float = 0.15                             # offset in [-b, b], drifting
  contrast: tuple[float, float] = (0.6, 1.2)          # drifting
  gamma: tuple[float, float] = (0.7, 1.4)             # drifting (log-uniform range)
  light_gradient: float = 0.3                          # max linear illumination slope per half side
  white_balance: float = 0.1                           # per-channel gain in [1-w, 1+w], drifting
  light_spin: float = 3.14                             # gradient direction turns <= this rad/clip
  noise_std: float = 0.01                              # per-pixel Gaussian noise (of 1.0)
  # Occluder: a random-colour rectangle or ellipse crossing the frame over the glyph.
  occluder_size: tuple[float, float] = (0.2, 0.35)    # side (or axis) / mean glyph height
  occluder_speed: tuple[float, float] = (0.8, 1.6)    # frame sides per clip
  occluder_offset: float = 0.15                        # path misses the glyph centre by <= this
  occluder_spin: float = 1.0                           # turns up to this many radians per clip
  # Encoding.
  crf: int = 18

  def __post_init__(self):
    if not 1 <= self.num_classes <= len(CLASS_NAMES):
      raise ValueError(f'num_classes must be in 1..{len(CLASS_NAMES)}, got {self.num_classes}')
    if self.size < 16 or self.size % 2:
      raise ValueError(f'size must be even and >= 16 (yuv420p), got {self.size}')
    if self.frames < 2:
      raise ValueError(f'frames must be >= 2, got {self.frames}')
    for name in ('videos_per_class', 'images_per_class', 'probe_train_per_class',
                 'probe_val_per_class'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0')
    if self.background_scenes < 1 or self.background_fade < 0:
      raise ValueError(f'background_scenes must be >= 1 and background_fade >= 0, got '
                       f'{self.background_scenes}, {self.background_fade}')
    if not 0 <= self.hue_turns[0] <= self.hue_turns[1]:
      raise ValueError(f'hue_turns must be an increasing range of turns >= 0, got {self.hue_turns}')
    unknown = sorted(set(self.glyph_styles) - set(GLYPH_STYLES))
    if unknown or not self.glyph_styles:
      raise ValueError(f'glyph_styles must be a non-empty subset of {GLYPH_STYLES}, got '
                       f'{self.glyph_styles}')
    if not self.backgrounds:
      raise ValueError('backgrounds must name at least one scikit-image sample photo')

  def per_class(self, split: str) -> int:
    return {'videos': self.videos_per_class, 'images': self.images_per_class,
            'probe_train': self.probe_train_per_class,
            'probe_val': self.probe_val_per_class}[split]

  def to_json(self) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(self)))

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> 'StudyDataSpec':
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
      raise ValueError(f'unknown StudyDataSpec fields {unknown}')
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def scaled(spec: StudyDataSpec, factor: float, **changes) -> StudyDataSpec:
  """`spec` with every per-class count times `factor` (rounded up, at least 1 where it was >0),
  plus any field `changes`: the small specs of tests and quick runs."""
  def f(n: int) -> int:
    return 0 if n == 0 else max(1, math.ceil(round(n * factor, 9)))
  return dataclasses.replace(
      spec, videos_per_class=f(spec.videos_per_class), images_per_class=f(spec.images_per_class),
      probe_train_per_class=f(spec.probe_train_per_class),
      probe_val_per_class=f(spec.probe_val_per_class), **changes)


# Photos with large smooth regions (sky, fur, skin, a table, the retina, the moon's surface):
# the easier presets leave out the dense textures (brick, grass, gravel, coins, tissue, the star
# field, the workshop) whose edges compete with the strokes at 64 px.
SMOOTH_BACKGROUNDS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'retina', 'moon')

# Named specs (`configs/study.py:preset=NAME`, data/study_sources.py). 'default' is the design
# of docs/study_data.md, the hard version (HOG reads 0.35 of it). The easier ones keep every
# nuisance changing over time (position, scale, rotation - except 'smooth' -, colour, background
# scenes, lighting, an occluder) and shrink the magnitudes that hide the shape: HOG reads 0.50
# ('medium'), 0.75 ('easy'), 0.95 ('smooth') while colour stays at chance and raw pixels at
# 0.13-0.21. Only on 'smooth' does the study's base arm beat a random encoder within an hour of
# 2 CPU cores; docs/study_data.md, "Presets and calibration", has every measurement.
# One clean style with thick strokes, a large glyph that varies 1.5x instead of 2x, +-15 deg,
# smooth photos magnified (blurred) instead of textures, a small occluder, mild lighting, and a
# 4x larger pretraining set. Colour (hue, saturation, value) and position drift as in 'default'.
_EASY = StudyDataSpec(
    glyph_styles=('sans',), stroke_width=(0.14, 0.2), glyph_aspect=(0.6, 0.8),
    slant=(-0.05, 0.15), glyph_warp=0.02, scale=(0.6, 0.9), rotation_deg=15.0,
    backgrounds=SMOOTH_BACKGROUNDS, background_zoom=(0.5, 1.0), brightness=0.1,
    contrast=(0.8, 1.1), gamma=(0.8, 1.25), light_gradient=0.15, white_balance=0.05,
    occluder_size=(0.1, 0.2), videos_per_class=100, images_per_class=100)

PRESETS: dict[str, StudyDataSpec] = {
    'default': StudyDataSpec(),
    'easy': _EASY,
    # The study's and the demo's preset (configs/study.py, docs/study.md): 'easy''s glyph upright
    # (no rotation) and 0.7-0.9 of the frame, on the smooth photos magnified 5-10x (soft colour
    # fields that pan, zoom and cut to another photo along the clip). Colour, position,
    # background scenes, lighting and the occluder change as in every preset.
    'smooth': dataclasses.replace(_EASY, scale=(0.7, 0.9), rotation_deg=0.0,
                                  background_zoom=(0.1, 0.2)),
    # Between 'default' and 'easy': the two regular styles (round and straight strokes), +-25 deg,
    # height 0.5-0.9, all 14 photos but less zoomed out, lighting and occluder between the two.
    'medium': StudyDataSpec(
        glyph_styles=('sans', 'segment'), stroke_width=(0.11, 0.18), glyph_aspect=(0.55, 0.8),
        slant=(-0.1, 0.25), glyph_warp=0.03, scale=(0.5, 0.9), rotation_deg=25.0,
        background_zoom=(0.75, 1.5), brightness=0.12, contrast=(0.7, 1.15), gamma=(0.75, 1.3),
        light_gradient=0.2, white_balance=0.08, occluder_size=(0.15, 0.28)),
}


def class_folder(class_id: int) -> str:
  """'0_zero', '1_one', ...: sorted by name, the folder readers number them 0-9."""
  return f'{class_id}_{CLASS_NAMES[class_id]}'


def item_rng(spec: StudyDataSpec, split: str, class_id: int, index: int) -> np.random.Generator:
  """The random stream of one file: disjoint across splits, classes and indices."""
  return np.random.default_rng([spec.seed, STREAM_IDS[split], class_id, index])


# ----------------------------------------------------------------------------- glyphs
# Polylines in a box x in [0, 1] (left to right), y in [0, 1] (top to bottom).

def _arc(cx, cy, rx, ry, a0, a1, n=None):
  """An elliptic arc from angle a0 to a1 (degrees; 90 is up, decreasing is clockwise)."""
  n = n or max(4, int(abs(a1 - a0) / 360 * 40) + 1)
  a = np.deg2rad(np.linspace(a0, a1, n))
  return np.stack([cx + rx * np.cos(a), cy - ry * np.sin(a)], 1)


def _bezier(*ctrl, n=14):
  """A quadratic or cubic Bezier curve through control points (x, y)."""
  p = np.asarray(ctrl, np.float64)
  t = np.linspace(0, 1, n)[:, None]
  if len(p) == 3:
    return (1 - t) ** 2 * p[0] + 2 * (1 - t) * t * p[1] + t ** 2 * p[2]
  return ((1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2]
          + t ** 3 * p[3])


def _pl(*pts):
  return np.asarray(pts, np.float64)


def _cat(*parts):
  return np.concatenate(parts, 0)


def _rot180(strokes):
  return [1.0 - s for s in strokes]


def _sans(d: int):
  if d == 0:
    return [_arc(.5, .5, .5, .5, 90, 450)]
  if d == 1:
    return [_pl((.2, .22), (.55, 0), (.55, 1))]
  if d == 2:
    return [_cat(_arc(.5, .27, .46, .27, 165, -30), _pl((0, 1), (1, 1)))]
  if d == 3:
    return [_arc(.5, .25, .42, .25, 150, -90), _arc(.5, .74, .48, .26, 90, -150)]
  if d == 4:
    return [_pl((.72, 1), (.72, 0), (0, .7), (1, .7))]
  if d == 5:
    return [_cat(_pl((.9, 0), (.18, 0), (.12, .45)), _arc(.48, .68, .46, .32, 140, -150))]
  if d == 6:
    return [_arc(.9, .7, .86, .7, 95, 180), _arc(.5, .7, .46, .3, 180, 540)]
  if d == 7:
    return [_pl((0, 0), (1, 0), (.35, 1))]
  if d == 8:
    return [_arc(.5, .25, .38, .25, -90, 270), _arc(.5, .72, .48, .28, 90, 450)]
  return _rot180(_sans(6))


_SEG = dict(a=(0, 0), b=(1, 0), c=(0, .5), d=(1, .5), e=(0, 1), f=(1, 1))


def _segment(d: int):
  """Digital-display digits: straight strokes through the corners of two stacked squares."""
  paths = {0: ['abfea'], 1: ['bf'], 2: ['abdcef'], 3: ['abfe', 'cd'], 4: ['acd', 'bf'],
           5: ['bacdfe'], 6: ['baefdc'], 7: ['abf'], 8: ['abfea', 'cd'], 9: ['dcabfe']}[d]
  return [_pl(*(_SEG[k] for k in p)) for p in paths]


def _serif(d: int):
  if d == 0:  # slashed zero
    return [_arc(.5, .5, .5, .5, 90, 450), _pl((.82, .12), (.18, .88))]
  if d == 1:
    return [_pl((.2, .22), (.5, 0), (.5, 1)), _pl((.18, 1), (.82, 1))]
  if d == 2:
    return [_cat(_arc(.5, .28, .45, .28, 170, -10), _bezier((.94, .33), (.9, .6), (0, 1)),
                 _pl((1, 1)))]
  if d == 3:  # flat-topped 3
    return [_cat(_pl((.05, 0), (.95, 0), (.42, .4)), _arc(.5, .69, .48, .31, 110, -150))]
  if d == 4:  # open top
    return [_pl((.5, 0), (0, .68), (1, .68)), _pl((.76, .3), (.76, 1))]
  if d == 5:
    return [_cat(_pl((.95, 0), (.2, 0), (.14, .44)), _bezier((.14, .44), (1.15, .2), (1.1, 1.0),
                                                             (0, .9), n=20))]
  if d == 6:
    return [_cat(_bezier((.85, .04), (.2, .0), (-.05, .5), (.1, .8), n=16),
                 _arc(.5, .7, .45, .3, 200, 560))]
  if d == 7:  # crossed seven
    return [_pl((0, 0), (1, 0), (.3, 1)), _pl((.3, .52), (.85, .52))]
  if d == 8:
    return [_arc(.5, .22, .34, .22, -90, 270), _arc(.5, .7, .5, .3, 90, 450)]
  return [_arc(.5, .3, .46, .3, 0, 360), _pl((.96, .3), (.9, 1))]  # straight-stem 9


def _hand(d: int):
  if d == 0:  # open at the top, overlapping
    return [_arc(.5, .5, .5, .5, 70, 440)]
  if d == 1:
    return [_pl((.5, 0), (.5, 1))]
  if d == 2:  # looped 2
    return [_cat(_arc(.5, .27, .45, .27, 160, -20), _bezier((.92, .36), (.6, .75), (.05, .95)),
                 _arc(.15, .88, .12, .1, 225, -90), _pl((1, .98)))]
  if d == 3:
    return [_arc(.45, .24, .45, .24, 160, -90), _arc(.45, .74, .5, .26, 90, -160)]
  if d == 4:  # two strokes, open
    return [_pl((.3, 0), (0, .6), (1, .6)), _pl((.7, .15), (.7, 1))]
  if d == 5:
    return [_cat(_pl((.15, 0), (.1, .45)), _arc(.48, .68, .46, .32, 140, -150)),
            _pl((.15, 0), (.9, 0))]
  if d == 6:  # spiral 6
    return [_cat(_bezier((.8, 0), (.0, .1), (-.05, .9), (.5, 1), n=16),
                 _arc(.5, .7, .45, .3, -90, 200))]
  if d == 7:
    return [_pl((0, .12), (0, 0), (1, 0), (.4, 1))]
  if d == 8:  # one-stroke figure eight
    t = np.linspace(0, 2 * np.pi, 48)
    return [np.stack([.5 + .48 * np.sin(2 * t) * np.where(t < np.pi, .8, 1.0),
                      .5 - .5 * np.cos(t)], 1)]
  return [_arc(.5, .3, .45, .3, 0, 360), _bezier((.95, .3), (.98, .8), (.5, 1))]


_STYLE_FNS = {'sans': _sans, 'segment': _segment, 'serif': _serif, 'hand': _hand}


def glyph_strokes(style: str, digit: int) -> list[np.ndarray]:
  """The polylines (arrays [n, 2], box coordinates) of `digit` in `style`."""
  return [np.asarray(s, np.float64) for s in _STYLE_FNS[style](digit)]


def _glyph_segments(rng: np.random.Generator, spec: StudyDataSpec, digit: int) -> np.ndarray:
  """A per-video glyph instance as segments [S, 2, 2]: centred, height 1, y down."""
  style = spec.glyph_styles[rng.integers(len(spec.glyph_styles))]
  aspect = rng.uniform(*spec.glyph_aspect)
  slant = rng.uniform(*spec.slant)
  # Smooth warp: two random low-frequency displacement waves per axis.
  k = rng.uniform(0.5, 1.5, (2, 2, 2))  # axis, wave, (kx, ky)
  ph = rng.uniform(0, 2 * np.pi, (2, 2))
  amp = spec.glyph_warp * rng.uniform(0.3, 1.0, (2, 2)) / 2
  segs = []
  for s in glyph_strokes(style, digit):
    x, y = s[:, 0], s[:, 1]
    wx = sum(amp[0, j] * np.sin(2 * np.pi * (k[0, j, 0] * x + k[0, j, 1] * y) + ph[0, j])
             for j in range(2))
    wy = sum(amp[1, j] * np.sin(2 * np.pi * (k[1, j, 0] * x + k[1, j, 1] * y) + ph[1, j])
             for j in range(2))
    x, y = x + wx, y + wy
    pts = np.stack([(x - .5) * aspect - slant * (y - .5), y - .5], 1)
    segs.append(np.stack([pts[:-1], pts[1:]], 1))
  seg = np.concatenate(segs, 0)
  lo, hi = seg.reshape(-1, 2).min(0), seg.reshape(-1, 2).max(0)
  seg = (seg - (lo + hi) / 2) / (hi[1] - lo[1])
  return seg


# ----------------------------------------------------------------------------- backgrounds

@functools.lru_cache(maxsize=8)
def _background_photos(names: tuple[str, ...], short_side: int) -> tuple[np.ndarray, ...]:
  """The named scikit-image sample photos as float32 RGB in [0, 1], short side `short_side`."""
  from PIL import Image
  from skimage import data as skdata
  out = []
  for name in names:
    fn = getattr(skdata, name, None)
    if fn is None:
      raise ValueError(f'{name!r} is not a scikit-image sample image')
    try:
      arr = fn()
    except Exception as e:  # pooch-fetched images are not bundled: name the cause
      raise ValueError(f'scikit-image sample {name!r} is not available offline '
                       f'({type(e).__name__}: {e}); use only bundled ones') from None
    if isinstance(arr, tuple):  # stereo_motorcycle: (left, right, disparity)
      arr = arr[0]
    arr = np.asarray(arr)
    if arr.dtype == bool:
      arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
      arr = np.clip(arr * (255 if arr.max() <= 1 else 1), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
      arr = np.stack([arr] * 3, -1)
    arr = arr[..., :3]
    h, w = arr.shape[:2]
    f = short_side / min(h, w)
    new_size = (max(short_side, round(w * f)), max(short_side, round(h * f)))
    img = Image.fromarray(arr).resize(new_size, Image.Resampling.BOX)
    out.append(np.asarray(img, np.float32) / 255.0)
  return tuple(out)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Samples img [h, w, 3] at float pixel coordinates (pixel centres at +0.5), clamped edges."""
  h, w = img.shape[:2]
  x, y = x - 0.5, y - 0.5
  x0, y0 = np.floor(x), np.floor(y)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  xa, xb = np.clip(x0, 0, w - 1).astype(np.intp), np.clip(x0 + 1, 0, w - 1).astype(np.intp)
  ya, yb = np.clip(y0, 0, h - 1).astype(np.intp), np.clip(y0 + 1, 0, h - 1).astype(np.intp)
  top = img[ya, xa] * (1 - fx) + img[ya, xb] * fx
  bot = img[yb, xa] * (1 - fx) + img[yb, xb] * fx
  return top * (1 - fy) + bot * fy


def _triangle(u: np.ndarray) -> np.ndarray:
  """A triangle wave in [0, 1] with period 2 (a pan that bounces off the photo's edges)."""
  return 1 - np.abs(np.mod(u, 2) - 1)


# ----------------------------------------------------------------------------- rendering

def _drift(rng: np.random.Generator, spec: StudyDataSpec, n: int = 1):
  """Parameters of `n` smooth stationary processes in [-1, 1]: (freqs [n, 2], phases [n, 2])."""
  a, b, c = spec.drift_cycles
  freqs = np.stack([rng.uniform(a, b, n), rng.uniform(b, c, n)], 1)
  return freqs, rng.uniform(0, 2 * np.pi, (n, 2))


def _eval_drift(d, tau: np.ndarray) -> np.ndarray:
  """Values [n, T] in [-1, 1] at clip times tau (fraction of the clip)."""
  freqs, phases = d
  ang = 2 * np.pi * freqs[:, :, None] * tau[None, None, :] + phases[:, :, None]
  return 0.7 * np.sin(ang[:, 0]) + 0.3 * np.sin(ang[:, 1])


def _lerp(lo_hi, s):
  lo, hi = lo_hi
  return lo + (hi - lo) * (s + 1) / 2


def _hsv(h, s, v):
  return np.asarray(colorsys.hsv_to_rgb(float(h) % 1.0, float(s), float(v)), np.float32)


def _sample_params(spec: StudyDataSpec, rng: np.random.Generator, class_id: int) -> dict:
  """Everything about one video (or one still image) that stays fixed over its time."""
  if not 0 <= class_id < spec.num_classes:
    raise ValueError(f'class_id {class_id} outside 0..{spec.num_classes - 1}')
  p: dict[str, Any] = {}
  p['glyph'] = _glyph_segments(rng, spec, class_id)
  p['stroke'] = rng.uniform(*spec.stroke_width)
  # Geometry: scale, rotation, x, y.
  p['geom'] = _drift(rng, spec, 4)
  # Colour: hue (drifting), saturation, value; a contrasting outline.
  p['hue'] = rng.uniform()
  p['hue_turn'] = rng.uniform(*spec.hue_turns) * rng.choice([-1.0, 1.0])
  p['sat'] = rng.uniform(*spec.saturation)
  p['val'] = rng.uniform(*spec.value)
  p['hue_drift'] = _drift(rng, spec, 1)
  p['sv_drift'] = _drift(rng, spec, 2)
  # A contrasting outline: dark where the fill is bright, light where it is dark (per frame).
  p['outline_dark'] = _hsv(rng.uniform(), rng.uniform(0, 1), rng.uniform(0, 0.2))
  p['outline_light'] = _hsv(rng.uniform(), rng.uniform(0, 0.4), rng.uniform(0.8, 1.0))
  p['outline_w'] = rng.uniform(*spec.outline_width) * spec.size
  # Background: independent photo windows (scenes), one after another along the clip.
  k = spec.background_scenes
  p['scenes'] = [_sample_scene(spec, rng) for _ in range(k + 1 if k > 1 else 1)]
  p['scene_offset'] = rng.uniform()
  # Lighting: brightness, contrast, gamma, gradient strength, white balance x3.
  p['light'] = _drift(rng, spec, 7)
  p['light_angle'] = rng.uniform(0, 2 * np.pi)
  p['light_spin'] = rng.uniform(-spec.light_spin, spec.light_spin)
  # Occluder.
  p['occ_shape'] = int(rng.integers(2))  # 0 rectangle, 1 ellipse
  p['occ_half'] = rng.uniform(*spec.occluder_size, 2) / 2
  p['occ_angle'] = rng.uniform(0, np.pi)
  p['occ_spin'] = rng.uniform(-spec.occluder_spin, spec.occluder_spin)
  p['occ_colour'] = rng.uniform(0, 1, 3).astype(np.float32)
  p['occ_tau0'] = rng.uniform()
  ang = rng.uniform(0, 2 * np.pi)
  p['occ_dir'] = np.array([np.cos(ang), np.sin(ang)])
  p['occ_speed'] = rng.uniform(*spec.occluder_speed)
  p['occ_offset'] = rng.uniform(-spec.occluder_offset, spec.occluder_offset)
  return p


def _sample_scene(spec: StudyDataSpec, rng: np.random.Generator) -> dict:
  """One background window: a photo (flipped, channels permuted), where it starts, its pan and
  its zoom drift."""
  ang = rng.uniform(0, 2 * np.pi)
  return {'bg': int(rng.integers(len(spec.backgrounds))), 'flip': bool(rng.integers(2)),
          'perm': rng.permutation(3), 'start': rng.uniform(0, 2, 2),
          'pan': rng.uniform(*spec.background_pan) * np.array([np.cos(ang), np.sin(ang)]),
          'zoom': _drift(rng, spec, 1)}


def scene_weights(spec: StudyDataSpec, offset: float, tau: np.ndarray) -> np.ndarray:
  """Weights [scenes, T] of a clip's background scenes at clip times tau (fraction of the clip).

  With K = `background_scenes` > 1 the clip cuts to a new scene every 1/K of its length, at a
  random phase `offset` (in [0, 1) of a scene), so it shows parts of K + 1 scenes; each cut is a
  linear crossfade over `background_fade` of the clip. Two frames more than 1/K + fade apart never
  share a scene. K = 1: one scene throughout.
  """
  k = spec.background_scenes
  if k <= 1:
    return np.ones((1, len(tau)))
  pos = tau * k + 1 - offset                  # in [1 - offset, k + 1 - offset): scene coordinate
  fade = max(spec.background_fade * k, 1e-6)  # in scene units
  w = np.stack([np.clip((pos - i) / fade + 0.5, 0, 1) - np.clip((pos - i - 1) / fade + 0.5, 0, 1)
                for i in range(k + 1)])
  w[0] += np.clip(0.5 - pos / fade, 0, 1)     # no scene before the first
  w[k] += np.clip((pos - k - 1) / fade + 0.5, 0, 1)  # nor after the last
  return w / np.maximum(w.sum(0, keepdims=True), 1e-9)


def _render_scene(spec: StudyDataSpec, scene: dict, tau: np.ndarray, rel_x: np.ndarray,
                  rel_y: np.ndarray) -> np.ndarray:
  """A window on the scene's photo that pans (bouncing off its edges) and zooms: [T, H, W, 3]."""
  size = spec.size
  photo = _background_photos(tuple(spec.backgrounds),
                             int(round(spec.background_scale * size)))[scene['bg']]
  if scene['flip']:
    photo = photo[:, ::-1]
  photo = photo[..., scene['perm']]
  zoom = _lerp(spec.background_zoom, _eval_drift(scene['zoom'], tau)[0])[:, None]  # [T, 1]
  span = np.maximum(np.array([photo.shape[1], photo.shape[0]]) - zoom * size, 0)  # [T, 2]
  u = scene['start'] + scene['pan'] * size * tau[:, None] / np.maximum(span, 1)
  centre = zoom * size / 2 + _triangle(u) * span
  centre, zoom = centre.astype(np.float32), zoom.astype(np.float32)
  return _bilinear(photo, centre[:, 0, None, None] + zoom[:, :, None] * rel_x,
                   centre[:, 1, None, None] + zoom[:, :, None] * rel_y)


def _segment_distance(px: np.ndarray, py: np.ndarray, seg: np.ndarray) -> np.ndarray:
  """Distance from each point (px, py) [n] to the nearest of the segments [S, 2, 2]."""
  a, b = seg[:, 0].astype(np.float32), seg[:, 1].astype(np.float32)
  ab = b - a
  denom = np.maximum((ab * ab).sum(1), 1e-9)
  apx = px[:, None] - a[None, :, 0]
  apy = py[:, None] - a[None, :, 1]
  t = np.clip((apx * ab[None, :, 0] + apy * ab[None, :, 1]) / denom, 0, 1)
  dx = apx - t * ab[None, :, 0]
  dy = apy - t * ab[None, :, 1]
  return np.sqrt((dx * dx + dy * dy).min(1))


def _render(spec: StudyDataSpec, p: dict, tau: np.ndarray, noise_rng: np.random.Generator,
            with_masks: bool = False):
  """Frames [T, H, W, 3] uint8 at clip times `tau`; with_masks adds the glyph's fill coverage
  and the occluder's coverage [T, H, W] (float32) for checks."""
  n, size = len(tau), spec.size
  t3 = tau[:, None, None]
  grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
  rel_x, rel_y = grid_x - size / 2, grid_y - size / 2
  # Background: the scenes, crossfading where the clip cuts from one to the next.
  weights = scene_weights(spec, p['scene_offset'], tau)
  img = np.zeros((n, size, size, 3), np.float32)
  for scene, w in zip(p['scenes'], weights):
    on = w > 0
    if on.any():
      img[on] += w[on, None, None, None].astype(np.float32) * _render_scene(
          spec, scene, tau[on], rel_x, rel_y)
  # Glyph: a distance field to its segments (in its bounding box only), fill and outline.
  g = _eval_drift(p['geom'], tau)
  scale = _lerp(spec.scale, g[0]) * size
  fill = np.zeros((n, size, size), np.float32)
  outl = np.zeros((n, size, size), np.float32)
  for i in range(n):
    gseg = _place_glyph(spec, p, g[:, i])
    r_fill = p['stroke'] * scale[i] / 2
    r_out = r_fill + p['outline_w']
    lo = np.floor(gseg.reshape(-1, 2).min(0) - r_out - 1).astype(int).clip(0, size)
    hi = np.ceil(gseg.reshape(-1, 2).max(0) + r_out + 1).astype(int).clip(0, size)
    if (hi > lo).all():
      box = np.s_[lo[1]:hi[1], lo[0]:hi[0]]
      dist = _segment_distance(grid_x[box].ravel(), grid_y[box].ravel(), gseg)
      dist = dist.reshape(hi[1] - lo[1], hi[0] - lo[0])
      fill[i][box] = np.clip(r_fill - dist + 0.5, 0, 1)
      outl[i][box] = np.clip(r_out - dist + 0.5, 0, 1)
  hue = p['hue'] + p['hue_turn'] * tau + spec.hue_drift * _eval_drift(p['hue_drift'], tau)[0]
  if spec.colour_drift:
    sv = _eval_drift(p['sv_drift'], tau)
    sat, val = _lerp(spec.saturation, sv[0]), _lerp(spec.value, sv[1])
  else:
    sat, val = np.full(n, p['sat']), np.full(n, p['val'])
  rgb = np.stack([_hsv(h, s_, v) for h, s_, v in zip(hue, sat, val)])  # [T, 3]
  lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
  outline = np.where((lum > 0.45)[:, None], p['outline_dark'], p['outline_light'])
  colour = rgb[:, None, None].astype(np.float32)  # [T, 1, 1, 3]
  img = img * (1 - outl[..., None]) + outline[:, None, None].astype(np.float32) * outl[..., None]
  img = img * (1 - fill[..., None]) + colour * fill[..., None]
  # Occluder: crosses the glyph's path, at tau0 over the glyph centre of that moment.
  t0 = p['occ_tau0']
  c0 = _place_glyph(spec, p, _eval_drift(p['geom'], np.array([t0]))[:, 0]).reshape(-1, 2)
  c0 = (c0.min(0) + c0.max(0)) / 2
  mean_h = np.mean(spec.scale) * size
  perp = np.array([-p['occ_dir'][1], p['occ_dir'][0]])
  oc = (c0 + perp * p['occ_offset'] * mean_h
        + p['occ_dir'] * p['occ_speed'] * size * (tau[:, None] - t0)).astype(np.float32)
  a = (p['occ_angle'] + p['occ_spin'] * tau)[:, None, None].astype(np.float32)
  dx, dy = grid_x - oc[:, 0, None, None], grid_y - oc[:, 1, None, None]
  ux, uy = dx * np.cos(a) + dy * np.sin(a), -dx * np.sin(a) + dy * np.cos(a)
  ha, hb = p['occ_half'] * mean_h
  if p['occ_shape'] == 0:
    d = np.maximum(np.abs(ux) - ha, np.abs(uy) - hb)
  else:
    d = (np.sqrt((ux / ha) ** 2 + (uy / hb) ** 2) - 1) * min(ha, hb)
  occ = np.clip(0.5 - d, 0, 1).astype(np.float32)
  img = img * (1 - occ[..., None]) + p['occ_colour'] * occ[..., None]
  # Lighting: gamma, contrast, brightness, a linear illumination gradient, white balance.
  light = _eval_drift(p['light'], tau)[..., None, None].astype(np.float32)  # [7, T, 1, 1]
  gamma = np.exp(_lerp(np.log(spec.gamma), light[2]))
  img = np.clip(img, 0, 1) ** gamma[..., None]
  img = (img - 0.5) * _lerp(spec.contrast, light[1])[..., None] + 0.5 + (
      spec.brightness * light[0])[..., None]
  ang = (p['light_angle'] + p['light_spin'] * t3).astype(np.float32)
  slope = spec.light_gradient * (light[3] + 1) / 2
  img = img * (1 + slope * (np.cos(ang) * rel_x + np.sin(ang) * rel_y) / (size / 2))[..., None]
  img = img * (1 + spec.white_balance * np.moveaxis(light[4:7], 0, -1))
  img = img + noise_rng.standard_normal(img.shape, dtype=np.float32) * spec.noise_std
  out = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
  return (out, fill, occ) if with_masks else out


def _place_glyph(spec: StudyDataSpec, p: dict, g: np.ndarray) -> np.ndarray:
  """The glyph's segments [S, 2, 2] in frame pixels for the geometry drift values g [4] of one
  moment: scale, rotation, then a centre that keeps its box inside the frame (up to the slack)."""
  size = spec.size
  scale = _lerp(spec.scale, g[0]) * size
  theta = np.deg2rad(spec.rotation_deg * g[1])
  c, s = np.cos(theta), np.sin(theta)
  gseg = p['glyph'] @ np.array([[c, s], [-s, c]]).T * scale
  lo, hi = gseg.reshape(-1, 2).min(0), gseg.reshape(-1, 2).max(0)
  slack = spec.position_slack * size
  lo_c, hi_c = -lo - slack, size - hi + slack
  mid, half = (lo_c + hi_c) / 2, np.maximum((hi_c - lo_c) / 2, 0)
  return gseg + mid + g[2:4] * half


def render_clip(spec: StudyDataSpec, rng: np.random.Generator, class_id: int, *,
                with_masks: bool = False):
  """One video of class `class_id`: uint8 [spec.frames, size, size, 3].

  with_masks=True returns (frames, glyph fill coverage [T, H, W], occluder coverage [T, H, W]).
  """
  p = _sample_params(spec, rng, class_id)
  tau = np.arange(spec.frames) / spec.frames
  return _render(spec, p, tau, rng, with_masks)


def render_image(spec: StudyDataSpec, rng: np.random.Generator, class_id: int, *,
                 with_masks: bool = False):
  """One still image of class `class_id`, uint8 [size, size, 3]: the frame at a uniformly random
  moment of a video drawn from `rng`, so images and frames share one distribution."""
  p = _sample_params(spec, rng, class_id)
  tau = np.array([rng.uniform()])
  out = _render(spec, p, tau, rng, with_masks)
  return tuple(o[0] for o in out) if with_masks else out[0]


def render_split(spec: StudyDataSpec, split: str, classes: Sequence[int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """The still images of an image split ('images', 'probe_train', 'probe_val') in memory,
  exactly the pixels `write_study_data` stores: (uint8 [N, H, W, 3], int32 labels [N])."""
  if split == 'videos':
    raise ValueError("render_split renders still images; videos come from render_clip")
  classes = range(spec.num_classes) if classes is None else classes
  xs, ys = [], []
  for c in classes:
    for i in range(spec.per_class(split)):
      xs.append(render_image(spec, item_rng(spec, split, c, i), c))
      ys.append(c)
  return (np.stack(xs) if xs else np.zeros((0, spec.size, spec.size, 3), np.uint8),
          np.asarray(ys, np.int32))


# ----------------------------------------------------------------------------- files

def encode_video(path: str, frames: np.ndarray, fps: int, crf: int = 18) -> None:
  """H.264 (libx264, yuv420p, one encoder thread, no mb-tree: the same frames give the same
  bytes)."""
  import av
  container = av.open(path, 'w', format='mp4')
  try:
    stream = container.add_stream('libx264', rate=fps)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], 'yuv420p'
    stream.codec_context.thread_count = 1
    # x264's macroblock-tree rate control made different bytes for the same frames from one
    # process to the next (PyAV 18's bundled libx264); without it the output is reproducible.
    stream.options = {'crf': str(crf), 'threads': '1', 'mbtree': '0'}
    tb = fractions.Fraction(1, fps)
    for i, f in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format='rgb24')
      frame.pts, frame.time_base = i, tb
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  finally:
    container.close()


def _write_png(path: str, img: np.ndarray) -> None:
  from PIL import Image
  Image.fromarray(img).save(path, 'PNG')


def _item_name(split: str, index: int) -> str:
  return {'videos': 'v', 'images': 'i'}.get(split, 'p') + f'{index:05d}' + (
      '.mp4' if split == 'videos' else '.png')


def _write_split(tmp: str, spec: StudyDataSpec, split: str) -> dict[str, int]:
  counts = {}
  for c in range(spec.num_classes):
    counts[class_folder(c)] = spec.per_class(split)
    if not spec.per_class(split):
      continue  # no empty folders: the folder readers refuse them
    folder = os.path.join(tmp, SPLIT_DIRS[split], class_folder(c))
    os.makedirs(folder, exist_ok=True)
    for i in range(spec.per_class(split)):
      rng = item_rng(spec, split, c, i)
      path = os.path.join(folder, _item_name(split, i))
      if split == 'videos':
        encode_video(path, render_clip(spec, rng, c), spec.fps, spec.crf)
      else:
        _write_png(path, render_image(spec, rng, c))
  return counts


def _versions() -> dict[str, str]:
  import av
  import PIL
  import skimage
  return {'numpy': np.__version__, 'av': av.__version__, 'pillow': PIL.__version__,
          'scikit-image': skimage.__version__}


def _manifest(spec: StudyDataSpec, counts: dict) -> dict[str, Any]:
  return {
      'generator': 'vicmae_jax.data.study', 'generator_version': GENERATOR_VERSION,
      'spec': spec.to_json(), 'classes': [class_folder(c) for c in range(spec.num_classes)],
      'layout': {s: SPLIT_DIRS[s] for s in SPLITS}, 'counts': counts,
      'totals': {s: sum(counts[s].values()) for s in SPLITS},
      'video': {'codec': 'h264', 'pix_fmt': 'yuv420p', 'frames': spec.frames, 'fps': spec.fps,
                'size': [spec.size, spec.size], 'crf': spec.crf},
      'library_versions': _versions(),
  }


def read_manifest(root: str) -> dict[str, Any] | None:
  """root/study_data.json as a dict, or None when there is none."""
  path = os.path.join(root, MANIFEST)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def spec_differences(old: Mapping[str, Any], spec: StudyDataSpec) -> list[str]:
  """'field: old -> new' for every field where a stored manifest differs from `spec`."""
  new = spec.to_json()
  diffs = [f'{k}: {old["spec"].get(k, "<absent>")!r} -> {new[k]!r}' for k in new
           if old.get('spec', {}).get(k, '<absent>') != new[k]]
  diffs += [f'{k}: {old["spec"][k]!r} -> <absent>' for k in old.get('spec', {}) if k not in new]
  if old.get('generator_version') != GENERATOR_VERSION:
    diffs.append(f'generator_version: {old.get("generator_version")!r} -> {GENERATOR_VERSION}')
  return diffs


def _missing_files(root: str, manifest: Mapping[str, Any]) -> list[str]:
  """The class folders whose file count differs from the manifest's (a cheap listing)."""
  bad = []
  for split, per_class in manifest['counts'].items():
    ext = '.mp4' if split == 'videos' else '.png'
    for name, count in per_class.items():
      folder = os.path.join(root, manifest['layout'][split], name)
      have = len([f for f in os.listdir(folder) if f.endswith(ext)]) if os.path.isdir(folder) else 0
      if have != count:
        bad.append(f'{folder} ({have} of {count})')
  return bad


def study_sources(root: str) -> dict[str, dict[str, Any]]:
  """The project's source specs for the folders: pretraining videos and images (data/sources.py
  kinds) and the probe's labelled splits (evaluation/data.py's file-split spec)."""
  return {
      'videos': {'kind': 'video_folder', 'path': os.path.join(root, 'videos'),
                 'name': 'study_videos'},
      'images': {'kind': 'image_folder', 'path': os.path.join(root, 'images'),
                 'name': 'study_images'},
      'probe': {'kind': 'image_folder', 'train': os.path.join(root, 'probe', 'train'),
                'val': os.path.join(root, 'probe', 'val')},
  }


def write_study_data(root: str, spec: StudyDataSpec = StudyDataSpec(), *,
                     overwrite: bool = False) -> dict[str, Any]:
  """Writes the dataset of `spec` under `root` (local folder) and returns its manifest (the
  contents of root/study_data.json: spec, counts per split and class, totals).

  Atomic: everything is built in a hidden temporary sibling folder, which is renamed to `root`
  at the end, so a reader never sees a partial dataset. If root/study_data.json already holds
  the same spec (and generator version) nothing is written and its manifest is returned; a
  different spec raises ValueError naming the fields that differ, unless overwrite=True, which
  replaces the old dataset. A non-empty `root` without a manifest is refused the same way.
  """
  root = os.path.abspath(root)
  existing = read_manifest(root)
  if existing is not None:
    diffs = spec_differences(existing, spec)
    if not diffs and not _missing_files(root, existing):
      return existing
    if not diffs and not overwrite:
      raise ValueError(f'{root}: {MANIFEST} matches the spec but files are missing: '
                       + ', '.join(_missing_files(root, existing)[:5])
                       + ' (pass overwrite=True to write it again)')
    if not overwrite:
      raise ValueError(f'{root} holds a study dataset of another spec; differing fields:\n  '
                       + '\n  '.join(diffs) + '\n(pass overwrite=True to replace it)')
  elif os.path.isdir(root) and os.listdir(root) and not overwrite:
    raise ValueError(f'{root} exists, is not empty and has no {MANIFEST}; refusing to replace it '
                     '(pass overwrite=True)')
  parent = os.path.dirname(root)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(root)}.partial-', dir=parent)
  try:
    start = time.time()
    counts = {split: _write_split(tmp, spec, split) for split in SPLITS}
    manifest = _manifest(spec, counts)
    with open(os.path.join(tmp, MANIFEST), 'w') as f:
      json.dump(manifest, f, indent=1, sort_keys=True)
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
    logging.info('study data: %s written in %.1fs', root, time.time() - start)
    _commit(tmp, root, spec, overwrite)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return read_manifest(root)


def _commit(tmp: str, root: str, spec: StudyDataSpec, overwrite: bool) -> None:
  """Renames the finished `tmp` to `root`, moving an old dataset aside first when replacing."""
  old = None
  if os.path.isdir(root) and (overwrite or not os.listdir(root)):
    old = tempfile.mkdtemp(prefix=f'.{os.path.basename(root)}.old-', dir=os.path.dirname(root))
    os.rename(root, os.path.join(old, 'data'))
  try:
    os.rename(tmp, root)
  except OSError:
    # Another writer finished first: keep its dataset if it is ours.
    theirs = read_manifest(root)
    if theirs is None or spec_differences(theirs, spec):
      raise
    shutil.rmtree(tmp, ignore_errors=True)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- checks

@functools.lru_cache(maxsize=1)
def _logistic_fitter():
  """A jitted L2 multinomial logistic regression (full-batch L-BFGS) returning val predictions;
  one compiled program per input shape, reused across calls (compiling is most of its cost)."""
  import jax
  import jax.numpy as jnp
  import optax

  @functools.partial(jax.jit, static_argnames=('num_classes', 'steps'))
  def fit(xtr, ytr, xva, lam, *, num_classes, steps):
    def loss(params):
      w, b = params
      return (optax.softmax_cross_entropy_with_integer_labels(xtr @ w + b, ytr).mean()
              + 0.5 * lam * jnp.sum(w * w))
    params = (jnp.zeros((xtr.shape[1], num_classes)), jnp.zeros(num_classes))
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def body(carry, _):
      params, state = carry
      value, grad = value_and_grad(params, state=state)
      updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
      return (optax.apply_updates(params, updates), state), None
    (params, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
    w, b = params
    return jnp.argmax(xva @ w + b, -1)
  return fit


def pixel_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                         val_y: np.ndarray, *,
                         l2: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
                         steps: int = 150) -> float:
  """Val accuracy of a multinomial logistic regression on the flattened inputs (raw pixels or
  any features), standardised with the train split's mean and std, L2-regularised.

  Fitted full-batch with L-BFGS (optax) for each L2 weight in `l2`; the best val accuracy over
  that grid is returned, an optimistic estimate (the weight is chosen on val), which is the
  safe side for the claim "the class is not linearly readable from these inputs". With more
  features than examples the fit runs in the span of the training examples (exact for L2: the
  weights orthogonal to it change no training logit and only add to the penalty).
  """
  xtr = np.asarray(train_x, np.float64).reshape(len(train_x), -1)
  xva = np.asarray(val_x, np.float64).reshape(len(val_x), -1)
  mean, std = xtr.mean(0), xtr.std(0)
  std = np.where(std > 1e-6, std, 1.0)
  xtr, xva = (xtr - mean) / std, (xva - mean) / std
  if xtr.shape[1] > xtr.shape[0]:
    # Thin SVD through the Gram matrix: X = U S V^T; train on U S, validate on X_val V.
    evals, u = np.linalg.eigh(xtr @ xtr.T)
    keep = evals > evals.max() * 1e-10
    sv, u = np.sqrt(evals[keep]), u[:, keep]
    v = xtr.T @ u / sv
    xtr, xva = u * sv, xva @ v
  # Zero feature columns up to a multiple of 128 (they keep zero weight): fewer distinct shapes
  # to compile.
  pad = -xtr.shape[1] % 128
  xtr, xva = np.pad(xtr, ((0, 0), (0, pad))), np.pad(xva, ((0, 0), (0, pad)))
  ytr, yva = np.asarray(train_y, np.int32), np.asarray(val_y, np.int32)
  num_classes = int(max(ytr.max(), yva.max())) + 1
  fit = _logistic_fitter()
  xtr, xva = xtr.astype(np.float32), xva.astype(np.float32)
  return max(float((np.asarray(fit(xtr, ytr, xva, np.float32(lam), num_classes=num_classes,
                                   steps=steps)) == yva).mean()) for lam in l2)


def colour_histograms(x: np.ndarray, bins: int = 8) -> np.ndarray:
  """Joint RGB histograms [N, bins**3] (fractions of the pixels) of uint8 images [N, H, W, 3]."""
  x = np.asarray(x)
  q = (x.astype(np.int32) * bins) // 256
  code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
  code = code.reshape(len(x), -1)
  out = np.zeros((len(x), bins ** 3), np.float32)
  for i in range(len(x)):
    out[i] = np.bincount(code[i], minlength=bins ** 3) / code.shape[1]
  return out


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                 val_y: np.ndarray, k: int = 1) -> float:
  """Val accuracy of a k-nearest-neighbour vote (Euclidean distance on the flattened inputs)."""
  a = np.asarray(train_x, np.float32).reshape(len(train_x), -1)
  b = np.asarray(val_x, np.float32).reshape(len(val_x), -1)
  d = (b * b).sum(1)[:, None] - 2 * b @ a.T + (a * a).sum(1)[None]
  nn = np.argsort(d, 1, kind='stable')[:, :k]
  votes = np.asarray(train_y)[nn]
  num_classes = int(max(np.max(train_y), np.max(val_y))) + 1
  counts = np.stack([(votes == c).sum(1) for c in range(num_classes)], 1)
  return float((counts.argmax(1) == np.asarray(val_y)).mean())


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description='Writes the ViC-MAE study dataset (no download).')
  parser.add_argument('root')
  parser.add_argument('--scale', type=float, default=1.0, help='per-class counts times this')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--preset', default='default', choices=sorted(PRESETS),
                      help='a named spec of PRESETS (docs/study_data.md, "Presets")')
  parser.add_argument('--overwrite', action='store_true')
  args = parser.parse_args(argv)
  spec = dataclasses.replace(PRESETS[args.preset], seed=args.seed)
  if args.scale != 1.0:
    spec = scaled(spec, args.scale)
  start = time.time()
  manifest = write_study_data(args.root, spec, overwrite=args.overwrite)
  print(json.dumps({'root': os.path.abspath(args.root), 'totals': manifest['totals'],
                    'seconds': round(time.time() - start, 1)}))
  return 0


if __name__ == '__main__':
  sys.exit(main())

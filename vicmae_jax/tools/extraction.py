"""Frame extraction, the engine-free part: videos -> ArrayRecord shards of JPEG frames.

Both engines of `extract_frames` (a local process pool, and the Apache Beam pipeline of
`extract_beam` for Dataflow / Flink / Spark) call exactly these functions, so a shard's bytes do
not depend on the engine that wrote it.

Layout of an output folder OUT:
  extract_plan.json                        which videos go to which shard, and the options
  frames-IIIII-of-NNNNN.array_record       one record per readable video (`data/records.py`)
  stats-IIIII.json                         the shard's counts and its bad files with causes
  bad_videos.tsv, summary.json             written last, from every shard's stats

Why it is safe to rerun and to retry: the plan fixes shard membership (shard i holds videos
[i * per_shard, (i + 1) * per_shard) of the index), so names are deterministic; a shard is
written under a unique temporary name, its stats first, then renamed (an object in a bucket
appears whole when uploaded), so an attempt that dies leaves no partial shard and two attempts
of one shard (a worker retry, a speculative copy) write the same bytes under the same name. A
shard whose final name exists is complete, and a rerun skips it. The summary reads one stats
file per shard, so every video is counted exactly once however often shards were retried.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from vicmae_jax import fs, logging_utils
from vicmae_jax.data import index as index_lib, records, video
from vicmae_jax.data.badinput import BadInput

PLAN = 'extract_plan.json'
PLAN_FORMAT = 1
PROGRESS_DIR = '.progress'


@dataclasses.dataclass(frozen=True)
class Options:
  """What a record holds; part of the plan, so a rerun cannot mix two settings in one folder."""
  frames_per_video: int = 16
  short_side: int = 256
  quality: int = 90
  videos_per_shard: int = 512


@dataclasses.dataclass(frozen=True)
class Plan:
  """Shard membership of one output folder."""
  paths: tuple[str, ...]
  labels: tuple[int, ...]
  options: Options
  # Index rows whose file did not exist when the index was read: (path, 'file:line'). Reported as
  # bad files; part of the fingerprint (a video that appears later changes the plan).
  missing: tuple[tuple[str, str], ...] = ()

  @property
  def num_shards(self) -> int:
    return -(-len(self.paths) // self.options.videos_per_shard)

  def shard(self, i: int) -> tuple[Sequence[str], Sequence[int]]:
    per = self.options.videos_per_shard
    return self.paths[i * per:(i + 1) * per], self.labels[i * per:(i + 1) * per]

  def fingerprint(self) -> str:
    h = hashlib.sha256(json.dumps(dataclasses.asdict(self.options), sort_keys=True).encode())
    for p, label in zip(self.paths, self.labels):
      h.update(f'{p}\t{label}\n'.encode())
    for p, where in self.missing:
      h.update(f'missing\t{p}\t{where}\n'.encode())
    return h.hexdigest()[:16]

  def to_json(self) -> str:
    return json.dumps({'format': PLAN_FORMAT, 'fingerprint': self.fingerprint(),
                       'options': dataclasses.asdict(self.options), 'shards': self.num_shards,
                       'paths': list(self.paths), 'labels': list(self.labels),
                       'missing': [list(m) for m in self.missing]})

  @classmethod
  def from_json(cls, text: str) -> 'Plan':
    d = json.loads(text)
    if d.get('format') != PLAN_FORMAT:
      raise ValueError(f'{PLAN} has format {d.get("format")}, this version reads {PLAN_FORMAT}')
    return cls(tuple(d['paths']), tuple(int(x) for x in d['labels']), Options(**d['options']),
               tuple(tuple(m) for m in d.get('missing', ())))


_PLANS: dict[str, Plan] = {}  # per process (pool or Beam worker): each plan is read once


def load_plan(out: str, fingerprint: str | None = None) -> Plan:
  """OUT's plan, read once per process (again if it is not the plan `fingerprint` names)."""
  if out not in _PLANS or (fingerprint and _PLANS[out].fingerprint() != fingerprint):
    _PLANS[out] = Plan.from_json(fs.read_text(fs.join(out, PLAN)))
  return _PLANS[out]


def make_plan(idx: index_lib.Index, options: Options) -> Plan:
  return Plan(tuple(idx.paths), tuple(int(x) for x in idx.labels), options, tuple(idx.dropped))


def shard_name(out: str, i: int, n: int) -> str:
  return fs.join(out, f'frames-{i:05d}-of-{n:05d}.array_record')


def stats_name(out: str, i: int) -> str:
  return fs.join(out, f'stats-{i:05d}.json')


def _listing(out: str) -> list[str]:
  """OUT's file names; none for a bucket prefix that holds no object yet."""
  try:
    return fs.listdir(out)
  except FileNotFoundError:
    return []


def _finished_shards(out: str) -> list[str]:
  """Names of the finished shards in OUT (a shard's final name appears only when complete)."""
  return [f for f in _listing(out) if f.startswith('frames-') and f.endswith('.array_record')]


def prepare(out: str, plan: Plan) -> list[int]:
  """Writes (or checks) OUT's plan; returns the shards still to write.

  A folder already holding a different plan (another index, another video order, other options)
  is refused: mixing the two would give shards of two settings under one name scheme.
  """
  fs.makedirs(out)
  plan_path = fs.join(out, PLAN)
  if fs.exists(plan_path):
    old = json.loads(fs.read_text(plan_path))
    if old.get('fingerprint') != plan.fingerprint():
      raise ValueError(_plan_mismatch(out, Plan.from_json(json.dumps(old)), plan))
  else:
    legacy = _finished_shards(out)
    if legacy:  # written before plans existed: only the same shard count can be continued
      n = {f.rsplit('-of-', 1)[1].split('.')[0] for f in legacy}
      if n != {f'{plan.num_shards:05d}'}:
        raise ValueError(f'{out} holds shards of another run ({sorted(legacy)[0]}, ...) and no '
                         f'{PLAN}; this run makes {plan.num_shards} shards. Use a new --out.')
    _write_atomic(plan_path, plan.to_json())
  n = plan.num_shards
  done = set(_finished_shards(out))
  return [i for i in range(n) if fs.basename(shard_name(out, i, n)) not in done]


def _plan_mismatch(out: str, old: Plan, new: Plan) -> str:
  what = []
  if old.options != new.options:
    what += [f'{k}: {getattr(old.options, k)} then, {getattr(new.options, k)} now'
             for k in dataclasses.asdict(new.options)
             if getattr(old.options, k) != getattr(new.options, k)]
  if (old.paths, old.labels, old.missing) != (new.paths, new.labels, new.missing):
    gone, added = set(old.paths) - set(new.paths), set(new.paths) - set(old.paths)
    what.append(f'the index changed ({len(old.paths)} videos then, {len(new.paths)} now; '
                f'{len(added)} added, {len(gone)} removed'
                + (', same videos in another order or with other labels' if not gone | added
                   else '') + ')')
  return (f'{out} was written by an extraction with another plan: ' + '; '.join(what) +
          '. Rerun with the earlier index and options to finish it, or use a new --out.')


def _write_atomic(path: str, text: str) -> None:
  """Whole-or-nothing text write (an object in a bucket is always written whole)."""
  if fs.is_url(path):
    fs.write_text(path, text)
  else:
    tmp = f'{path}.tmp-{uuid.uuid4().hex[:8]}'
    fs.write_text(tmp, text)
    os.replace(tmp, path)


def resize_short_side(img: np.ndarray, short_side: int) -> np.ndarray:
  h, w = img.shape[:2]
  if short_side <= 0 or min(h, w) <= short_side:
    return img
  s = short_side / min(h, w)
  return cv2.resize(img, (max(int(round(w * s)), 1), max(int(round(h * s)), 1)),
                    interpolation=cv2.INTER_AREA)


def extract_video(path: str, label: int, options: Options) -> tuple[bytes, int]:
  """(record, number of frames) for one video; raises BadInput for unusable videos.

  Frames are taken at the centres of `frames_per_video` equal time segments in one forward
  decode, so every epoch can draw a fresh pair with the online sampler's rules.
  """
  container = video.open_video(path)
  try:
    info = video.probe(container, path)
    if info.duration * info.fps < 1.5:
      raise BadInput('too_short', path, f'{info.duration:.3f}s')
    n = max(2, min(options.frames_per_video, int(round(info.duration * info.fps))))
    times = info.start + (np.arange(n) + 0.5) * info.duration / n
    decoded = video.decode_at_times(container, times, path=path)
  finally:
    container.close()
  jpegs, stamps, seen = [], [], set()
  for frame, t in decoded:
    if t in seen:  # fewer distinct frames than segments (very short clip): keep each once
      continue
    seen.add(t)
    img = resize_short_side(video.frame_to_rgb(frame), options.short_side)
    jpegs.append(records.encode_jpeg(img, options.quality))
    stamps.append(t)
  if len(jpegs) < 2:
    raise BadInput('too_short', path, 'a single distinct frame')
  record = records.encode_record(jpegs, stamps, path=path, label=label, start=info.start,
                                 duration=info.duration, fps=info.fps)
  return record, len(jpegs)


@dataclasses.dataclass
class ShardStats:
  """What one shard holds; `bad` lists (path, kind, detail) in index order."""
  shard: int
  videos: int = 0
  written: int = 0
  frames: int = 0
  bytes: int = 0
  seconds: float = 0.0
  bad: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, text: str) -> 'ShardStats':
    d = json.loads(text)
    d['bad'] = [tuple(b) for b in d['bad']]
    return cls(**d)


# Called after each video: (stats so far, kind of failure or None, bytes of the record).
Tick = Callable[[ShardStats, 'str | None', int], None]


def write_shard(out: str, plan: Plan, i: int, tick: Tick | None = None) -> ShardStats:
  """Writes shard i of `plan` and its stats; the shard's final name appears last."""
  from array_record.python.array_record_module import ArrayRecordWriter

  n = plan.num_shards
  final = shard_name(out, i, n)
  paths, labels = plan.shard(i)
  # ArrayRecord writes local files only: a shard for a bucket is written locally and uploaded
  # whole. A unique temporary name keeps two attempts of one shard from writing one file.
  tmp = (fs.local_staging('.array_record') if fs.is_url(out)
         else f'{final}.tmp-{uuid.uuid4().hex[:8]}')
  stats, start = ShardStats(shard=i, videos=len(paths)), time.monotonic()
  writer = ArrayRecordWriter(tmp, records.WRITER_OPTIONS)
  try:
    for path, label in zip(paths, labels):
      kind, size = None, 0
      try:
        record, frames = extract_video(path, label, plan.options)
        writer.write(record)
        stats.written, stats.frames, stats.bytes = (stats.written + 1, stats.frames + frames,
                                                    stats.bytes + len(record))
        size = len(record)
      except BadInput as e:
        kind = e.kind
        stats.bad.append((path, e.kind, _one_line(e.detail)))
      except Exception as e:  # noqa: BLE001 - one odd file must not stop a day-long conversion
        kind = 'unreadable'
        stats.bad.append((path, kind, _one_line(f'{type(e).__name__}: {e}')))
      if tick is not None:
        tick(stats, kind, size)
    writer.close()
    stats.seconds = round(time.monotonic() - start, 3)
    _write_atomic(stats_name(out, i), stats.to_json())
    fs.replace(tmp, final)  # the shard counts as done only once complete
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return stats


def _one_line(text: str) -> str:
  return ' '.join(str(text).split())


def shard_stats(out: str, plan: Plan, i: int) -> ShardStats:
  """Stats of a finished shard (from a shard written before stats files: its report and records)."""
  name = stats_name(out, i)
  if fs.exists(name):
    return ShardStats.from_json(fs.read_text(name))
  from array_record.python.array_record_module import ArrayRecordReader

  paths, _ = plan.shard(i)
  stats = ShardStats(shard=i, videos=len(paths))
  report = fs.join(out, f'report-{i:05d}.tsv')
  if fs.exists(report):
    stats.bad = [tuple((line.split('\t') + ['', ''])[:3])
                 for line in fs.read_text(report).splitlines() if line.strip()]
  local = fs.local_staging('.array_record') if fs.is_url(out) else None
  try:
    if local:
      fs.copy_file(shard_name(out, i, plan.num_shards), local)
    reader = ArrayRecordReader(local or shard_name(out, i, plan.num_shards))
    for k in range(reader.num_records()):
      record = reader.read([k])[0]
      stats.written, stats.bytes = stats.written + 1, stats.bytes + len(record)
      stats.frames += len(records.decode_record(record)[1])
    reader.close()
  finally:
    if local:
      os.remove(local)
  return stats


def summarize(out: str, plan: Plan, seconds: float | None = None,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
  """Writes bad_videos.tsv and summary.json from every finished shard's stats; returns the summary.

  Each shard contributes one stats file, so a video is counted once however many attempts (or
  runs) it took. Shards not yet written are named in `missing_shards`.
  """
  n = plan.num_shards
  done = set(_finished_shards(out))
  missing = [i for i in range(n) if fs.basename(shard_name(out, i, n)) not in done]
  all_stats = [shard_stats(out, plan, i) for i in range(n) if i not in set(missing)]
  bad = ([(p, 'missing', f'listed at {where}; not found when the index was read')
          for p, where in plan.missing] + [b for s in all_stats for b in s.bad])
  _write_atomic(fs.join(out, 'bad_videos.tsv'),
                'path\tkind\tdetail\n' + ''.join('\t'.join(b) + '\n' for b in bad))
  summary = {'videos': len(plan.paths) + len(plan.missing),
             'written': sum(s.written for s in all_stats),
             'frames': sum(s.frames for s in all_stats),
             'bytes': sum(s.bytes for s in all_stats),
             'bad': dict(sorted(Counter(b[1] for b in bad).items())),
             'shards': n, 'missing_shards': missing, 'plan': plan.fingerprint(),
             **dataclasses.asdict(plan.options)}
  if seconds is not None:
    summary['seconds'] = round(seconds, 1)
  summary.update(extra or {})
  _write_atomic(fs.join(out, 'summary.json'), json.dumps(summary, indent=2))
  return summary


def extract_in_process(out: str, idx: index_lib.Index, options: Options) -> dict[str, Any]:
  """The whole extraction in this process (small datasets the project makes itself: the demo's
  and the study's clips); the same shards and guarantees as either engine."""
  plan = make_plan(idx, options)
  pending = prepare(out, plan)
  for i in pending:
    write_shard(out, plan, i)
  return summarize(out, plan, extra={'engine': 'in_process', 'shards_this_run': len(pending)})


class ProgressFile:
  """A shard's running count in OUT/.progress (local folders only: a bucket gets no tiny
  rewrites every few seconds; there the finished shards' stats show the progress)."""

  def __init__(self, out: str, i: int, every_s: float = 2.0):
    self.path = None if fs.is_url(out) else os.path.join(out, PROGRESS_DIR, f'{i:05d}.json')
    self.every_s, self.last = every_s, 0.0

  def __call__(self, stats: ShardStats, kind: str | None, size: int) -> None:
    now = time.monotonic()
    if self.path is None or now - self.last < self.every_s:
      return
    self.last = now
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    _write_atomic(self.path, json.dumps({'done': len(stats.bad) + stats.written,
                                         'bad': len(stats.bad)}))


class Watcher:
  """Prints `extract: done/total videos (x%), r videos/s, b bad, ETA` every `every_s` seconds
  from what the workers leave in OUT (finished shards' stats, running shards' progress files),
  so it works the same for every engine and runner that writes OUT."""

  def __init__(self, out: str, plan: Plan, pending: Sequence[int], every_s: float = 10.0,
               log: Callable[[str], None] = print):
    self.out, self.plan, self.pending, self.every_s, self.log = out, plan, list(pending), every_s, log
    self.total = sum(len(plan.shard(i)[0]) for i in self.pending)
    self._stop, self._thread, self._start = threading.Event(), None, time.monotonic()
    self._finished: dict[int, tuple[int, int]] = {}

  def count(self) -> tuple[int, int]:
    """(videos done, bad) over the pending shards so far."""
    n = self.plan.num_shards
    names = set(_listing(self.out))
    progress_dir = None if fs.is_url(self.out) else os.path.join(self.out, PROGRESS_DIR)
    done = bad = 0
    for i in self.pending:
      if i not in self._finished and fs.basename(shard_name(self.out, i, n)) in names:
        s = shard_stats(self.out, self.plan, i)
        self._finished[i] = (s.videos, len(s.bad))
      if i in self._finished:
        done, bad = done + self._finished[i][0], bad + self._finished[i][1]
      elif progress_dir:
        try:
          with open(os.path.join(progress_dir, f'{i:05d}.json')) as f:
            p = json.load(f)
          done, bad = done + p['done'], bad + p['bad']
        except (OSError, ValueError):
          pass
    return done, bad

  def line(self) -> str:
    done, bad = self.count()
    elapsed = time.monotonic() - self._start
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f'{logging_utils.duration((self.total - done) / rate)}' if rate > 0 else '?'
    pct = 100.0 * done / self.total if self.total else 100.0
    return (f'extract: {done}/{self.total} videos ({pct:.1f}%), {rate:.2f} videos/s, '
            f'{bad} bad, elapsed {logging_utils.duration(elapsed)}, ETA {eta}')

  def _loop(self) -> None:
    while not self._stop.wait(self.every_s):
      try:
        self.log(self.line())
      except Exception as e:  # noqa: BLE001 - progress must never stop the extraction
        self.log(f'extract: progress unavailable ({type(e).__name__}: {e})')

  def __enter__(self) -> 'Watcher':
    self._start = time.monotonic()
    self._thread = threading.Thread(target=self._loop, daemon=True, name='extract-progress')
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()
    if not fs.is_url(self.out):
      import shutil
      shutil.rmtree(os.path.join(self.out, PROGRESS_DIR), ignore_errors=True)


r"""Offline converter: videos -> ArrayRecord shards of JPEG frames (the fast path of
docs/decisions.md, D14).

Each video becomes one record holding `--frames_per_video` frames at the centres of equal time
segments (one forward decode per video), resized to `--short_side`, so every epoch can draw a fresh
pair (`distant`: 8 x 8 = 64 pairs per video with the default 16 frames). Shards are written in
parallel, one process per core; a shard is complete once its final name exists (written under a
temporary name, then renamed), so an interrupted run resumes where it stopped. Unreadable or
too-short videos are listed in `bad_videos.tsv`; `summary.json` holds the counts.

  python -m vicmae_jax.tools.extract_frames --kind kinetics_csv \
      --path k400/annotations/train.csv --root k400/train --out k400_frames/train --workers 16

Use the output with a source `{kind: 'frames', path: 'k400_frames/train'}`.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from collections import Counter

import cv2
import numpy as np

from vicmae_jax import fs, paths
from vicmae_jax.data import index as index_lib, records, video
from vicmae_jax.data.badinput import BadInput

VIDEO_KINDS = index_lib.VIDEO_KINDS


def read_index(kind: str, path: str, root: str | None, labels: str | None,
               on_missing: str, allow_outside_root: bool = False) -> index_lib.Index:
  if kind not in VIDEO_KINDS:
    raise ValueError(f'--kind must be one of {VIDEO_KINDS}, got {kind!r}')
  return index_lib.read_index(dict(kind=kind, path=path, root=root, labels=labels,
                                   on_missing=on_missing, allow_outside_root=allow_outside_root))


def resize_short_side(img: np.ndarray, short_side: int) -> np.ndarray:
  h, w = img.shape[:2]
  if short_side <= 0 or min(h, w) <= short_side:
    return img
  s = short_side / min(h, w)
  return cv2.resize(img, (max(int(round(w * s)), 1), max(int(round(h * s)), 1)),
                    interpolation=cv2.INTER_AREA)


def extract_video(path: str, label: int, frames_per_video: int, short_side: int,
                  quality: int) -> bytes:
  """One record for one video; raises BadInput for unusable videos."""
  container = video.open_video(path)
  try:
    info = video.probe(container, path)
    if info.duration * info.fps < 1.5:
      raise BadInput('too_short', path, f'{info.duration:.3f}s')
    n = max(2, min(frames_per_video, int(round(info.duration * info.fps))))
    times = info.start + (np.arange(n) + 0.5) * info.duration / n
    decoded = video.decode_at_times(container, times, path=path)
  finally:
    container.close()
  jpegs, stamps, seen = [], [], set()
  for frame, t in decoded:
    if t in seen:  # fewer distinct frames than segments (very short clip): keep each once
      continue
    seen.add(t)
    img = resize_short_side(video.frame_to_rgb(frame), short_side)
    jpegs.append(records.encode_jpeg(img, quality))
    stamps.append(t)
  if len(jpegs) < 2:
    raise BadInput('too_short', path, 'a single distinct frame')
  return records.encode_record(jpegs, stamps, path=path, label=label, start=info.start,
                               duration=info.duration, fps=info.fps)


def shard_name(out: str, i: int, n: int) -> str:
  return fs.join(out, f'frames-{i:05d}-of-{n:05d}.array_record')


def write_shard(job: tuple) -> tuple[int, int, Counter]:
  """Writes shard i; returns (shard, videos written, Counter of bad kinds)."""
  from array_record.python.array_record_module import ArrayRecordWriter

  (i, n, out, paths, labels, frames_per_video, short_side, quality) = job
  final = shard_name(out, i, n)
  # ArrayRecord writes local files only: a shard for object storage is written locally and
  # uploaded whole (an object appears only once complete, like the local rename below).
  tmp = fs.local_staging('.array_record') if fs.is_url(out) else final + '.tmp'
  bad, written, report = Counter(), 0, []
  writer = ArrayRecordWriter(tmp, records.WRITER_OPTIONS)
  for path, label in zip(paths, labels):
    try:
      writer.write(extract_video(path, label, frames_per_video, short_side, quality))
      written += 1
    except BadInput as e:
      bad[e.kind] += 1
      report.append(f'{path}\t{e.kind}\t{e.detail}')
    except Exception as e:  # noqa: BLE001 - one odd file must not stop a day-long conversion
      bad['unreadable'] += 1
      report.append(f'{path}\tunreadable\t{type(e).__name__}: {e}')
  writer.close()
  fs.write_text(fs.join(out, f'report-{i:05d}.tsv'),
                ''.join(line.replace('\n', ' ') + '\n' for line in report))
  if fs.is_url(out):
    try:
      fs.copy_file(tmp, final)
    finally:
      os.remove(tmp)
  else:
    os.replace(tmp, final)  # the shard counts as done only once complete
  return i, written, bad


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--kind', required=True, choices=VIDEO_KINDS)
  parser.add_argument('--path', required=True, type=paths.resolve,
                      help='index file or videos folder')
  parser.add_argument('--root', type=paths.resolve, help='videos folder for CSV/JSON indexes')
  parser.add_argument('--labels', type=paths.resolve, help='SSv2 labels.json')
  parser.add_argument('--on_missing', default='skip', choices=('error', 'skip'))
  parser.add_argument('--allow_outside_root', action='store_true',
                      help='index entries may name files outside --root (or the CSV folder)')
  parser.add_argument('--out', required=True, type=paths.resolve)
  parser.add_argument('--frames_per_video', type=int, default=16)
  parser.add_argument('--short_side', type=int, default=256, help='0 keeps the size')
  parser.add_argument('--quality', type=int, default=90)
  parser.add_argument('--videos_per_shard', type=int, default=512)
  parser.add_argument('--workers', type=int, default=os.cpu_count() or 1)
  args = parser.parse_args(argv)

  idx = read_index(args.kind, args.path, args.root, args.labels, args.on_missing,
                   args.allow_outside_root)
  fs.makedirs(args.out)
  n = math.ceil(len(idx) / args.videos_per_shard)
  jobs = []
  for i in range(n):
    lo, hi = i * args.videos_per_shard, min((i + 1) * args.videos_per_shard, len(idx))
    if fs.exists(shard_name(args.out, i, n)):
      continue  # done in an earlier (interrupted) run
    jobs.append((i, n, args.out, idx.paths[lo:hi], idx.labels[lo:hi], args.frames_per_video,
                 args.short_side, args.quality))
  todo = sum(len(j[3]) for j in jobs)
  print(f'{len(idx)} videos in {n} shards; {n - len(jobs)} shards already done, {todo} videos to go',
        file=sys.stderr)
  try:
    from tqdm import tqdm
    bar = tqdm(total=todo, unit='video', smoothing=0.05)
  except ImportError:
    bar = None
  start = time.time()
  with multiprocessing.get_context('spawn').Pool(max(1, args.workers)) as pool:
    for i, written, bad in pool.imap_unordered(write_shard, jobs):
      done = len(next(j for j in jobs if j[0] == i)[3])
      if bar is not None:
        bar.update(done)
      else:
        print(f'shard {i} done: {written} written, {sum(bad.values())} bad', file=sys.stderr)
  if bar is not None:
    bar.close()
  # Summaries cover every shard, including those finished by earlier runs.
  bad_lines = []
  for i in range(n):
    report = fs.join(args.out, f'report-{i:05d}.tsv')
    if fs.exists(report):
      bad_lines += [line + '\n' for line in fs.read_text(report).splitlines() if line.strip()]
  fs.write_text(fs.join(args.out, 'bad_videos.tsv'), 'path\tkind\tdetail\n' + ''.join(bad_lines))
  kinds = Counter(line.split('\t')[1] for line in bad_lines)
  summary = {'videos': len(idx), 'written': len(idx) - len(bad_lines), 'bad': dict(kinds),
             'shards': n, 'frames_per_video': args.frames_per_video,
             'short_side': args.short_side, 'seconds': round(time.time() - start, 1)}
  fs.write_text(fs.join(args.out, 'summary.json'), json.dumps(summary, indent=2))
  print(json.dumps(summary), file=sys.stderr)
  return summary


if __name__ == '__main__':
  main()

r"""Offline converter: videos -> ArrayRecord shards of JPEG frames (the fast path of
docs/decisions.md, D14), on one machine or on a distributed Apache Beam runner.

Each video becomes one record holding `--frames_per_video` frames at the centres of equal time
segments (one forward decode per video), resized to `--short_side`, so every epoch can draw a fresh
pair (`distant`: 8 x 8 = 64 pairs per video with the default 16 frames). A shard is complete once
its final name exists, so an interrupted run resumes where it stopped and a rerun skips finished
shards; `bad_videos.tsv` lists each unusable video once with its cause, `summary.json` holds the
counts (layout and guarantees: `vicmae_jax/tools/extraction.py`).

One machine, one process per core (`--engine pool`, the default; no extra packages):

  python -m vicmae_jax.tools.extract_frames --kind kinetics_csv \
      --path k400/annotations/train.csv --root k400/train --out k400_frames/train --workers 16

Apache Beam (`pip install -e ".[beam]"`): the same shards, written by a pipeline. Without a
`--runner` it is the DirectRunner with `--workers` processes; any Beam pipeline option after the
tool's own flags goes to Beam (Dataflow, Flink, Spark: docs/data.md):

  python -m vicmae_jax.tools.extract_frames --engine beam --kind kinetics_csv \
      --path gs://b/k400/train.csv --root gs://b/k400/train --out gs://b/k400_frames/train \
      --runner DataflowRunner --project P --region us-central1 --temp_location gs://b/tmp \
      --setup_file ./setup.py --max_num_workers 100

Use the output with a source `{kind: 'frames', path: 'k400_frames/train'}`.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

from vicmae_jax import fs, paths
from vicmae_jax.data import index as index_lib
from vicmae_jax.tools import extraction
from vicmae_jax.tools.extraction import resize_short_side, shard_name

__all__ = ['main', 'read_index', 'resize_short_side', 'shard_name', 'VIDEO_KINDS']

VIDEO_KINDS = index_lib.VIDEO_KINDS
ENGINES = ('pool', 'beam')


def read_index(kind: str, path: str, root: str | None, labels: str | None,
               on_missing: str, allow_outside_root: bool = False) -> index_lib.Index:
  if kind not in VIDEO_KINDS:
    raise ValueError(f'--kind must be one of {VIDEO_KINDS}, got {kind!r}')
  return index_lib.read_index(dict(kind=kind, path=path, root=root, labels=labels,
                                   on_missing=on_missing, allow_outside_root=allow_outside_root))


def _pool_shard(job: tuple[str, int]) -> extraction.ShardStats:
  """One shard in a pool worker (the plan is read once per worker process)."""
  out, i = job
  plan = extraction.load_plan(out)
  return extraction.write_shard(out, plan, i, tick=extraction.ProgressFile(out, i))


def run_pool(out: str, plan: extraction.Plan, pending: list[int], workers: int) -> dict:
  """The local engine: one process per worker, a shard at a time; then the summary."""
  started = time.time()
  if pending:
    with multiprocessing.get_context('spawn').Pool(max(1, min(workers, len(pending)))) as pool:
      for _ in pool.imap_unordered(_pool_shard, [(out, i) for i in pending]):
        pass
  return extraction.summarize(out, plan, seconds=time.time() - started,
                              extra={'engine': 'pool', 'shards_this_run': len(pending)})


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--kind', required=True, choices=VIDEO_KINDS)
  parser.add_argument('--path', required=True, type=paths.resolve,
                      help='index file or videos folder')
  parser.add_argument('--root', type=paths.resolve, help='videos folder for CSV/JSON indexes')
  parser.add_argument('--labels', type=paths.resolve, help='SSv2 labels.json')
  parser.add_argument('--on_missing', '--on-missing', default='skip', choices=('error', 'skip'))
  parser.add_argument('--allow_outside_root', '--allow-outside-root', action='store_true',
                      help='index entries may name files outside --root (or the CSV folder)')
  parser.add_argument('--out', required=True, type=paths.resolve)
  parser.add_argument('--frames_per_video', '--frames-per-video', type=int, default=16)
  parser.add_argument('--short_side', '--short-side', type=int, default=256,
                      help='0 keeps the size')
  parser.add_argument('--quality', type=int, default=90)
  parser.add_argument('--videos_per_shard', '--videos-per-shard', type=int, default=512)
  parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                      help='pool processes, or DirectRunner processes with --engine beam')
  parser.add_argument('--engine', choices=ENGINES, default='pool',
                      help='pool: processes on this machine; beam: an Apache Beam pipeline')
  parser.add_argument('--progress_every_s', '--progress-every-s', type=float, default=30.0)
  args, rest = parser.parse_known_args(argv)
  if rest and args.engine != 'beam':
    parser.error(f'unrecognized arguments: {" ".join(rest)} (Beam pipeline options need '
                 f'--engine beam)')
  return args, rest


def main(argv: list[str] | None = None) -> dict:
  args, beam_args = parse_args(argv)
  if args.engine == 'beam':
    try:  # before the index is read: a missing extra should not cost a long listing first
      from vicmae_jax.tools import extract_beam
    except ImportError as e:
      sys.exit(f'--engine beam needs Apache Beam: pip install -e ".[beam]" ({e})')
  options = extraction.Options(frames_per_video=args.frames_per_video,
                               short_side=args.short_side, quality=args.quality,
                               videos_per_shard=args.videos_per_shard)
  idx = read_index(args.kind, args.path, args.root, args.labels, args.on_missing,
                   args.allow_outside_root)
  plan = extraction.make_plan(idx, options)
  pending = extraction.prepare(args.out, plan)
  todo = sum(len(plan.shard(i)[0]) for i in pending)
  print(f'{len(idx)} videos in {plan.num_shards} shards; {plan.num_shards - len(pending)} shards '
        f'already done, {todo} videos to go ({args.engine})', file=sys.stderr)
  log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
  with extraction.Watcher(args.out, plan, pending, every_s=args.progress_every_s, log=log) as w:
    if args.engine == 'beam':
      counters = extract_beam.run(args.out, plan, pending, beam_args, args.workers)
      summary = json.loads(fs.read_text(fs.join(args.out, 'summary.json')))
      if counters:
        summary['beam_counters'] = counters
    else:
      summary = run_pool(args.out, plan, pending, args.workers)
    log(w.line())
  print(json.dumps(summary), file=sys.stderr)
  if summary['missing_shards']:
    raise RuntimeError(f'shards {summary["missing_shards"]} were not written; rerun to finish')
  return summary


if __name__ == '__main__':
  main()

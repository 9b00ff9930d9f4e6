"""What frame extraction costs per video, per core: the local pool and the Beam DirectRunner on the
same Kinetics-like clips in one run, and the core-hours (and a Dataflow price) per 100k videos.

Clips: 10 s, 568x320 (Kinetics' short side 320), 30 fps, a panning texture with noise so the
bitrate is realistic, H.264 with libx264's defaults. `--distinct` clips are encoded once and
listed `--videos / --distinct` times each in a path CSV (extraction cost does not depend on
whether two files hold the same bytes). Each engine runs twice, on N and 5N videos: the per-video
cost is the slope between the two (start-up of worker processes and of Beam's job service is
the intercept, paid once per run, printed apart). Default extraction settings: 16 frames per video, short
side 256, JPEG quality 90. Costs are CPU seconds of the worker processes (getrusage of the
children), so they do not depend on what else the machine runs; the wall time of each engine is
printed beside it.

  python bench/extract_cost.py [--videos 24] [--distinct 4] [--workers 2]
      [--usd_per_vcpu_hour 0.056] [--usd_per_gb_hour 0.003557] [--gb_per_vcpu 3.75]

Prints one `name: value` per line:
  <engine>_cpu_s_per_video            CPU seconds per video, start-up excluded (pool, beam)
  <engine>_videos_per_core_s          its inverse
  <engine>_startup_cpu_s              CPU seconds of a run's fixed start-up
  <engine>_wall_s                     wall time of the 5N-video run with --workers processes
  beam_over_pool_cpu_ratio            Beam's per-video overhead relative to the pool
  output_kib_per_video                shard bytes per video
  core_hours_per_100k_videos          from the pool's CPU cost (the work a Beam worker does too)
  dataflow_usd_per_100k_videos        core-hours x (vCPU price + memory price x GB per vCPU)
  output_gib_per_100k_videos
The prices are Dataflow's published batch rates for us-central1 at the time of writing (flags):
check the current ones. Shuffle and storage costs are not included (the pipeline shuffles only
shard numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vicmae_jax.data import synthetic  # noqa: E402
from vicmae_jax.tools import extract_frames  # noqa: E402


def _children_cpu() -> float:
  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def _self_cpu() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def make_clips(folder: str, videos: int, distinct: int) -> str:
  """A path CSV listing `videos` entries over `distinct` encoded clips; returns its path."""
  for i in range(distinct):
    path = os.path.join(folder, f'clip{i}.mp4')
    if not os.path.exists(path):
      synthetic.write_video(path + '.tmp.mp4', num_frames=300, fps=30, width=568, height=320,
                            textured=True, seed=i)
      os.replace(path + '.tmp.mp4', path)
  csv = os.path.join(folder, f'train_{videos}.csv')
  with open(csv, 'w') as f:
    f.writelines(f'clip{i % distinct}.mp4 0\n' for i in range(videos))
  return csv


def run(engine: str, csv: str, out: str, workers: int, per_shard: int) -> tuple[float, float, dict]:
  """(CPU seconds of worker processes, wall seconds, summary) of one extraction into OUT."""
  cpu0, self0, wall0 = _children_cpu(), _self_cpu(), time.perf_counter()
  summary = extract_frames.main(['--kind', 'video_csv', '--path', csv, '--out', out,
                                 '--engine', engine, '--workers', str(workers),
                                 '--videos_per_shard', str(per_shard),
                                 '--progress_every_s', '3600'])
  wall = time.perf_counter() - wall0
  # The pool's workers are children; the DirectRunner's SDK workers are children too, and its
  # runner threads run in this process (counted: they are part of Beam's cost).
  cpu = (_children_cpu() - cpu0) + (_self_cpu() - self0)
  return cpu, wall, summary


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--videos', type=int, default=24)
  parser.add_argument('--distinct', type=int, default=4)
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--workdir', default=os.path.join(tempfile.gettempdir(), 'vicmae_bench'))
  parser.add_argument('--usd_per_vcpu_hour', type=float, default=0.056)
  parser.add_argument('--usd_per_gb_hour', type=float, default=0.003557)
  parser.add_argument('--gb_per_vcpu', type=float, default=3.75)
  args = parser.parse_args()
  folder = os.path.join(args.workdir, 'extract_cost')
  os.makedirs(folder, exist_ok=True)
  sizes = (args.videos, 5 * args.videos)
  csvs = [make_clips(folder, n, args.distinct) for n in sizes]
  per_shard = max(1, args.videos // (2 * args.workers))  # shards of one size in both runs
  engines = ['pool']
  try:
    import apache_beam  # noqa: F401
    engines.append('beam')
  except ImportError:
    print('beam_skipped: apache-beam not installed (pip install -e ".[beam]")')
  results = {}
  for engine in engines:
    cpus = []
    for n, csv in zip(sizes, csvs):
      out = tempfile.mkdtemp(prefix=f'extract_{engine}_{n}_', dir=folder)
      cpu, wall, summary = run(engine, csv, out, args.workers, per_shard)
      assert summary['written'] == n, json.dumps(summary)
      cpus.append(cpu)
    slope = (cpus[1] - cpus[0]) / (sizes[1] - sizes[0])
    results[engine] = (slope, wall, summary['bytes'] / n)
    print(f'{engine}_cpu_s_per_video: {slope:.3f}')
    print(f'{engine}_videos_per_core_s: {1 / slope:.2f}')
    print(f'{engine}_startup_cpu_s: {cpus[0] - slope * sizes[0]:.1f}')
    print(f'{engine}_wall_s: {wall:.1f}')
  if 'beam' in results:
    print(f'beam_over_pool_cpu_ratio: {results["beam"][0] / results["pool"][0]:.2f}')
  cpu_per_video, _, bytes_per_video = results['pool']
  core_hours = cpu_per_video * 100_000 / 3600
  usd = core_hours * (args.usd_per_vcpu_hour + args.usd_per_gb_hour * args.gb_per_vcpu)
  print(f'output_kib_per_video: {bytes_per_video / 1024:.1f}')
  print(f'core_hours_per_100k_videos: {core_hours:.1f}')
  print(f'dataflow_usd_per_100k_videos: {usd:.2f}')
  print(f'output_gib_per_100k_videos: {bytes_per_video * 100_000 / 2**30:.1f}')


if __name__ == '__main__':
  main()

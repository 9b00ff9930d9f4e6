"""Input-pipeline benchmark: frame pairs per second per core (goals A5, A6 in
docs/decisions.md#benchmark-conventions-and-goals; results in docs/data.md section 8).

Kinetics-like clips are generated once (10 s, 25 and 30 fps, 568x320 = short side 320, H.264 with
libx264's default GOP and B-frames, a panning texture with noise so the bitrate is realistic).
Every figure includes the full 224 px two-view augmentation. Per-core rates divide by the process's
CPU time, so they do not depend on what else the machine runs.

  python bench/input_pipeline.py [--quick] [--workdir /tmp/vicmae_bench]

Prints one `name: value` per line:
  naive_k1        decode the whole clip, convert every frame to RGB, pick two (whole-clip readers)
  online_k1       vicmae_jax.data.video: seek/demux-skip, non-ref skipping, convert two frames
  online_k1_noskip          the same without skipping non-reference frames
  online_k1_threads2        the same with 2 FFmpeg slice threads (per core of CPU time used)
  online_k4       4 pairs from one forward decode (repeated sampling, as MAE-ST)
  frames_k1       pre-extracted ArrayRecord JPEG frames (short side 256), one pair per record read
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vicmae_jax.data import augment, sources, synthetic, video  # noqa: E402
from vicmae_jax.tools import extract_frames  # noqa: E402

AUG = augment.AugmentConfig(size=224)


def make_clips(workdir: str, n: int) -> list[str]:
  paths = []
  for i in range(n):
    fps = (25, 30)[i % 2]
    path = os.path.join(workdir, 'clips', f'clip{i}_{fps}fps.mp4')
    if not os.path.exists(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
      synthetic.write_video(path + '.tmp.mp4', num_frames=10 * fps, fps=fps, width=568, height=320,
                            textured=True, seed=i)
      os.replace(path + '.tmp.mp4', path)
    paths.append(path)
  return paths


def rate(step, seconds: float) -> float:
  """Pairs per CPU-second of this process, running `step` (returns pairs made) for `seconds`."""
  step()  # warm-up
  pairs, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - wall0 < seconds:
    pairs += step()
  return pairs / (time.process_time() - cpu0)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--quick', action='store_true', help='short run (~30 s)')
  parser.add_argument('--workdir', default=os.path.join(tempfile.gettempdir(), 'vicmae_bench'))
  args = parser.parse_args()
  seconds = 3.0 if args.quick else 12.0
  clips = make_clips(args.workdir, 2 if args.quick else 4)
  rng = np.random.default_rng(0)
  sampling = video.PairSampling('distant')
  counter = iter(range(10**9))

  def naive() -> int:
    frames = video.load_all_frames_naive(clips[next(counter) % len(clips)])
    n = len(frames)
    a, b = rng.integers(0, n // 2), rng.integers(n // 2, n)
    augment.two_views(frames[a], frames[b], rng, AUG)
    return 1

  def online(k: int, **kw):
    def step() -> int:
      pairs, _ = video.load_pairs(clips[next(counter) % len(clips)], rng, sampling, k, **kw)
      for a, b in pairs:
        augment.two_views(a, b, rng, AUG)
      return k
    return step

  out = str(os.path.join(args.workdir, 'frames'))
  if not os.path.exists(os.path.join(out, 'summary.json')):
    extract_frames.main(['--kind', 'video_folder', '--path', os.path.join(args.workdir, 'clips'),
                         '--out', out, '--workers', '2', '--short_side', '256'])
  frames_source = sources.FrameRecordSource(sources.expand_shards(out), sampling)

  def frames() -> int:
    (a, b), = frames_source.load(next(counter) % len(frames_source), rng, 1)
    augment.two_views(a, b, rng, AUG)
    return 1

  results = {}
  for name, step in [('naive_k1', naive), ('online_k1', online(1)),
                     ('online_k1_noskip', online(1, skip_nonref=False)),
                     ('online_k1_threads2', online(1, threads=2)),
                     ('online_k4', online(4)), ('frames_k1', frames)]:
    results[name] = rate(step, seconds)
    print(f'{name}_pairs_per_s_per_core: {results[name]:.1f}', flush=True)
  print(f'online_k1_over_naive_ratio: {results["online_k1"] / results["naive_k1"]:.2f}')
  print(f'online_k4_over_naive_ratio: {results["online_k4"] / results["naive_k1"]:.2f}')
  still = np.random.default_rng(1).integers(0, 256, (320, 568, 3), dtype=np.uint8)
  augment_rate = rate(lambda: (augment.two_views(still, still, rng, AUG), 1)[1], seconds / 3)
  print(f'augment_only_ms_per_pair: {1000 / augment_rate:.2f}')


if __name__ == '__main__':
  main()

"""Frame pairs decoded from object storage vs the same file on local disk, same run.

Two Kinetics-like clips (568x320, 30 fps, realistic bitrate, H.264 with libx264's defaults): a
10 s `short` one (read whole: one request) and a `long` one (`--long_seconds`, read by byte ranges;
`video.REMOTE_WHOLE_FILE_BYTES` is lowered for it when the file is smaller than the threshold).
Each is stored locally and in a bucket served on localhost by the emulator the tests use
(tests/gcs_emulator.py). Each read draws one `distant` pair (pretraining's sampler) from a fresh
open, as a data worker does. The emulator answers without network latency, so the time ratio is
the client's own cost; the request count is what real GCS multiplies by its first-byte latency
(tens of ms per request), which data workers overlap with each other.

  python bench/remote_decode.py [--reads 30] [--long_seconds 60]

Prints one `name: value` per line, for each clip (`short`, `long`):
  <clip>_local_pairs_per_s / <clip>_remote_pairs_per_s / <clip>_remote_over_local_time_ratio
  <clip>_remote_requests_per_pair   GET requests per pair (stat excluded)
  <clip>_remote_fraction_of_file_read
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import gcs_emulator  # noqa: E402


def _counted_reads(video, path: str, reads: int, sampling) -> tuple[float, float, float]:
  """(pairs per second, GET requests per pair, bytes per pair) of fresh opens of `path`."""
  from vicmae_jax import fs
  import fsspec.caching
  counts = {"gets": 0, "bytes": 0}
  fetch = fs.read_bytes

  def counted_read_bytes(p):
    data = fetch(p)
    counts["gets"] += 1
    counts["bytes"] += len(data)
    return data
  fs.read_bytes = counted_read_bytes
  start = time.perf_counter()
  for i in range(reads):
    container = video.open_video(path)
    info = video.probe(container)
    times = video.sample_pair_times(np.random.default_rng(i), info.start, info.duration,
                                    info.fps, sampling, 1)
    video.frames_at_times(container, times.reshape(-1))
    cache = getattr(getattr(container, "_file", None), "cache", None)
    if isinstance(cache, fsspec.caching.BaseCache):
      counts["gets"] += cache.miss_count
      counts["bytes"] += cache.total_requested_bytes
    container.close()
  seconds = time.perf_counter() - start
  fs.read_bytes = fetch
  return reads / seconds, counts["gets"] / reads, counts["bytes"] / reads


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--reads", type=int, default=30)
  parser.add_argument("--long_seconds", type=int, default=60)
  args = parser.parse_args()
  emulator = gcs_emulator.Emulator()
  os.environ.update(emulator.env)
  from vicmae_jax import fs
  from vicmae_jax.data import synthetic, video
  from vicmae_jax.data.config import PairSampling
  sampling = PairSampling(mode="distant")
  folder = tempfile.mkdtemp(prefix="vicmae_bench_")
  try:
    for clip, seconds in (("short", 10), ("long", args.long_seconds)):
      local = os.path.join(folder, f"{clip}.mp4")
      synthetic.write_video(local, num_frames=30 * seconds, fps=30, width=568, height=320,
                            textured=True)
      remote = emulator.url("bench", f"{clip}.mp4")
      fs.copy_file(local, remote)
      size = os.path.getsize(local)
      saved = video.REMOTE_WHOLE_FILE_BYTES
      if clip == "long":
        video.REMOTE_WHOLE_FILE_BYTES = min(saved, size - 1)  # stands for a longer video
      local_rate = _counted_reads(video, local, args.reads, sampling)[0]
      rate, gets, nbytes = _counted_reads(video, remote, args.reads, sampling)
      video.REMOTE_WHOLE_FILE_BYTES = saved
      print(f"{clip}_file_mib: {size / 2**20:.2f}")
      print(f"{clip}_local_pairs_per_s: {local_rate:.1f}")
      print(f"{clip}_remote_pairs_per_s: {rate:.1f}")
      print(f"{clip}_remote_over_local_time_ratio: {local_rate / rate:.2f}")
      print(f"{clip}_remote_requests_per_pair: {gets:.1f}")
      print(f"{clip}_remote_fraction_of_file_read: {nbytes / size:.2f}")
  finally:
    emulator.stop()

if __name__ == "__main__":
  main()

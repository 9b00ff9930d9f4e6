"""Video fine-tuning decode benchmark: whole-video decode vs seek decode of the clip, same run.

Two Kinetics-like clips are generated once (10 s, 300 frames at 30 fps, 568x320 = short side 320,
a panning texture with noise so the bitrate is realistic): H.264 with libx264's defaults (keyframe
interval 250 + B-frames: few seek points, the hard case) and with a keyframe every 30 frames.
Both paths return the same uint8 frames at the same indices (tests/evaluation/
test_eval_video_data.py); nothing is augmented. Rates divide by the process's CPU time, so they
do not depend on what else the machine runs.

  python bench/video_clip_decode.py [--quick] [--workdir /tmp/vicmae_bench]

Prints one `name: value` per line, for each clip (`gop250`, `gop30`):
  naive_train_<clip>_clips_per_s_per_core  load_all_frames_naive + 16 x 4 random indices (old path)
  seek_train_<clip>_clips_per_s_per_core   VideoFileSource.read: decode only the clip's span
  seek_over_naive_train_<clip>_ratio
  naive_test_<clip>_videos_per_s_per_core  whole decode, then the 7 temporal views (3 x 7 test)
  seek_test_<clip>_videos_per_s_per_core   one seek decode of the union of the 7 views
  seek_over_naive_test_<clip>_ratio
  seek_<train|test>_<clip>_frames_decoded_of_300   frames out of the decoder per seek read
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vicmae_jax.data import index as index_lib  # noqa: E402
from vicmae_jax.data import synthetic, video  # noqa: E402
from vicmae_jax.evaluation import video_data, video_sampling  # noqa: E402

CLIPS = {"gop250": None, "gop30": 30}


def make_clip(workdir: str, name: str, gop: int | None) -> str:
  path = os.path.join(workdir, "clips_finetune", f"{name}.mp4")
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    synthetic.write_video(path + ".tmp.mp4", num_frames=300, fps=30, width=568, height=320,
                          textured=True, gop=gop, seed=1)
    os.replace(path + ".tmp.mp4", path)
  return path


def rate(step, seconds: float) -> float:
  """Items per CPU-second of this process, running `step` (returns items made) for `seconds`."""
  step()  # warm-up
  items, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - wall0 < seconds:
    items += step()
  return items / (time.process_time() - cpu0)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true", help="short run (~25 s)")
  parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "vicmae_bench"))
  args = parser.parse_args()
  seconds = 2.0 if args.quick else 8.0
  rng = np.random.default_rng(0)

  for name, gop in CLIPS.items():
    path = make_clip(args.workdir, name, gop)
    index = index_lib.Index((path,), (0,))
    # short_side 320 = the clip's own: no rescaling on either path, identical frames.
    train_source = video_data.VideoFileSource(index, short_side=320)
    test_source = video_data.VideoFileSource(index, short_side=320)

    def naive_train() -> int:
      frames = video.load_all_frames_naive(path, None)
      clip = np.stack([frames[j] for j in video_sampling.train_indices(len(frames), rng)])
      return int(clip.shape[0] == 16)

    def seek_train() -> int:
      clip, _ = train_source.read(0, lambda n: video_sampling.train_indices(n, rng))
      return int(clip.shape[0] == 16)

    def naive_test() -> int:
      frames = video.load_all_frames_naive(path, None)
      views = np.stack([frames[j] for j in video_sampling.view_indices(len(frames)).reshape(-1)])
      return int(views.shape[0] == 7 * 16)

    def seek_test() -> int:
      views, _ = test_source.read(0, video_sampling.view_indices)
      return int(views.shape[:2] == (7, 16))

    results = {}
    for key, step in [(f"naive_train_{name}", naive_train), (f"seek_train_{name}", seek_train),
                      (f"naive_test_{name}", naive_test), (f"seek_test_{name}", seek_test)]:
      results[key] = rate(step, seconds)
      unit = "clips" if "train" in key else "videos"
      print(f"{key}_{unit}_per_s_per_core: {results[key]:.2f}", flush=True)
    for split in ("train", "test"):
      ratio = results[f"seek_{split}_{name}"] / results[f"naive_{split}_{name}"]
      print(f"seek_over_naive_{split}_{name}_ratio: {ratio:.2f}", flush=True)
    for split, src in (("train", train_source), ("test", test_source)):
      decoded = src.counts["frames_decoded"] / max(src.counts["seek"], 1)
      print(f"seek_{split}_{name}_frames_decoded_of_300: {decoded:.1f}", flush=True)


if __name__ == "__main__":
  main()

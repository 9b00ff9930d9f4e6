"""Pretraining on data in a bucket with a workdir in a bucket (localhost GCS emulator): frames,
videos and images mixed; checkpoints, metrics and TensorBoard files land in the bucket, and a
second run resumes from them."""
import json
import os

import numpy as np

from configs import common
from vicmae_jax import fs, train
from vicmae_jax.data import synthetic
from vicmae_jax.tools import extract_frames


def _dataset(gcs, local: str) -> str:
  for i in range(4):
    os.makedirs(os.path.join(local, "videos", f"c{i % 2}"), exist_ok=True)
    synthetic.write_video(os.path.join(local, "videos", f"c{i % 2}", f"v{i}.mp4"), num_frames=48,
                          fps=24, seed=i)
  os.makedirs(os.path.join(local, "images", "flat"))
  for i in range(4):
    synthetic.Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), np.uint8)
                              ).save(os.path.join(local, "images", "flat", f"{i}.png"))
  url = gcs.url("run_data")
  gcs.upload_tree(local, url)
  extract_frames.main(["--kind", "video_folder", "--path", f"{url}/videos", "--out",
                       f"{url}/frames", "--frames_per_video", "6", "--short_side", "0",
                       "--workers", "1"])
  return url


def _config(url: str, steps: int):
  c = common.tiny_overrides(common.base_config())
  c.total_steps = steps
  c.image_every_steps = 0
  c.input.sources = [dict(kind="frames", path=f"{url}/frames", name="frames"),
                     dict(kind="video_folder", path=f"{url}/videos", name="videos"),
                     dict(kind="image_folder", path=f"{url}/images", name="images")]
  c.input.num_workers = 1  # a Grain worker process reads the bucket
  return c


def test_pretrain_checkpoint_and_resume_in_a_bucket(gcs, tmp_path):
  url = _dataset(gcs, str(tmp_path / "local"))
  workdir = gcs.url("runs", "tiny")
  state = train.train_and_evaluate(_config(url, 4), workdir)
  assert int(state.step) == 4
  ckpts = fs.join(workdir, "checkpoints")
  assert sorted(n for n in fs.listdir(ckpts) if n.isdigit()) == ["2", "4"]
  # The second run resumes at step 4 from the checkpoint in the bucket.
  state = train.train_and_evaluate(_config(url, 6), workdir)
  assert int(state.step) == 6
  rows = [json.loads(line) for line in fs.read_text(fs.join(workdir, "metrics.jsonl")).splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert all(np.isfinite(r["loss"]) for r in rows)
  assert {"data/mix_frames", "data/mix_videos", "data/mix_images"} <= set(rows[-1])
  assert len(fs.glob(fs.join(workdir, "events.out.tfevents.*"))) == 2  # one per run
  assert fs.read_text(fs.join(workdir, "parameters.txt")).startswith("online params:")

"""The fine-tuning loop end to end: accuracy well above chance, exact-once eval, and a run
interrupted half-way and resumed that reproduces the uninterrupted run."""
import json
import os
import signal
import threading
import time

import jax
import numpy as np

from configs import eval_common as config_defaults
from vicmae_jax.evaluation import finetune


def _config(steps=12):
  c = config_defaults.tiny(config_defaults.base_config("finetune"))
  c.total_steps = steps
  c.checkpoint.every_steps = steps // 2
  c.log_every_steps = 3
  return c


def test_finetune_learns_and_resume_reproduces(tmp_path):
  full = finetune.finetune(_config(), str(tmp_path / "full"))
  # 4 colour classes (chance 25%); 60 validation images at eval batch 24: padded last batch.
  assert full["eval"]["num_examples"] == 60
  assert full["eval"]["top1"] >= 70, full["eval"]
  saved = json.loads((tmp_path / "full" / "eval_results.json").read_text())
  assert saved["top1"] == full["eval"]["top1"]
  assert (tmp_path / "full" / "metrics.jsonl").exists()

  first = finetune.finetune(_config(), str(tmp_path / "resumed"), stop_after_steps=6)
  assert first["step"] == 6 and not first["eval"]
  second = finetune.finetune(_config(), str(tmp_path / "resumed"))
  assert second["step"] == 12
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                                                       atol=1e-6),
               full["state"].params, second["state"].params)
  assert second["eval"]["top1"] == full["eval"]["top1"]


def test_sigterm_saves_and_stops_the_fine_tune(tmp_path):
  """A real SIGTERM (spot VM, SLURM time limit) mid-run: a checkpoint of the step it stopped at,
  a clean return, and the same command finishes the run from there."""
  c = _config(steps=400)
  c.checkpoint.every_steps = 4
  first_ckpt = tmp_path / "run" / "checkpoints" / "4" / "commit_success.txt"

  def send_sigterm_after_first_checkpoint():
    deadline = time.time() + 300
    while not first_ckpt.exists() and time.time() < deadline:
      time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)

  previous = signal.getsignal(signal.SIGTERM)
  watcher = threading.Thread(target=send_sigterm_after_first_checkpoint, daemon=True)
  watcher.start()
  try:
    stopped = finetune.finetune(c, str(tmp_path / "run"))
  finally:
    watcher.join()
    signal.signal(signal.SIGTERM, previous)
  assert 4 <= stopped["step"] < 400 and not stopped["eval"], stopped["step"]
  committed = tmp_path / "run" / "checkpoints" / str(stopped["step"]) / "commit_success.txt"
  assert committed.exists()
  c.total_steps = stopped["step"] + 4
  resumed = finetune.finetune(c, str(tmp_path / "run"))
  assert resumed["step"] == stopped["step"] + 4 and resumed["eval"]["num_examples"] == 60

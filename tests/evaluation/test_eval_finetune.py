"""The fine-tuning loop end to end: accuracy well above chance, exact-once eval, and a run
interrupted half-way and resumed that reproduces the uninterrupted run."""
import json

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

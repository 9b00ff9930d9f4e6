"""The pretraining loop end to end, in-process: artifacts, lower loss, divergence guard."""
import json

import pytest

from configs import common
from vicmae_jax import train


def _tiny(tmp_path, steps, **updates):
  c = common.base_config()
  common.tiny_overrides(c, str(tmp_path / "media"))
  c.total_steps = steps
  c.optim.base_lr = 1.5e-2  # lr = blr * 16 / 256 ~ 1e-3: a tiny model learns in a few steps
  c.checkpoint.every_steps = 10
  c.image_every_steps = steps
  c.update_from_flattened_dict(updates)
  return c


def _losses(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows}


def test_tiny_run_lowers_the_loss_and_leaves_its_artifacts(tmp_path):
  workdir = tmp_path / "run"
  c = _tiny(tmp_path, 30, **{"profile.start_step": 5, "profile.num_steps": 2})
  c.knn_eval.update(every_steps=15, batch_size=16, probe_epochs=3, random_control=True,
                    data=dict(kind="toy", toy="color", train_size=32, val_size=24, size=32))
  state = train.train_and_evaluate(c, str(workdir))
  assert int(state.step) == 30
  assert list((workdir / "profile").rglob("*.xplane.pb")), "profiler trace missing"
  losses = _losses(workdir)
  first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in (28, 29, 30)) / 3
  assert last < 0.9 * first, losses
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20, 30]
  assert list(workdir.glob("events.out.tfevents.*"))
  assert (workdir / "images" / "reconstruction_00000030.png").stat().st_size > 1000
  table = (workdir / "parameters.txt").read_text()   # the table goes to a file, not the console
  assert table.startswith("online params:") and "encoder/blocks/0/attn/qkv/kernel" in table
  row = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
  for key in ("recon_loss", "contrastive_loss", "learning_rate", "ema_momentum", "grad_norm",
              "skipped_steps", "data_wait_fraction", "steps_per_s", "images_per_s",
              "flops_util_vs_measured_peak",  # CPU: no datasheet peak, so no "mfu"
              "data/mix_demo_videos", "data/bad_fraction"):
    assert key in row, key
  knn = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()
         if "knn_mean_top1" in l]  # merged into that step's row: one row per step
  assert [r["step"] for r in knn] == [15, 30] and 0 <= knn[-1]["knn_cls_top1"] <= 100
  assert 0 <= knn[-1]["probe_mean_top1"] <= 100  # the in-loop linear probe, same features
  # The random-encoder control is computed once and logged beside every readout.
  assert knn[0]["random_knn_mean_top1"] == knn[-1]["random_knn_mean_top1"]
  assert "random_probe_mean_top1" in knn[-1]

  # A second call finds the finished run and only resumes (no step is repeated).
  again = train.train_and_evaluate(_tiny(tmp_path, 30), str(workdir))
  assert int(again.step) == 30


def test_divergence_stops_with_a_clear_message_and_a_checkpoint(tmp_path):
  c = _tiny(tmp_path, 40, synthetic_data=True, max_consecutive_skipped=3)
  c.optim.base_lr = 1e12  # the first update blows the weights up; every later loss is non-finite
  c.log_every_steps = 1
  workdir = tmp_path / "diverged"
  with pytest.raises(train.TrainingDiverged, match="consecutive updates had a non-finite"):
    train.train_and_evaluate(c, str(workdir))
  saved = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  assert saved and max(saved) <= 6


def test_export_encoder_from_a_pretraining_workdir(tmp_path):
  import os
  import subprocess
  import sys

  import numpy as np
  from flax import nnx

  from vicmae_jax import params_io
  from vicmae_jax.convert import load_state_dict

  workdir = tmp_path / "run"
  state = train.train_and_evaluate(_tiny(tmp_path, 2, synthetic_data=True), str(workdir))
  out = tmp_path / "export"
  proc = subprocess.run([sys.executable, "-m", "vicmae_jax.export", f"--workdir={workdir}",
                         f"--out={out}", "--layouts=timm,hf"], capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  params, cfg = params_io.load_params(str(out / "encoder"))
  assert cfg.width == 64 and sorted(params) == ["encoder"]
  np.testing.assert_array_equal(params["encoder"]["cls_token"],
                                np.asarray(nnx.to_pure_dict(state.params)["encoder"]["cls_token"]))
  timm = load_state_dict(out / "encoder_timm.safetensors")
  umask = os.umask(0o022)
  os.umask(umask)
  for f in out.rglob("*"):   # shareable like any file the user writes (not 0600)
    if f.is_file():
      assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f
  np.testing.assert_array_equal(timm["cls_token"], params["encoder"]["cls_token"])
  assert "blocks.1.attn.qkv.weight" in timm and not any(k.startswith("decoder") for k in timm)
  assert "vit.layers.0.attention.q_proj.weight" in load_state_dict(out / "encoder_hf.safetensors")
  proc = subprocess.run([sys.executable, "-m", "vicmae_jax.export", "--workdir=run",
                         "--out=target", "--weights=target"], capture_output=True,
                        text=True, timeout=300, cwd=tmp_path)  # relative paths
  assert proc.returncode == 0, proc.stderr[-2000:]
  target, _ = params_io.load_params(str(tmp_path / "target" / "encoder"))
  np.testing.assert_array_equal(
      target["encoder"]["norm"]["scale"],
      np.asarray(nnx.to_pure_dict(state.target)["target"]["encoder"]["norm"]["scale"]))

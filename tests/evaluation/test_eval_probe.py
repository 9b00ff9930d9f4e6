"""Frozen-encoder commands: linear probe (ViC-MAE pretrained vs random, augmented with resume,
cached), kNN, feature extraction."""
import json
import shutil

import numpy as np
from PIL import Image

from configs import common
from configs import eval_common as config_defaults
from vicmae_jax import train
from vicmae_jax.evaluation import features, runners, toy


def _probe_config(kind, size=32):
  c = config_defaults.tiny(config_defaults.base_config("linprobe"))
  c.model.image_size = size
  c.data.update(toy=kind, train_size=256, val_size=120, seed=5, size=size)
  return c


def test_vicmae_pretraining_beats_a_random_encoder_on_the_linear_probe(tmp_path):
  """The real pretraining loop (ViC-MAE: masked reconstruction + contrastive, EMA target) on
  unlabelled PNGs of the stripes toy, then the fast linear probe on a fresh labelled sample:
  the pretrained encoder's mean feature (the one the contrastive loss trains) beats a random
  encoder's of the same architecture. The class is the stripes' orientation, under random
  colours, period and phase that dominate a random encoder's features. Measured on the mean
  feature: 400 steps 44.0 vs 45.5 random (not yet better), 1,200 steps 53.5 vs 45.5 (+8)."""
  size = 32
  unlabelled = tmp_path / "unlabelled"
  unlabelled.mkdir()
  for i, img in enumerate(toy.make_toy("stripes", 512, size=size, seed=11)[0]):
    Image.fromarray(img).save(unlabelled / f"{i:04d}.png")   # no labels reach pretraining
  arch = dict(patch=4, width=64, depth=3, heads=4, mlp_dim=256)
  c = common.tiny_overrides(common.base_config())
  c.model.update(image_size=size, **arch)
  c.input.sources = [dict(kind="image_folder", path=str(unlabelled))]
  c.update_from_flattened_dict({"total_steps": 1200, "batch_size": 32, "steps_per_epoch": 16,
                                "optim.base_lr": 5e-3, "optim.warmup_epochs": 1.0,
                                "checkpoint.every_steps": 1200, "log_every_steps": 100,
                                "image_every_steps": 0})
  train.train_and_evaluate(c, str(tmp_path / "pretrain"))

  probe = _probe_config("stripes")
  probe.data.val_size = 200
  probe.linprobe.augment = False
  probe.model.update(**arch)  # the random control has the pretrained encoder's architecture
  random = runners.linprobe(probe, str(tmp_path / "random"))
  probe.init.update(source="workdir", path=str(tmp_path / "pretrain"))
  trained = runners.linprobe(probe, str(tmp_path / "trained"))
  assert "encoder arrays loaded" in trained["init"]
  assert trained["linprobe_mean_top1"] >= random["linprobe_mean_top1"] + 6, (trained, random)
  assert (tmp_path / "trained" / "linprobe_results.json").exists()


def _logged_losses(workdir):
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: (r["linprobe_cls_loss"], r["linprobe_mean_loss"]) for r in rows
          if "linprobe_cls_loss" in r}


def test_augmented_probe_learns_and_resume_reproduces(tmp_path):
  """MAE's protocol: fresh crops every epoch through the frozen encoder, both readouts' heads
  side by side; stopped after 6 of 20 steps and restarted, it logs the same losses."""
  c = _probe_config("color")
  c.linprobe.update(augment=True, epochs=10)   # 256 / 128 = 2 steps per epoch
  c.update_from_flattened_dict({"checkpoint.every_steps": 4, "log_every_steps": 1})
  full = runners.linprobe(c, str(tmp_path / "full"))
  for r in ("cls", "mean"):
    assert full[f"linprobe_{r}_top1"] >= 80, full   # chance is 25%
    assert full[f"linprobe_{r}_num_examples"] == 120
  part = runners.linprobe(c, str(tmp_path / "resumed"), stop_after_steps=6)
  assert part["step"] == 6 and "linprobe_cls_top1" not in part
  assert not (tmp_path / "resumed" / "linprobe_results.json").exists()
  resumed = runners.linprobe(c, str(tmp_path / "resumed"))
  assert resumed["step"] == full["step"] == 20
  want, got = _logged_losses(tmp_path / "full"), _logged_losses(tmp_path / "resumed")
  assert sorted(got) == list(range(1, 21))
  assert [got[s] for s in range(7, 21)] == [want[s] for s in range(7, 21)]
  assert {k: v for k, v in resumed.items() if k != "init"} == \
      {k: v for k, v in full.items() if k != "init"}


def test_linprobe_knn_and_features_on_a_colour_task(tmp_path):
  c = _probe_config("color")
  c.linprobe.augment = False  # the fast probe: features cached once
  c.data.val_size = 61  # not a multiple of the eval batch (24): padding and masking
  lp = runners.linprobe(c, str(tmp_path / "lp"))
  for r in ("cls", "mean"):
    assert lp[f"linprobe_{r}_top1"] >= 80, lp   # chance is 25%
    assert lp[f"linprobe_{r}_num_examples"] == 61
  kn = runners.knn(c, str(tmp_path / "knn"))
  assert kn["mean_knn_top1"] >= 80 and kn["mean_knn_num_examples"] == 61, kn

  c.features.array_record = True
  c.features.splits = "val"
  paths = runners.extract(c, str(tmp_path / "feat"))["val"]
  cls = np.load(tmp_path / "feat" / "features" / "val_cls.npy")
  labels = np.load(tmp_path / "feat" / "features" / "val_label.npy")
  assert cls.shape == (61, 32) and labels.shape == (61,)
  rec = [p for p in paths if p.endswith("val_cls.array_record")][0]
  feats, rec_labels = features.read_array_record(rec, 32)
  np.testing.assert_allclose(feats, cls)
  np.testing.assert_array_equal(rec_labels, labels)
  shutil.rmtree(tmp_path / "feat")

"""Frozen-encoder commands: linear probe (pretrained vs random), kNN, feature extraction."""
import shutil

import jax
import numpy as np
from flax import nnx

from configs import eval_common as config_defaults
from vicmae_jax import params_io
from vicmae_jax.evaluation import features, finetune, runners


def _probe_config(toy, size=32):
  c = config_defaults.tiny(config_defaults.base_config("linprobe"))
  c.model.image_size = size
  c.data.update(toy=toy, train_size=256, val_size=120, seed=5, size=size)
  return c


def test_pretrained_encoder_beats_random_on_the_linear_probe(tmp_path):
  """The "pretrained" encoder is trained (through the fine-tuning loop) on one sample of the
  quadrant task, exported, frozen and probed on a fresh sample; a random encoder is the control.
  The quadrant of a small square needs spatial features, which a random ViT only weakly has."""
  c = config_defaults.tiny(config_defaults.base_config("finetune"))
  c.model.image_size = 16
  c.data.update(toy="position", train_size=256, val_size=120, size=16)
  c.aug.update(rand_augment_n=0, reprob=0.0, mixup=0.0, cutmix=0.0, smoothing=0.0,
               scale_min=1.0, hflip=False)  # every one of these would move or hide the square
  c.update_from_flattened_dict({"total_steps": 80, "optim.base_lr": 0.1, "head.drop_path": 0.0,
                                "optim.layer_decay": 1.0, "head.readout": "mean",
                                "batch_size": 32, "checkpoint.every_steps": 80})
  out = finetune.finetune(c, str(tmp_path / "pretrain"))
  encoder = jax.tree.map(np.asarray, nnx.to_pure_dict(out["state"].params)["encoder"])
  params_io.save_params(str(tmp_path / "export"), encoder, finetune.resolve_model_config(c))

  probe = _probe_config("position", 16)
  random = runners.linprobe(probe, str(tmp_path / "random"))
  probe.init.update(source="export", path=str(tmp_path / "export"))
  trained = runners.linprobe(probe, str(tmp_path / "trained"))
  assert "encoder arrays loaded" in trained["init"]
  assert trained["linprobe_mean_top1"] >= random["linprobe_mean_top1"] + 15, (trained, random)
  assert trained["linprobe_mean_top1"] >= 55
  assert (tmp_path / "trained" / "linprobe_results.json").exists()


def test_linprobe_knn_and_features_on_a_colour_task(tmp_path):
  c = _probe_config("color")
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

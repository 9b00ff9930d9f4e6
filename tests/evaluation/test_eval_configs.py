"""The evaluation configs: recipe values, tiny variants, and the `main` dispatch of a mode."""
import json
import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parents[2]
NAMES = ["finetune_in1k_vitb", "finetune_in1k_vitl", "linprobe_in1k_vitl", "linprobe_in1k_vitb",
         "knn_in1k_vitb", "finetune_k400_vitl", "finetune_ssv2_vitl",
         "finetune_places365_vitl"]


def load(name, arg=""):
  path = str(REPO / "configs" / f"{name}.py") + (f":{arg}" if arg else "")
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=["prog", f"--config={path}"])
  fv(["prog", f"--config={path}"])
  return fv.config


@pytest.mark.parametrize("name", NAMES)
def test_configs_load_with_and_without_tiny(name):
  c = load(name)
  assert c.mode in ("finetune", "linprobe", "knn")
  assert c.model.variant == ("L/16" if "vitl" in name else "B/16")
  t = load(name, "tiny")
  assert t.model.variant == "test" and t.init.source == "none"
  assert t.data.kind == ("toy_video" if t.video.enabled else "toy")
  assert t.batch_size % 8 == 0 and t.eval_batch_size % 8 == 0


@pytest.mark.parametrize("name", NAMES)
def test_configs_read_as_typed_settings(name):
  """Every recipe (and its tiny variant) reads into EvalConfig: no key the trainers ignore."""
  from vicmae_jax.evaluation.config import EvalConfig, eval_config
  for arg in ("", "tiny"):
    c = load(name, arg)
    typed = eval_config(c)
    assert isinstance(typed, EvalConfig) and typed.mode == c.mode
    assert typed.model.width > 0 and typed.data.kind == c.data.kind
    assert typed.is_video == c.video.enabled
    assert eval_config(typed) is typed


def test_typed_eval_config_rejects_unknown_keys_by_path():
  from vicmae_jax import config_lib
  from vicmae_jax.evaluation.config import eval_config
  import ml_collections
  c = load("finetune_in1k_vitb", "tiny")
  bad = ml_collections.ConfigDict(c.to_dict())
  bad.data.trian = "/x"                     # a typo a locked ConfigDict cannot catch here
  with pytest.raises(config_lib.ConfigError, match=r"unknown key data\.trian"):
    eval_config(bad)
  bad = ml_collections.ConfigDict(c.to_dict())
  bad.init.source = "hub"
  with pytest.raises(config_lib.ConfigError, match="init.source must be one of"):
    eval_config(bad)
  bad = ml_collections.ConfigDict(c.to_dict())
  bad.input = {"sources": []}               # a pretraining section has no meaning here
  with pytest.raises(config_lib.ConfigError, match="unknown key input"):
    eval_config(bad)


@pytest.mark.parametrize("key, value, message", [
    ("optim.base_lr", -1e-3, "base_lr > 0"), ("optim.layer_decay", 0.0, "0 < layer_decay <= 1"),
    ("num_epochs", 0.0, "num_epochs > 0"), ("eval_batch_size", 0, "eval_batch_size > 0")])
def test_nonsense_values_are_config_errors(key, value, message):
  from vicmae_jax import config_lib
  from vicmae_jax.evaluation.config import eval_config
  c = load("finetune_in1k_vitb", "tiny")
  with c.unlocked():
    c.update_from_flattened_dict({key: value})
  with pytest.raises(config_lib.ConfigError, match=message):
    eval_config(c)


def test_eval_defaults_are_the_typed_defaults():
  """configs/eval_common.py starts from EvalConfig's defaults: one place for each default."""
  from configs import eval_common
  from vicmae_jax.evaluation.config import EvalConfig, eval_config
  typed = eval_config(eval_common.base_config("knn"))
  assert typed.knn == EvalConfig().knn and typed.optim == EvalConfig().optim
  assert typed.aug == EvalConfig().aug and typed.linprobe == EvalConfig().linprobe
  assert typed.mode == "knn"


def test_finetune_recipe_matches_the_release():
  c = load("finetune_in1k_vitb", "init=export,path=/x")
  assert (c.batch_size, c.num_epochs, c.optim.base_lr, c.optim.layer_decay) == (1024, 100, 5e-4, 0.65)
  assert (c.head.drop_path, c.aug.mixup, c.aug.cutmix, c.aug.smoothing) == (0.1, 0.8, 1.0, 0.1)
  assert (c.aug.reprob, c.aug.rand_augment_m, c.aug.rand_augment_n) == (0.25, 9.0, 2)
  assert (c.optim.weight_decay, c.optim.warmup_epochs, c.head.readout) == (0.05, 5.0, "cls")
  assert c.aug.crop_pct == 0.875 and c.init.source == "export"
  lp = load("linprobe_in1k_vitl")
  assert (lp.linprobe.batch_size, lp.linprobe.base_lr, lp.linprobe.epochs) == (16384, 0.1, 50)
  assert lp.linprobe.readouts == "cls,mean" and lp.linprobe.augment  # MAE: crops every epoch
  places = load("finetune_places365_vitl")
  assert (places.num_classes, places.data.name, places.data.val) == (365, "places365_small",
                                                                      "validation")
  assert (places.optim.base_lr, places.optim.layer_decay, places.model.variant) == (5e-4, 0.65,
                                                                                    "L/16")
  k400 = load("finetune_k400_vitl")
  assert k400.video.enabled and (k400.video.num_frames, k400.video.stride) == (16, 4)
  assert (k400.video.tubelet, k400.video.test_spatial, k400.video.test_temporal) == (2, 3, 7)
  ssv2 = load("finetune_ssv2_vitl", "labels=/l.json")
  assert ssv2.video.sampling == "segment" and ssv2.data.kind == "ssv2" and not ssv2.aug.hflip
  assert ssv2.data.labels == "/l.json"
  kn = load("knn_in1k_vitb")
  assert (kn.knn.k, kn.knn.temperature) == (20, 0.07)


def test_main_runs_the_knn_mode(tmp_path):
  subprocess.run([sys.executable, "-m", "vicmae_jax.main", "--config=configs/knn_in1k_vitb.py:tiny",
                  f"--workdir={tmp_path}"], cwd=REPO, check=True, timeout=300,
                 capture_output=True)
  results = json.loads((tmp_path / "knn_results.json").read_text())
  assert results["mean_knn_top1"] > 50 and results["mean_knn_num_examples"] == 60

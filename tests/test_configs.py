"""The named pretraining configs: loading, locking, recipe, model, data paths, tiny smoke runs."""
from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `from configs import ...` inside the config files
  sys.path.insert(0, str(REPO))

from vicmae_jax import config_lib, models, optim  # noqa: E402

DEVICES = 8  # tests/conftest.py

# name -> (default variant, (min, max) online params incl. decoder and heads, source kinds).
CONFIGS = {
    "vits_k400": ("S/16", (3e7, 7e7), ["kinetics_csv"]),
    "vitb_k400": ("B/16", (1e8, 2e8), ["kinetics_csv"]),
    "vitl_k400": ("L/16", (3e8, 4.5e8), ["kinetics_csv"]),
    "vitl_k400_in1k": ("L/16", (3e8, 4.5e8), ["kinetics_csv", "image_folder"]),
    "vitl_mit": ("L/16", (3e8, 4.5e8), ["mit"]),
    "vitl_k710_mit_in1k": ("L/16", (3e8, 4.5e8),
                           ["kinetics_csv"] * 3 + ["mit", "image_folder"]),
    "vith_k400_in1k": ("H/14", (6e8, 8e8), ["kinetics_csv", "image_folder"]),
    "vitb_in1k": ("B/16", (1e8, 2e8), ["image_folder"]),
}
VIDEO_CONFIGS = [n for n, (_, _, kinds) in CONFIGS.items() if kinds != ["image_folder"]]
IN1K_CONFIGS = [n for n, (_, _, kinds) in CONFIGS.items() if "image_folder" in kinds]
# A tiny training run costs 40-140 s on 2 shared cores (mostly compiling), and `tiny` replaces the
# model and the data with the same smoke setup in every file (test_tiny_variants_agree), so one
# end-to-end run covers all of them.
TRAINED = ["vitl_k400"]


def load(name: str, arg: str = "", *overrides: str):
  """Loads configs/<name>.py[:arg] through a locked config flag, exactly as main.py does."""
  path = str(REPO / "configs" / f"{name}.py") + (f":{arg}" if arg else "")
  argv = ["prog", f"--config={path}", *overrides]
  fv = flags.FlagValues()
  # Override flags (--config.x=...) are found in argv when the flag is defined.
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  return fv.config


@functools.lru_cache(maxsize=None)
def param_count(model_cfg: models.ModelConfig) -> int:
  return models.count_params(model_cfg)  # eval_shape: no memory; cached per variant


def make_layout(config) -> None:
  """Creates the (empty) files and folders the config's local sources point at."""
  for spec in config.input.sources:
    if spec["kind"] == "tfds":
      continue
    if spec["kind"] == "kinetics_csv":
      os.makedirs(os.path.dirname(spec["path"]), exist_ok=True)
      pathlib.Path(spec["path"]).touch()
      os.makedirs(spec["root"], exist_ok=True)
    else:
      os.makedirs(spec["path"], exist_ok=True)
    if spec["kind"] == "frames":  # a frames folder must hold shards (an empty one is an error)
      pathlib.Path(spec["path"], "frames-00000-of-00001.array_record").touch()


# First in the file: pytest-xdist hands tests out in order, so the slow one starts first.
@pytest.mark.parametrize("name", TRAINED)
def test_tiny_variant_trains(name, tmp_path):
  from vicmae_jax import train
  config = load(name, "tiny")
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == config.total_steps
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == config.total_steps
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  last = json.loads(lines[-1])
  assert last["step"] == config.total_steps and last["skipped_steps"] == 0
  assert list((tmp_path / "images").glob("reconstruction_*.png"))


@pytest.mark.parametrize("name", CONFIGS)
def test_loads_validates_and_resolves_model(name, tmp_path):
  variant, (lo, hi), kinds = CONFIGS[name]
  config = load(name, f"data_root={tmp_path}")
  assert [s["kind"] for s in config.input.sources] == kinds
  for spec in config.input.sources:
    assert spec["path"].startswith(str(tmp_path)), spec
    assert "weight" not in spec  # natural proportions (docs/data.md, source weights)
  make_layout(config)
  model_cfg = config_lib.validate(config, DEVICES)
  assert model_cfg.variant == variant
  assert model_cfg.image_size == 224 and model_cfg.mask_ratio == 0.5
  assert lo < param_count(model_cfg) < hi


@pytest.mark.parametrize("name", CONFIGS)
def test_shared_recipe(name):
  c = load(name)
  assert (c.mode, c.batch_size, c.num_epochs, c.optim.warmup_epochs) == ("pretrain", 4096, 800, 40)
  assert (c.optim.base_lr, c.optim.b1, c.optim.b2) == (1.5e-4, 0.9, 0.95)
  assert c.optim.weight_decay == 0.05
  assert (c.loss.temperature, c.loss.weight_recon, c.loss.weight_contrast) == (0.1, 0.97, 0.03)
  assert c.model.mask_ratio == 0.5 and c.model.contrastive_mode == "ema_target"


@pytest.mark.parametrize("name", CONFIGS)
def test_the_compute_dtype_is_left_to_the_platform(name):
  """No recipe fixes the dtype: "auto" is bf16 on TPU/GPU and fp32 on CPU (hardware.resolve_dtype),
  and --config.model.dtype still overrides it."""
  assert load(name).model.dtype == "auto"
  assert load(name, "", "--config.model.dtype=float32").model.dtype == "float32"


def test_vitl_k400_is_the_released_recipe():
  c = load("vitl_k400")
  assert c.model.variant == "L/16" and c.model.image_size == 224 and c.model.mask_ratio == 0.5
  assert c.model.pooling == "mean" and c.loss.norm_pix
  assert c.batch_size == 4096 and c.optim.accum_steps == 1 and c.num_epochs == 800
  assert c.optim.base_lr == 1.5e-4
  assert optim.peak_learning_rate(c.optim.base_lr, c.batch_size) == pytest.approx(2.4e-3)
  assert c.optim.warmup_epochs == 40 and c.optim.min_lr == 0.0
  assert (c.optim.b1, c.optim.b2, c.optim.eps) == (0.9, 0.95, 1e-8)
  assert c.optim.weight_decay == 0.05 and c.optim.grad_clip == 0.0
  assert c.loss.temperature == 0.1
  assert (c.loss.weight_recon, c.loss.weight_contrast) == (0.97, 0.03)
  assert c.loss.contrast_ramp_steps == 0
  assert (c.ema.base, c.ema.final) == (0.996, 1.0)
  assert c.input.pair_sampling["mode"] == "distant"
  # The authors' K400 copy: 241,255 clips -> 58 steps per epoch at 4096.
  sched = config_lib.schedule(c, 241_255)
  assert (sched.steps_per_epoch, sched.total_steps, sched.warmup_steps) == (58, 46_400, 2_320)


@pytest.mark.parametrize("name", CONFIGS)
def test_missing_data_fails_with_docs_pointer(name, tmp_path):
  root = tmp_path / "no_such_root"
  config = load(name, f"data_root={root}")
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(config, DEVICES)
  message = str(err.value)
  assert config_lib.DATA_DOCS in message
  for spec in config.input.sources:
    assert spec["path"] in message


@pytest.mark.parametrize("name", VIDEO_CONFIGS)
def test_frames_reads_shards(name, tmp_path):
  config = load(name, f"frames,data_root={tmp_path}")
  videos = [s for s in config.input.sources if s["kind"] != "image_folder"]
  assert videos and all(s["kind"] == "frames" for s in videos)
  assert all("_frames" in s["path"] for s in videos)
  with pytest.raises(config_lib.ConfigError, match="_frames"):
    config_lib.validate(config, DEVICES)
  make_layout(config)
  config_lib.validate(config, DEVICES)


def test_frames_rejected_without_videos():
  # get_config's ValueError reaches the command line as a flag error naming the cause.
  with pytest.raises(flags.Error, match="images only"):
    load("vitb_in1k", "frames")


@pytest.mark.parametrize("name", IN1K_CONFIGS)
def test_imagenet_folder_and_tfds(name, tmp_path, monkeypatch):
  monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
  folder = tmp_path / "my_imagenet"
  (in1k,) = [s for s in load(name, f"imagenet_folder={folder}").input.sources
             if s["name"] == "in1k"]
  assert in1k["kind"] == "image_folder" and in1k["path"] == str(folder)
  (in1k,) = [s for s in load(name, f"imagenet=tfds,data_root={tmp_path}").input.sources
             if s["name"] == "in1k"]
  assert (in1k["kind"], in1k["path"], in1k["split"]) == ("tfds", "imagenet2012", "train")
  assert in1k["data_dir"] == str(tmp_path / "tensorflow_datasets")
  monkeypatch.setenv("TFDS_DATA_DIR", "/tfds")
  (in1k,) = [s for s in load(name, "imagenet=tfds").input.sources if s["name"] == "in1k"]
  assert in1k["data_dir"] == "/tfds"


def test_data_root_from_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("VICMAE_DATA_ROOT", str(tmp_path))
  (spec,) = load("vitl_mit").input.sources
  assert spec["path"] == str(tmp_path / "Moments_in_Time_Raw" / "training")
  monkeypatch.delenv("VICMAE_DATA_ROOT")
  (spec,) = load("vitl_k400").input.sources
  assert spec["path"] == os.path.join(".", "data", "k400", "annotations", "train.csv")
  assert spec["root"] == os.path.join(".", "data", "k400", "train")


def test_k710_sources_are_distinct():
  names = [s["name"] for s in load("vitl_k710_mit_in1k").input.sources]
  assert names == ["k400", "k600", "k700", "mit", "in1k"]


def test_variant_argument_and_overrides():
  config = load("vitl_k400_in1k", "variant=B/16", "--config.batch_size=2048",
                "--config.optim.accum_steps=4", "--config.model.dtype=bfloat16")
  assert config.model.variant == "B/16"
  assert (config.batch_size, config.optim.accum_steps, config.model.dtype) == (2048, 4, "bfloat16")


def test_mistyped_leaf_key_fails():
  # The locked ConfigDict refuses the new key (and suggests the right one).
  with pytest.raises((flags.Error, KeyError, AttributeError), match="varaint"):
    load("vitb_k400", "tiny", "--config.model.varaint=x")


def test_unknown_argument_fails():
  with pytest.raises(flags.Error, match="Unknown config argument.*tyny"):
    load("vitl_k400", "tyny")


def test_main_rejects_mistyped_key(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "vicmae_jax.main", "--config=configs/vitb_k400.py:tiny",
       f"--workdir={tmp_path / 'run'}", "--config.modle.variant=x"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "modle" in proc.stderr
  assert not (tmp_path / "run").exists()  # failed before anything ran
  # From another folder, with the config file's path (its `configs` siblings still import).
  proc = subprocess.run(
      [sys.executable, "-m", "vicmae_jax.main", f"--config={REPO}/configs/vitb_k400.py:tiny",
       "--workdir=run", "--config.input.num_wokers=2"],
      cwd=tmp_path, env={k: v for k, v in env.items() if k != "PYTHONPATH"},
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert ("names a key the config does not have: 'num_wokers'\n"
          'Did you mean "num_workers"') in proc.stderr   # a real line break, not a repr


def test_every_config_argument_is_known():
  """The demo and evaluation configs reject a mistyped argument too (`:stpes=5`)."""
  from configs import demo, finetune_in1k_vitb
  with pytest.raises(ValueError, match=r"Unknown config argument\(s\) \['stpes'\]"):
    demo.get_config("stpes=5")
  with pytest.raises(ValueError, match="tyny"):
    finetune_in1k_vitb.get_config("tyny")


@pytest.mark.parametrize("name", CONFIGS)
def test_tiny_variant_is_local_and_valid(name, caplog):
  config = load(name, "tiny,data_root=/nonexistent")
  assert "ignored: data_root=/nonexistent" in caplog.text   # the demo media replace it
  assert [dict(s) for s in config.input.sources] == [dict(kind="demo", path="")]
  assert config.batch_size % DEVICES == 0 and config.total_steps <= 10
  model_cfg = config_lib.validate(config, DEVICES)
  assert model_cfg.variant == "test" and param_count(model_cfg) < 1e6


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


@pytest.mark.parametrize("name", CONFIGS)
def test_tiny_variants_agree(name):
  """Every `:tiny` is the trained one (test_tiny_variant_trains) up to memory-only knobs."""
  trained = _flatten(load(TRAINED[0], "tiny").to_dict())
  this = _flatten(load(name, "tiny").to_dict())
  differ = {k for k in set(trained) | set(this) if trained.get(k) != this.get(k)}
  assert differ <= {"model.remat"}, differ


def test_demo_is_the_study_base_arm_and_clips_the_fast_demo():
  """The default demo pretrains the study's base arm on the study data and reads it out against
  a random encoder; `data=clips` is the seconds-fast demo on the generated clips."""
  from configs import demo, study
  d, s = demo.get_config(), study.get_config("arm=vicmae,seed=0")
  assert [dict(x)["kind"] for x in d.input.sources] == ["study", "study"]
  assert [dict(x)["part"] for x in d.input.sources] == ["videos", "images"]
  for key in ("model", "loss", "ema", "optim"):
    assert d[key].to_dict() == s[key].to_dict(), key
  assert d.input.pair_sampling.to_dict() == s.input.pair_sampling.to_dict()
  assert d.knn_eval.random_control and d.knn_eval.probe_epochs > 0
  assert d.knn_eval.data.to_dict() == s.knn_eval.data.to_dict()
  assert d.total_steps // d.knn_eval.every_steps == 3          # readouts at 300, 600, 900
  clips = demo.get_config("data=clips")
  assert [dict(x) for x in clips.input.sources] == [dict(kind="demo", path="")]
  assert clips.knn_eval.data.kind == "toy" and not clips.knn_eval.random_control
  with pytest.raises(ValueError, match="data must be one of"):
    demo.get_config("data=cifar")

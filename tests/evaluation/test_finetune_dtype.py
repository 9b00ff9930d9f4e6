"""Fine-tuning's compute dtype: model.dtype "auto" resolved once from the run's mesh, and logged."""
import jax
import pytest

from configs import finetune_in1k_vitb
from vicmae_jax import sharding
from vicmae_jax.evaluation import classifiers, finetune


class _Stop(Exception):
  pass


def test_finetune_resolves_auto_for_its_mesh_and_logs_it(tmp_path, monkeypatch, caplog):
  built_with = []

  def stop(config, image_size, batch_sharding):
    raise _Stop

  real = classifiers.for_mesh

  def spy(model_cfg, mesh):
    out = real(model_cfg, mesh)
    built_with.append(out.dtype)
    return out

  monkeypatch.setattr(finetune, "_open_data", stop)
  monkeypatch.setattr(classifiers, "for_mesh", spy)
  config = finetune_in1k_vitb.get_config("tiny")
  assert config.model.dtype == "auto"
  with caplog.at_level("INFO"), pytest.raises(_Stop):
    finetune.finetune(config, str(tmp_path / "ft"))
  assert "compute dtype float32 (auto: mesh of 8 cpu devices); params float32" in caplog.messages
  assert built_with == ["float32"]


def test_an_explicit_dtype_wins_on_the_cpu_mesh(caplog):
  config = finetune_in1k_vitb.get_config("tiny")
  config.model.dtype = "bfloat16"
  mesh = sharding.make_mesh(devices=jax.devices()[:8])
  with caplog.at_level("INFO"):
    cfg = classifiers.for_mesh(classifiers.resolve_model_config(config), mesh)
  assert cfg.dtype == "bfloat16"
  assert "compute dtype bfloat16 (set in the config); params float32" in caplog.messages


def test_no_evaluation_config_fixes_the_dtype():
  import importlib
  import pathlib
  names = sorted(f.stem for f in (pathlib.Path(__file__).parents[2] / "configs").glob("*.py")
                 if f.stem.startswith(("finetune_", "linprobe_", "knn_")))
  assert len(names) >= 8
  for name in names:
    assert importlib.import_module(f"configs.{name}").get_config().model.dtype == "auto", name

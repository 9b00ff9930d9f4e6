"""Config validation: every problem named at once, before anything is built or compiled."""
import pytest

from configs import common
from vicmae_jax import config_lib, train


def _config(**updates):
  c = common.base_config()
  common.tiny_overrides(c)
  c.synthetic_data = True
  c.update_from_flattened_dict(updates)
  return c


@pytest.mark.parametrize("updates, message", [
    ({"batch_size": 12}, "not divisible by the 8 devices"),
    ({"batch_size": 16, "optim.accum_steps": 3}, "not divisible by optim.accum_steps"),
    ({"model.mask_ratio": 1.5}, "mask_ratio must be in (0, 1)"),
    ({"model.mask_ratio": 0.0}, "mask_ratio must be in (0, 1)"),
    ({"model.variant": "Z/99"}, "Unknown model variant"),
    ({"mesh.data": 3, "mesh.fsdp": 2}, "mesh data=3 x fsdp=2 != 8 devices"),
    ({"model.contrastive_mode": "simsiam"}, "contrastive_mode"),
    ({"optim.base_lr": -1.0}, "optim: needs base_lr > 0"),
    ({"optim.base_lr": 0.0}, "optim: needs base_lr > 0"),
    ({"optim.weight_decay": -0.1}, "weight_decay >= 0"),
    ({"loss.temperature": 0.0}, "loss: needs temperature > 0"),
    ({"loss.weight_recon": 0.0, "loss.weight_contrast": 0.0}, "a positive loss weight"),
    ({"ema.base": 1.5}, "ema: needs 0 <= base <= final <= 1"),
    ({"total_steps": 0, "num_epochs": 10.0, "optim.warmup_epochs": 40.0},
     "warmup_epochs < num_epochs"),
    ({"batch_size": 0}, "batch_size > 0"),
])
def test_bad_values_fail_with_a_clear_message(updates, message):
  with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config_lib.validate(_config(**updates), device_count=8)


def test_all_problems_are_reported_together():
  c = _config(batch_size=12, **{"model.mask_ratio": 2.0})
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(c, device_count=8)
  assert "mask_ratio" in str(err.value) and "devices" in str(err.value)


def test_missing_data_names_the_path_and_the_docs(tmp_path):
  c = _config(synthetic_data=False)
  c.input.sources = [dict(kind="kinetics_csv", path=str(tmp_path / "k400/train.csv"),
                          root=str(tmp_path / "k400/videos"))]
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(c, device_count=8)
  msg = str(err.value)
  assert "train.csv" in msg and "k400/videos" in msg and "docs/data.md" in msg


def test_bad_config_fails_before_any_compile(tmp_path, monkeypatch):
  def never(*a, **k):
    raise AssertionError("state creation must not be reached")
  monkeypatch.setattr(train, "init_train_state", never)
  with pytest.raises(config_lib.ConfigError):
    train.train_and_evaluate(_config(batch_size=12), str(tmp_path))


def test_locked_config_rejects_a_mistyped_key():
  c = _config()
  c.lock()
  with pytest.raises(AttributeError, match="modle"):
    c.modle = 3
  c.model.mask_ratio = 0.6  # existing keys stay overridable


def test_schedule_lengths():
  c = _config(total_steps=0, steps_per_epoch=0, num_epochs=2.0, batch_size=16)
  c.optim.warmup_epochs = 0.5
  s = config_lib.schedule(c, num_examples=160)
  assert (s.steps_per_epoch, s.total_steps, s.warmup_steps) == (10, 20, 5)


class _Stop(Exception):
  pass


def test_pretraining_logs_the_compute_dtype_and_builds_with_it(tmp_path, monkeypatch, caplog):
  """"auto" is resolved once from the mesh (8 CPU devices here: float32) and logged; the trainer
  goes on with the resolved config."""
  seen = []

  def stop(config, batch_sharding):
    seen.append(config.model.dtype)
    raise _Stop
  monkeypatch.setattr(train, "_make_iterator", stop)
  for dtype, line in (("auto", "compute dtype float32 (auto: mesh of 8 cpu devices); params "
                               "float32"),
                      ("bfloat16", "compute dtype bfloat16 (set in the config); params float32")):
    caplog.clear()
    with caplog.at_level("INFO"), pytest.raises(_Stop):
      train.train_and_evaluate(_config(**{"model.dtype": dtype}), str(tmp_path / dtype))
    assert line in caplog.messages
  assert seen == ["float32", "bfloat16"]


def test_for_mesh_resolves_auto_and_keeps_an_explicit_dtype():
  import jax
  from vicmae_jax import sharding
  mesh = sharding.make_mesh(devices=jax.devices()[:8])
  typed = config_lib.as_pretrain_config(_config())
  assert typed.model.dtype == "auto"
  assert config_lib.for_mesh(typed, mesh).model.dtype == "float32"
  bf16 = config_lib.as_pretrain_config(_config(**{"model.dtype": "bfloat16"}))
  assert config_lib.for_mesh(bf16, mesh).model.dtype == "bfloat16"
  with pytest.raises(config_lib.ConfigError, match="dtype must be auto"):
    config_lib.validate(_config(**{"model.dtype": "int8"}), device_count=8)


def test_a_resume_with_auto_is_not_a_changed_model(tmp_path):
  """Checkpoints keep the config as written ("auto"), so the same command finds no changed model
  setting; a real change is still named, without the dtype."""
  import jax
  import jax.numpy as jnp
  from vicmae_jax import run_lib

  def init():
    return {"step": jnp.zeros((), jnp.int32), "w": jnp.zeros((4,), jnp.float32)}

  skeleton = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), init())
  config = _config(**{"checkpoint.async_save": False})
  run = run_lib.open_run(config, tmp_path / "w")
  state, step = run.restore_or_init(skeleton, init)
  run_lib.train_loop(run, state, step, 2, lambda s, b: ({"step": s["step"] + 1, "w": s["w"] + b},
                                                        {"loss": jnp.sum(s["w"])}),
                     iter([1.0] * 10))
  run.close()
  assert run.config_dict["model"]["dtype"] == "auto"
  again = run_lib.open_run(_config(**{"checkpoint.async_save": False}), tmp_path / "w")
  assert again._changed_model_settings() == []
  state, step = again.restore_or_init(skeleton, init)
  assert step == 2
  again.close()
  wider = run_lib.open_run(_config(**{"checkpoint.async_save": False, "model.width": 128}),
                           tmp_path / "w")
  assert wider._changed_model_settings() == ["model.width 64 -> 128"]
  wider.close()

"""Encoder initialisation from a pretraining workdir, an exported encoder and a torch checkpoint;
the in-loop kNN entry on a pretraining state (one real pretraining run, shared)."""
import jax
import numpy as np
import pytest
from flax import nnx

from configs import common
from vicmae_jax import config_lib, params_io, sharding, train
from vicmae_jax.convert import export_state_dict, save_safetensors
from vicmae_jax.evaluation import init as init_lib, runners, toy
from vicmae_jax.models.classifier import Classifier
from vicmae_jax.evaluation.data import ArraySource
from vicmae_jax.models import ViCMAE, model_config


def _encoder_arrays(model):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model.encoder, nnx.Param)))


def _assert_encoder_equal(model, source_encoder):
  got = _encoder_arrays(model)
  src = jax.tree.map(np.asarray, source_encoder)
  for key in src:  # every source array arrived (pos_embed: fixed in pretraining, kept as init)
    jax.tree.map(np.testing.assert_array_equal, got[key], src[key])


@pytest.fixture()
def pretrained(tmp_path_factory):
  """Two real pretraining steps (synthetic batches) leave a workdir with a checkpoint."""
  tmp = tmp_path_factory.mktemp("pretrain")
  c = common.base_config()
  common.tiny_overrides(c, str(tmp / "media"))
  c.update_from_flattened_dict({"synthetic_data": True, "total_steps": 2,
                                "checkpoint.every_steps": 2, "image_every_steps": 0,
                                "checkpoint.async_save": False})
  state = train.train_and_evaluate(c, str(tmp / "run"))
  return tmp / "run", state, config_lib.model_config(c)


def test_init_from_pretraining_workdir(pretrained):
  workdir, state, cfg = pretrained
  model = Classifier(cfg, 3, rngs=nnx.Rngs(1))
  report = init_lib.init_encoder(model, "workdir", str(workdir))
  assert report.step == 2 and report.kept == ["pos_embed"]
  assert "blocks/0/attn/qkv/kernel" in report.loaded
  _assert_encoder_equal(model, nnx.to_pure_dict(state.params["encoder"]))
  # The stored architecture is what the fine-tuner builds.
  assert init_lib.source_model_config("workdir", str(workdir)).width == cfg.width
  _in_loop_knn(state, cfg)


def test_init_from_export_and_pytorch(tmp_path):
  cfg = model_config("test", image_size=16)
  source = ViCMAE(cfg, rngs=nnx.Rngs(7))
  pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(source)))
  params_io.save_params(str(tmp_path / "export"), pure, cfg)
  model = Classifier(cfg, 3, rngs=nnx.Rngs(1))
  report = init_lib.init_encoder(model, "export", str(tmp_path / "export"))
  assert report.source == "export" and len(report.loaded) > 10
  _assert_encoder_equal(model, pure["encoder"])

  torch_file = str(tmp_path / "encoder.safetensors")
  save_safetensors(export_state_dict(pure, cfg, parts=("encoder",)), torch_file)
  model = Classifier(cfg, 3, rngs=nnx.Rngs(2))
  report = init_lib.init_encoder(model, "pytorch", torch_file)
  assert report.source == "pytorch" and "blocks/1/mlp/fc2/kernel" in report.loaded
  got = _encoder_arrays(model)
  for key in pure["encoder"]:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), got[key],
                 pure["encoder"][key])


def test_init_rejects_a_mismatched_encoder(tmp_path):
  small, big = model_config("test", image_size=16), model_config("test", image_size=16, width=64)
  pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(ViCMAE(small, rngs=nnx.Rngs(0)))))
  params_io.save_params(str(tmp_path / "export"), pure, small)
  with pytest.raises(ValueError, match="do not fit"):
    init_lib.init_encoder(Classifier(big, 3, rngs=nnx.Rngs(0)), "export", str(tmp_path / "export"))


def _in_loop_knn(state, cfg):
  """In-loop kNN (what train.py calls every N steps) on the same pretraining state."""
  imgs, labels = toy.make_toy("color", 40, size=cfg.image_size, seed=0)
  vimgs, vlabels = toy.make_toy("color", 21, size=cfg.image_size, seed=1)
  out = runners.knn_eval(state.params["encoder"], cfg, ArraySource(imgs, labels, 4),
                         ArraySource(vimgs, vlabels, 4), batch_size=16,
                         mesh=sharding.make_mesh(), k=20)
  assert set(out) == {"knn_cls_top1", "knn_cls_top5", "knn_mean_top1", "knn_mean_top5"}
  assert out["knn_mean_top1"] > 50  # colour classes: separable even for a barely trained encoder
  # With probe epochs, the project's linear probe on the same frozen features joins the kNN.
  both = runners.knn_eval(state.params["encoder"], cfg, ArraySource(imgs, labels, 4),
                          ArraySource(vimgs, vlabels, 4), batch_size=16,
                          mesh=sharding.make_mesh(), k=20, probe_epochs=30, probe_batch_size=8)
  assert {k: both[k] for k in out} == out
  assert set(both) - set(out) == {"probe_cls_top1", "probe_cls_top5", "probe_mean_top1",
                                  "probe_mean_top5"}
  assert both["probe_mean_top1"] > 50

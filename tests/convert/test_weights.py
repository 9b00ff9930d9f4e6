"""Import/export of PyTorch layouts: exact round trips, one clear error, safe loading."""
import jax
import numpy as np
import pytest
from flax import nnx

from vicmae_jax.convert import (CheckpointMismatchError, export_state_dict, import_state_dict,
                                load_pytorch_weights, load_state_dict, save_safetensors)
from vicmae_jax.convert import layouts
from vicmae_jax.models import ViCMAE, model_config
from vicmae_jax.models.posembed import sincos_2d

CFG = dict(image_size=16, projector_hidden=32, predictor_hidden=32)


def _pure(model):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))


def _model(seed=0, **kw):
  return ViCMAE(model_config("test", **{**CFG, **kw}), rngs=nnx.Rngs(seed))


@pytest.mark.parametrize("layout, parts", [
    ("timm", ("encoder",)), ("timm", ("encoder", "decoder", "projector")),
    ("hf", ("encoder", "decoder")), ("hf_legacy", ("encoder", "decoder"))])
def test_round_trip_is_exact(layout, parts):
  src, dst = _model(0), _model(1)
  state = export_state_dict(_pure(src), src.cfg, parts=parts, layout=layout)
  assert layouts.detect_layout(state) == layout
  pure = _pure(dst)
  report = import_state_dict(state, pure, dst.cfg)
  assert report.parts == parts and not report.notes
  for part in parts:
    jax.tree.map(np.testing.assert_array_equal, pure[part], _pure(src)[part])


def test_exported_arrays_are_writable_and_contiguous():
  """So torch.from_numpy takes them without a warning and safetensors without a copy."""
  model = _model()
  assert not _pure(model)["encoder"]["norm"]["scale"].flags.writeable  # views of jax buffers
  for layout in ("timm", "hf"):
    state = export_state_dict(_pure(model), model.cfg, parts=("encoder", "decoder"), layout=layout)
    for key, value in state.items():
      assert value.flags.writeable and value.flags.c_contiguous, (layout, key)
      assert value.dtype == np.float32, (layout, key)


def test_timm_key_layout_and_shapes():
  cfg = model_config("test", **CFG)
  state = export_state_dict(_pure(_model()), cfg, parts=("encoder", "decoder", "projector"))
  d, p = cfg.width, cfg.patch
  assert state["patch_embed.proj.weight"].shape == (d, 3, p, p)
  assert state["blocks.1.attn.qkv.weight"].shape == (3 * d, d)
  assert state["pos_embed"].shape == (1, 1 + cfg.num_patches, d)
  np.testing.assert_array_equal(state["pos_embed"][0], sincos_2d(d, cfg.grid))
  assert state["projector.1.running_var"].shape == (32,)
  assert state["projector.6.weight"].shape == (128, 32)
  assert "decoder_blocks.0.mlp.fc2.bias" in state and "norm.weight" in state


def test_patch_kernel_equals_conv2d():
  torch = pytest.importorskip("torch")
  model = _model()
  state = export_state_dict(_pure(model), model.cfg)
  conv = torch.nn.Conv2d(3, 32, 4, 4)
  with torch.no_grad():
    conv.weight.copy_(torch.from_numpy(state["patch_embed.proj.weight"]))
    conv.bias.copy_(torch.from_numpy(state["patch_embed.proj.bias"]))
  x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  ref = conv(torch.from_numpy(x.transpose(0, 3, 1, 2))).flatten(2).transpose(1, 2).detach().numpy()
  from vicmae_jax import masking
  ours = model.encoder.patch_embed(masking.patchify(jax.numpy.asarray(x), 4))
  np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-5)


def test_one_error_lists_missing_unexpected_and_misshaped():
  model = _model()
  state = export_state_dict(_pure(model), model.cfg, parts=("encoder",))
  del state["blocks.0.norm1.weight"]
  state["blocks.0.attn.proj.weight"] = np.zeros((5, 5), np.float32)
  state["some.stray.key"] = np.zeros(3, np.float32)
  with pytest.raises(CheckpointMismatchError) as err:
    import_state_dict(state, _pure(model), model.cfg, parts=("encoder",))
  msg = str(err.value)
  assert "1 missing: blocks.0.norm1.weight" in msg
  assert "1 unexpected: some.stray.key" in msg
  assert "mis-shaped: blocks.0.attn.proj.weight" in msg


def test_wrong_variant_is_reported_as_shape_errors():
  small = _model()
  bigger = ViCMAE(model_config("test", **{**CFG, "width": 64}), rngs=nnx.Rngs(0))
  state = export_state_dict(_pure(bigger), bigger.cfg)
  with pytest.raises(CheckpointMismatchError, match="mis-shaped"):
    import_state_dict(state, _pure(small), small.cfg)


def test_finetuned_checkpoint_hands_back_the_classifier(tmp_path):
  model = _model()
  state = export_state_dict(_pure(model), model.cfg)
  state["head.weight"] = np.ones((10, 32), np.float32)
  state["head.bias"] = np.zeros(10, np.float32)
  report = load_pytorch_weights(_model(1), state)
  assert sorted(report.extras) == ["head.bias", "head.weight"]


def test_full_mae_checkpoint_can_import_encoder_only():
  model = _model()
  state = export_state_dict(_pure(model), model.cfg, parts=("encoder", "decoder"))
  report = import_state_dict(state, _pure(_model(1)), model.cfg, parts=("encoder",))
  assert report.parts == ("encoder",)


def test_learned_position_table_is_loaded_and_interpolated():
  cfg14 = model_config("test", **{**CFG, "learned_pos_embed": True})  # grid 4
  src = ViCMAE(cfg14, rngs=nnx.Rngs(0))
  state = export_state_dict(_pure(src), cfg14)
  state["pos_embed"] = state["pos_embed"] + 0.5  # a learned table
  dst = ViCMAE(model_config("test", **{**CFG, "image_size": 24, "learned_pos_embed": True}),
               rngs=nnx.Rngs(1))
  report = load_pytorch_weights(dst, state, parts=("encoder",))
  assert not report.notes
  table = np.asarray(dst.encoder.pos_embed[...])
  assert table.shape == (1, 1 + 36, 32)
  np.testing.assert_allclose(table[0, 0], state["pos_embed"][0, 0])
  # A fixed-table model keeps sin-cos and says why.
  fixed = _model(2)
  report = load_pytorch_weights(fixed, state, parts=("encoder",))
  assert any("learned_pos_embed=True" in n for n in report.notes)


def test_import_into_ema_model_sets_the_target_too():
  src = _model(0, contrastive_mode="shared_projector")
  state = export_state_dict(_pure(src), src.cfg, parts=("encoder", "decoder", "projector"))
  dst = _model(1, contrastive_mode="ema_target")
  load_pytorch_weights(dst, state)
  pure = _pure(dst)
  for part in ("encoder", "projector"):
    jax.tree.map(np.testing.assert_array_equal, pure["target"][part], _pure(src)[part])


def test_pth_loads_with_weights_only_and_refuses_pickled_objects(tmp_path):
  torch = pytest.importorskip("torch")
  model = _model()
  state = export_state_dict(_pure(model), model.cfg)
  path = tmp_path / "ckpt.pth"
  torch.save({"model": {f"module.{k}": torch.from_numpy(v) for k, v in state.items()},
              "epoch": 3}, path)
  loaded = load_state_dict(path)
  assert sorted(loaded) == sorted(state)
  np.testing.assert_array_equal(loaded["cls_token"], state["cls_token"])

  class Evil:
    def __reduce__(self):
      return (print, ("unpickled!",))

  bad = tmp_path / "bad.pth"
  torch.save({"model": Evil()}, bad)
  with pytest.raises(ValueError, match="weights_only"):
    load_state_dict(bad)


def test_safetensors_round_trip(tmp_path):
  model = _model()
  state = export_state_dict(_pure(model), model.cfg, layout="hf")
  save_safetensors(state, tmp_path / "enc.safetensors")
  loaded = load_state_dict(tmp_path / "enc.safetensors")
  assert sorted(loaded) == sorted(state)
  with pytest.raises(FileNotFoundError):
    load_state_dict(tmp_path / "missing.safetensors")

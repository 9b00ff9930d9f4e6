"""Checkpoint files as each project's save code writes them, loaded into our model.

Every file has its project's structure (wrappers, key names, shapes, the optimizer / scaler /
args beside the weights) around random tensors of our tiny test ViT, so each test can check
that the weights arrive where they belong.
"""
import argparse
import collections
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from vicmae_jax.convert import (SAFE_GLOBALS, export_state_dict, load_pytorch_weights,
                                load_state_dict, read_state_dict)
from vicmae_jax.models import ViCMAE, model_config

torch = pytest.importorskip("torch")

CFG = dict(image_size=16, projector_hidden=32, predictor_hidden=32)
T = 2  # frames per tubelet in the video models
RNG = np.random.default_rng(0)


def _model(seed=0, **kw):
  return ViCMAE(model_config("test", **{**CFG, **kw}), rngs=nnx.Rngs(seed))


def _pure(model):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))


def _source(parts=("encoder",), *, zero_k_bias=False, **kw):
  """(our params, their timm-layout export) of a random model: the weights every file carries.

  Every value is perturbed, so no tensor equals a fresh model's (LayerNorm scales are ones and
  biases zeros at init). `zero_k_bias`: VideoMAE has no k bias, so the source gets a zero one.
  """
  model = _model(0, **kw)
  want = jax.tree.map(lambda x: x + _random(*np.shape(x)), _pure(model))
  if zero_k_bias:
    for block in want["encoder"]["blocks"].values():
      bias = block["attn"]["qkv"]["bias"]
      bias[bias.shape[0] // 3: 2 * bias.shape[0] // 3] = 0
  return want, export_state_dict(want, model.cfg, parts=parts)


def _torch(state):
  """An nn.Module.state_dict(): an OrderedDict of torch tensors."""
  return collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in state.items())


def _random(*shape):
  return RNG.normal(size=shape).astype(np.float32)


def _optimizer_state(state):
  """AdamW after one step over tensors shaped like the model's (the `optimizer` entry)."""
  params = [torch.nn.Parameter(v.clone()) for v in state.values()]
  opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95))
  sum((p ** 2).sum() for p in params).backward()
  opt.step()
  return opt.state_dict()


def _save_model_checkpoint(path, model_state, **args):
  """MAE / MAE-ST / VideoMAE / ViC-MAE `misc.save_model` with a torch.amp GradScaler."""
  torch.save({"model": model_state, "optimizer": _optimizer_state(model_state), "epoch": 3,
              "scaler": torch.amp.GradScaler("cpu").state_dict(),
              "args": argparse.Namespace(model="vit", lr=1e-3, output_dir="out", **args)}, path)


def _check_encoder(model, want, *, skip=()):
  """A few encoder tensors of `model` equal those of `want` (our params)."""
  got = _pure(model)["encoder"]
  for path in [("cls_token",), ("patch_embed", "proj", "kernel"), ("patch_embed", "proj", "bias"),
               ("blocks", 0, "attn", "qkv", "kernel"), ("blocks", 0, "attn", "qkv", "bias"),
               ("blocks", 1, "mlp", "fc2", "kernel"), ("norm", "scale")]:
    if path[0] in skip:
      continue
    g, w = got, want["encoder"]
    for k in path:
      g, w = g[k], w[k]
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=str(path))


# --- MAE and ViC-MAE -------------------------------------------------------------------------


def test_mae_release_file(tmp_path):
  """mae_pretrain_vit_*.pth: {'model': encoder state dict}."""
  want, state = _source()
  torch.save({"model": _torch(state)}, tmp_path / "mae_pretrain_vit_test.pth")
  model = _model(1)
  report = load_pytorch_weights(model, tmp_path / "mae_pretrain_vit_test.pth")
  assert report.layout == "timm" and report.parts == ("encoder",) and not report.notes
  assert not report.skipped
  _check_encoder(model, want)


def test_mae_fine_tuned_global_pool(tmp_path):
  """mae_finetuned_vit_*.pth: models_vit with global_pool drops `norm` for `fc_norm` + `head`."""
  want, state = _source()
  del state["norm.weight"], state["norm.bias"]
  state.update({"pos_embed": _random(*state["pos_embed"].shape), "fc_norm.weight": _random(32),
                "fc_norm.bias": _random(32), "head.weight": _random(10, 32),
                "head.bias": _random(10)})
  torch.save({"model": _torch(state)}, tmp_path / "mae_finetuned_vit_test.pth")
  model = _model(1, learned_pos_embed=True)
  report = load_pytorch_weights(model, tmp_path / "mae_finetuned_vit_test.pth")
  assert sorted(report.extras) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
  assert any(n.startswith("norm: absent") for n in report.notes)
  _check_encoder(model, want, skip=("norm",))
  np.testing.assert_array_equal(_pure(model)["encoder"]["pos_embed"], state["pos_embed"])


@pytest.mark.parametrize("project", ["mae", "vicmae"])
def test_training_loop_checkpoint(tmp_path, project):
  """checkpoint-N.pth of the MAE / ViC-MAE training loop: model, optimizer, epoch, scaler, args."""
  parts = ("encoder", "decoder") + (("projector",) if project == "vicmae" else ())
  want, state = _source(parts)
  # ViC-MAE's pretrain.py stores args.device as a torch.device (torch allow-lists those).
  extra = {"device": torch.device("cuda")} if project == "vicmae" else {"device": "cuda"}
  _save_model_checkpoint(tmp_path / "checkpoint-3.pth", _torch(state), **extra)
  model = _model(1)
  report = load_pytorch_weights(model, tmp_path / "checkpoint-3.pth")
  assert report.parts == parts and not report.notes
  assert report.skipped == ["optimizer (dict)", "epoch=3", "scaler (dict)", "args (Namespace)"]
  _check_encoder(model, want)
  np.testing.assert_array_equal(_pure(model)["decoder"]["pred"]["kernel"],
                                want["decoder"]["pred"]["kernel"])
  if project == "vicmae":
    np.testing.assert_array_equal(_pure(model)["projector"]["norms"][0]["var"],
                                  want["projector"]["norms"][0]["var"])


# --- MAE-ST ----------------------------------------------------------------------------------


def _mae_st(state, *, decoder=False, head=False):
  """MAE-ST's models_mae / models_vit state dict: q, k, v Linears, a Conv3d tubelet embedding
  (the 2-D kernel inflated as MAE-ST's `misc.inflate` does), separable position tables."""
  out = {}
  for key, value in state.items():
    if key.endswith(("attn.qkv.weight", "attn.qkv.bias")):
      prefix, kind = key.rsplit(".qkv.", 1)
      for name, part in zip("qkv", np.split(value, 3)):
        out[f"{prefix}.{name}.{kind}"] = part
    elif key == "patch_embed.proj.weight":
      out[key] = np.repeat(value[:, :, None], T, axis=2) / T
    elif key != "pos_embed":
      out[key] = value
  d, n = state["cls_token"].shape[-1], state["pos_embed"].shape[1] - 1
  out.update(pos_embed_spatial=_random(1, n, d), pos_embed_temporal=_random(1, 8, d),
             pos_embed_class=_random(1, 1, d))
  if decoder:  # a few of each kind of MAE-ST decoder key
    out.update({"decoder_embed.weight": _random(16, d), "decoder_embed.bias": _random(16),
                "mask_token": _random(1, 1, 16), "decoder_cls_token": _random(1, 1, 16),
                "decoder_pos_embed_spatial": _random(1, n, 16),
                "decoder_pos_embed_temporal": _random(1, 8, 16),
                "decoder_pos_embed_class": _random(1, 1, 16),
                **{f"decoder_blocks.0.attn.{x}.weight": _random(16, 16) for x in "qkv"},
                "decoder_norm.weight": _random(16), "decoder_pred.weight": _random(48, 16)})
  if head:
    out.update({"head.weight": _random(400, d), "head.bias": _random(400)})
  return out


def test_mae_st_pretraining_checkpoint(tmp_path):
  want, state = _source()
  st = _mae_st(state, decoder=True)
  _save_model_checkpoint(tmp_path / "checkpoint-00003.pth", _torch(st), fp32=True)
  model = _model(1, learned_pos_embed=True)
  report = load_pytorch_weights(model, tmp_path / "checkpoint-00003.pth")
  assert report.layout == "mae_st" and report.parts == ("encoder",)
  assert "args (Namespace)" in report.skipped
  assert any("tubelet" in n for n in report.notes) and any("decoder" in n for n in report.notes)
  _check_encoder(model, want)
  table = _pure(model)["encoder"]["pos_embed"][0]
  np.testing.assert_allclose(table[0], st["pos_embed_class"][0, 0])
  np.testing.assert_allclose(
      table[1:], st["pos_embed_spatial"][0] + st["pos_embed_temporal"][0].mean(0), atol=1e-6)


def test_mae_st_release_file_fine_tuned(tmp_path):
  """MAE-ST releases keep the weights under 'model_state'; the K400 head comes back as extras."""
  want, state = _source()
  torch.save({"model_state": _torch(_mae_st(state, head=True))}, tmp_path / "mae_st_ft.pth")
  model = _model(1)
  report = load_pytorch_weights(model, tmp_path / "mae_st_ft.pth")
  assert report.layout == "mae_st" and sorted(report.extras) == ["head.bias", "head.weight"]
  _check_encoder(model, want)


def test_video_checkpoint_refuses_decoder_import():
  _, state = _source()
  with pytest.raises(ValueError, match="Only the encoder"):
    load_pytorch_weights(_model(1), _mae_st(state), parts=("encoder", "decoder"))


# --- VideoMAE --------------------------------------------------------------------------------


def _videomae(state, *, prefix="", layer_scale=None):
  """VideoMAE's modeling_pretrain / modeling_finetune state dict: a bias-free qkv Linear with
  q_bias and v_bias, a Conv3d tubelet embedding, no class token, no stored position table."""
  out = {}
  for key, value in state.items():
    if key.endswith("attn.qkv.bias"):
      q, _, v = np.split(value, 3)
      out[prefix + key.replace("qkv.bias", "q_bias")] = q
      out[prefix + key.replace("qkv.bias", "v_bias")] = v
    elif key == "patch_embed.proj.weight":
      out[prefix + key] = np.repeat(value[:, :, None], T, axis=2) / T
    elif key not in ("pos_embed", "cls_token"):
      out[prefix + key] = value
  for name, gamma in (layer_scale or {}).items():  # init_values > 0: gamma_1, gamma_2 per block
    for i in range(2):
      out[f"{prefix}blocks.{i}.{name}"] = gamma
  return out


def test_videomae_pretraining_checkpoint(tmp_path):
  want, state = _source(zero_k_bias=True)
  vm = _videomae(state, prefix="encoder.")
  vm.update({"encoder_to_decoder.weight": _random(16, 32), "mask_token": _random(1, 1, 16),
             "decoder.blocks.0.attn.qkv.weight": _random(48, 16),
             "decoder.norm.weight": _random(16),
             "decoder.head.weight": _random(2 * 48, 16)})
  _save_model_checkpoint(tmp_path / "checkpoint-799.pth", _torch(vm))
  model = _model(1)
  cls_before = np.array(model.encoder.cls_token[...])
  report = load_pytorch_weights(model, tmp_path / "checkpoint-799.pth")
  assert report.layout == "videomae" and report.parts == ("encoder",)
  assert report.skipped[-1] == "args (Namespace)"
  _check_encoder(model, want, skip=("cls_token",))
  np.testing.assert_array_equal(np.asarray(model.encoder.cls_token[...]), cls_before)
  assert any(n.startswith("cls_token") for n in report.notes)


def test_videomae_deepspeed_fine_tuned(tmp_path):
  """Fine-tuned VideoMAE as DeepSpeed saves it: {'module': ...} beside DeepSpeed's own entries;
  mean pooling (fc_norm, no final norm) and layer scale folded into the Linears it scales."""
  want, state = _source(zero_k_bias=True)
  del state["norm.weight"], state["norm.bias"]
  gamma = {"gamma_1": _random(32), "gamma_2": _random(32)}
  vm = _videomae(state, layer_scale=gamma)
  vm.update({"fc_norm.weight": _random(32), "fc_norm.bias": _random(32),
             "head.weight": _random(174, 32), "head.bias": _random(174)})
  module = _torch(vm)
  torch.save({"module": module, "buffer_names": [], "optimizer": None,
              "param_shapes": [collections.OrderedDict((k, v.shape) for k, v in module.items())],
              "sparse_tensor_module_names": set(), "skipped_steps": 0, "global_steps": 100,
              "dp_world_size": 8, "mp_world_size": 1, "ds_version": "0.5.8", "epoch": 39},
             tmp_path / "checkpoint.pth")
  model = _model(1)
  report = load_pytorch_weights(model, tmp_path / "checkpoint.pth")
  assert report.layout == "videomae" and sorted(report.extras) == [
      "fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
  assert "ds_version='0.5.8'" in report.skipped and "epoch=39" in report.skipped
  _check_encoder(model, want, skip=("cls_token", "norm", "blocks"))
  got, w = _pure(model)["encoder"]["blocks"][1], want["encoder"]["blocks"][1]
  np.testing.assert_array_equal(got["attn"]["qkv"]["kernel"], w["attn"]["qkv"]["kernel"])
  np.testing.assert_array_equal(got["attn"]["qkv"]["bias"], w["attn"]["qkv"]["bias"])
  # Layer scale multiplies each output of the Linear before it.
  np.testing.assert_allclose(got["attn"]["proj"]["kernel"],
                             w["attn"]["proj"]["kernel"] * gamma["gamma_1"], rtol=1e-6)
  np.testing.assert_allclose(got["mlp"]["fc2"]["bias"], w["mlp"]["fc2"]["bias"] * gamma["gamma_2"],
                             rtol=1e-6)


# --- timm ------------------------------------------------------------------------------------


def _timm(state):
  """timm VisionTransformer (class-token pooling): a learned position table and a head."""
  return {**state, "pos_embed": _random(*state["pos_embed"].shape),
          "head.weight": _random(10, 32), "head.bias": _random(10)}


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.safetensors"])
def test_timm_flat_state_dict(tmp_path, name):
  """timm's clean_checkpoint / Hub files: the flat state dict, torch or safetensors."""
  want, state = _source()
  tm = _timm(state)
  if name.endswith(".safetensors"):
    from safetensors.torch import save_file
    save_file(_torch(tm), tmp_path / name)
  else:
    torch.save(_torch(tm), tmp_path / name)
  model = _model(1, learned_pos_embed=True)
  report = load_pytorch_weights(model, tmp_path / name)
  assert report.layout == "timm" and sorted(report.extras) == ["head.bias", "head.weight"]
  _check_encoder(model, want)
  np.testing.assert_array_equal(_pure(model)["encoder"]["pos_embed"], tm["pos_embed"])


def test_timm_training_checkpoint(tmp_path):
  """timm's CheckpointSaver: state_dict beside its EMA copy, optimizer, amp_scaler, args."""
  want, state = _source()
  sd = _torch(_timm(state))
  ema = collections.OrderedDict((k, v + 1) for k, v in sd.items())
  torch.save({"epoch": 9, "arch": "vit_test", "optimizer": _optimizer_state(sd), "version": 2,
              "args": argparse.Namespace(model="vit_test", device="cuda:0", input_size=None),
              "amp_scaler": torch.amp.GradScaler("cpu").state_dict(), "state_dict": sd,
              "state_dict_ema": ema, "metric": 71.5}, tmp_path / "last.pth.tar")
  model = _model(1)
  report = load_pytorch_weights(model, tmp_path / "last.pth.tar")
  assert "state_dict_ema (OrderedDict)" in report.skipped and "metric=71.5" in report.skipped
  _check_encoder(model, want)  # the weights, not their EMA copy


# --- Hugging Face ----------------------------------------------------------------------------


def _hf_model():
  transformers = pytest.importorskip("transformers")
  config = transformers.ViTMAEConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
      image_size=16, patch_size=4, decoder_hidden_size=16, decoder_num_hidden_layers=1,
      decoder_num_attention_heads=2, decoder_intermediate_size=64)
  torch.manual_seed(0)
  return transformers.ViTMAEForPreTraining(config)


def test_hugging_face_files(tmp_path):
  """save_pretrained's model.safetensors, and a transformers 4 pytorch_model.bin (a torch.save of
  the state dict with the Hub's key names)."""
  hf = _hf_model()
  hf.save_pretrained(tmp_path)
  from safetensors.torch import load_file
  hub = load_file(tmp_path / "model.safetensors")
  # transformers 5 writes decoder layers as "decoder_encoder.layer"; the Hub says "decoder_layers".
  torch.save(collections.OrderedDict(
      (k.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers."), v)
      for k, v in hub.items()), tmp_path / "pytorch_model.bin")
  q = hf.vit.layers[1].attention.q_proj.weight.detach().numpy()
  pred = hf.decoder.decoder_pred.weight.detach().numpy()
  for name in ("model.safetensors", "pytorch_model.bin"):
    model = _model(1)
    report = load_pytorch_weights(model, tmp_path / name)
    assert report.layout == "hf_legacy" and report.parts == ("encoder", "decoder"), name
    np.testing.assert_array_equal(np.asarray(model.encoder.blocks[1].attn.qkv.kernel[...])[:, :32],
                                  q.T)
    np.testing.assert_array_equal(np.asarray(model.decoder.pred.kernel[...]), pred.T)


# --- objects from torch.load -----------------------------------------------------------------


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"model": sd},
    lambda sd: {"state_dict": collections.OrderedDict((f"module.{k}", v) for k, v in sd.items())},
    lambda sd: {"model": {"module": sd}, "epoch": 1},
    lambda sd: {k: v.numpy() for k, v in sd.items()},
], ids=["flat", "model", "state_dict+module.", "nested", "numpy"])
def test_load_pytorch_weights_takes_what_torch_load_returns(wrap):
  want, state = _source()
  model = _model(1)
  report = load_pytorch_weights(model, wrap(_torch(state)))
  assert report.parts == ("encoder",)
  _check_encoder(model, want)


def test_training_checkpoint_object(tmp_path):
  """What torch.load(weights_only=False) returns for a training checkpoint, as is."""
  want, state = _source(("encoder", "decoder"))
  _save_model_checkpoint(tmp_path / "ckpt.pth", _torch(state))
  obj = torch.load(tmp_path / "ckpt.pth", weights_only=False)
  model = _model(1)
  report = load_pytorch_weights(model, obj)
  assert report.skipped == ["optimizer (dict)", "epoch=3", "scaler (dict)", "args (Namespace)"]
  _check_encoder(model, want)


def test_training_checkpoint_in_a_bucket(tmp_path, gcs):
  """gs:// files take the same path (read whole through vicmae_jax.fs, then torch.load)."""
  from vicmae_jax import fs
  want, state = _source(("encoder", "decoder"))
  _save_model_checkpoint(tmp_path / "checkpoint-3.pth", _torch(state))
  url = gcs.url("convert", "checkpoint-3.pth")
  fs.copy_file(str(tmp_path / "checkpoint-3.pth"), url)
  model = _model(1)
  report = load_pytorch_weights(model, url)
  assert report.skipped[-1] == "args (Namespace)"
  _check_encoder(model, want)


def test_checkpoint_without_tensors_says_what_it_holds():
  with pytest.raises(ValueError, match=r"holds no tensors \(entries: optimizer \(dict\), epoch=3"):
    read_state_dict({"optimizer": {"state": {}}, "epoch": 3})


# --- safety ----------------------------------------------------------------------------------


class _Evil:
  def __reduce__(self):
    return (print, ("unpickled!",))


@pytest.mark.parametrize("payload", [
    lambda sd: {"model": sd, "args": argparse.Namespace(lr=1e-3, hook=_Evil())},
    lambda sd: {"model": sd, "scaler": _Evil()},
    lambda sd: {"model": sd, "args": argparse.Namespace(output_dir=pathlib.Path("out"))},
], ids=["inside-namespace", "beside-model", "not-allow-listed"])
def test_allow_list_opens_nothing_else(tmp_path, payload, capsys):
  """A Namespace is accepted, never what it holds; globals beyond the list stay refused."""
  _, state = _source()
  torch.save(payload(_torch(state)), tmp_path / "bad.pth")
  with pytest.raises(ValueError, match="weights_only=True") as err:
    load_state_dict(tmp_path / "bad.pth")
  assert "Unsupported global" in str(err.value) and "argparse.Namespace" in str(err.value)
  assert "unpickled!" not in capsys.readouterr().out
  # Allowed only for our own loads: the process-wide list is not left open.
  assert argparse.Namespace not in torch.serialization.get_safe_globals()
  assert SAFE_GLOBALS == (argparse.Namespace,)

"""The conversion command line on real files: .pth -> Orbax params -> safetensors."""
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from vicmae_jax import params_io
from vicmae_jax.convert import export_state_dict, load_state_dict
from vicmae_jax.models import ViCMAE, model_config


def _run(*args, cwd=None):
  return subprocess.run([sys.executable, "-m", "vicmae_jax.convert", *args], check=True,
                        capture_output=True, text=True, timeout=300, cwd=cwd)


def test_to_jax_then_to_torch_round_trip(tmp_path):
  torch = pytest.importorskip("torch")
  cfg = model_config("S/16", image_size=32, contrastive_mode="shared_projector")
  model = ViCMAE(cfg, rngs=nnx.Rngs(0))
  pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
  state = export_state_dict(pure, cfg, parts=("encoder", "decoder", "projector"))
  torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}}, tmp_path / "in.pth")

  # Relative paths, as a user types them (Orbax itself only takes absolute ones).
  out = _run("to-jax", "--src", "in.pth", "--variant", "S/16", "--image-size", "32", "--out", "jax",
             cwd=tmp_path)
  assert "('encoder', 'decoder', 'projector')" in out.stdout
  params, loaded_cfg = params_io.load_params(str(tmp_path / "jax"))
  assert loaded_cfg == cfg
  jax.tree.map(np.testing.assert_array_equal, params["encoder"], pure["encoder"])

  _run("to-torch", "--src", "jax", "--out", "enc.safetensors", cwd=tmp_path)
  back = load_state_dict(tmp_path / "enc.safetensors")
  enc_keys = [k for k in state if not k.startswith(("decoder", "mask_token", "projector"))]
  assert sorted(back) == sorted(enc_keys)
  for key in enc_keys:
    np.testing.assert_array_equal(back[key], state[key])

  listing = _run("inspect", "--src", str(tmp_path / "enc.safetensors")).stdout
  assert "layout timm" in listing and "blocks.11.attn.qkv.weight (1152, 384)" in listing

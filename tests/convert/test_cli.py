"""The conversion command line on real files: .pth -> Orbax params -> safetensors."""
import argparse
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from vicmae_jax import params_io
from vicmae_jax.convert import export_state_dict, load_state_dict, save_safetensors
from vicmae_jax.convert.__main__ import _parser, main
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
  out = _run("to-jax", "--src", "in.pth", "--variant", "S/16", "--image_size", "32", "--out", "jax",
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


def test_inspect_into_a_closed_pipe_exits_quietly(tmp_path):
  """`inspect | head -1`: the reader leaves early; no BrokenPipeError traceback, exit status 0."""
  # Far more output than a pipe buffers (64 KiB), so writes continue after head has gone.
  save_safetensors({f"blocks.{i}.a_long_tensor_name.weight": np.zeros(2, np.float32)
                    for i in range(4000)}, tmp_path / "many.safetensors")
  cmd = (f"set -o pipefail; {sys.executable} -m vicmae_jax.convert inspect "
         f"--src {tmp_path / 'many.safetensors'} | head -1")
  run = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr
  assert run.stdout.startswith("4000 tensors") and run.stdout.count("\n") == 1
  assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr


def test_flags_are_snake_case_and_kebab_spellings_still_work():
  snake = ["to-jax", "--src", "a.pth", "--out", "o", "--variant", "S/16", "--image_size", "32",
           "--contrastive_mode", "ema_target", "--learned_pos_embed"]
  kebab = [a.replace("_", "-") if a.startswith("--") else a for a in snake]
  assert vars(_parser().parse_args(snake)) == vars(_parser().parse_args(kebab))
  args = _parser().parse_args(snake)
  assert (args.image_size, args.contrastive_mode, args.learned_pos_embed) == (
      32, "ema_target", True)
  defaults = _parser().parse_args(snake[:7])
  assert (defaults.image_size, defaults.learned_pos_embed) == (224, False)
  to_jax = _parser()._subparsers._group_actions[0].choices["to-jax"]
  help_text = to_jax.format_help()
  assert "--image_size" in help_text and "--image-size" not in help_text


def test_to_jax_lists_what_a_training_checkpoint_held_besides_weights(tmp_path, capsys):
  torch = pytest.importorskip("torch")
  cfg = model_config("test", image_size=16)
  pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(ViCMAE(cfg, rngs=nnx.Rngs(0)))))
  state = export_state_dict(pure, cfg, parts=("encoder", "decoder"))
  torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}, "optimizer": {},
              "epoch": 7, "scaler": torch.amp.GradScaler("cpu").state_dict(),
              "args": argparse.Namespace(lr=1e-3)}, tmp_path / "checkpoint-7.pth")
  assert main(["to-jax", "--src", str(tmp_path / "checkpoint-7.pth"), "--variant", "test",
               "--image-size", "16", "--out", str(tmp_path / "jax")]) == 0
  out = capsys.readouterr().out
  assert "skipped (not weights): optimizer (dict), epoch=7, scaler (dict), args (Namespace)" in out
  params, _ = params_io.load_params(str(tmp_path / "jax"))
  jax.tree.map(np.testing.assert_array_equal, params["encoder"], pure["encoder"])

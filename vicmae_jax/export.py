"""Export a pretraining run's encoder for downstream use.

  python -m vicmae_jax.export --workdir=WORKDIR --out=DIR [--step=N] [--weights=online|target]
      [--layouts=timm,hf]

Writes DIR/encoder (Orbax params + model_config.json, read by `params_io.load_params`, the
fine-tuning initialisers and `python -m vicmae_jax.convert to-torch`) and
DIR/encoder_<layout>.safetensors in PyTorch key layouts (timm / MAE, Hugging Face).
"""
from __future__ import annotations

import logging
import os

import jax
import ml_collections
import numpy as np
from absl import app, flags
from etils import epath
from flax import nnx

from vicmae_jax import checkpointing, config_lib, params_io, sharding
from vicmae_jax.convert import export_state_dict, save_safetensors


def restore_pretraining(workdir: str, step: int | None = None):
  """(state on this host's first device, resolved ModelConfig, ConfigDict) of a pretraining run.

  The config stored in the checkpoint rebuilds the exact state structure (optimizer included),
  so any run can be restored without its config file.
  """
  from vicmae_jax import train
  from vicmae_jax.train_state import create_train_state
  ckpt = checkpointing.Checkpointer(str(epath.Path(workdir) / "checkpoints"), every_steps=1)
  steps = ckpt.all_steps()
  if not steps:
    raise FileNotFoundError(f"No checkpoint under {workdir}/checkpoints.")
  step = steps[-1] if step is None else step
  config = ml_collections.ConfigDict(ckpt.restore_config(step))
  model_cfg = config_lib.model_config(config)
  sched = config_lib.schedule(config, None)
  tx, _ = train.make_optimizer(config, sched)
  mesh = sharding.make_mesh(data=1, fsdp=1, devices=jax.local_devices()[:1])
  abstract = jax.eval_shape(
      lambda: create_train_state(model_cfg, tx, config.seed, mesh)[1])
  shardings = sharding.tree_shardings(abstract, mesh)
  state = ckpt._restore(step, train.abstract_state(abstract, shardings), None)
  ckpt.close()
  return state, model_cfg, config, step


def export_encoder(workdir: str, out: str, *, step: int | None = None, weights: str = "online",
                   layouts: tuple[str, ...] = ("timm",)) -> dict[str, str]:
  """Writes the encoder of `workdir`'s newest (or given) checkpoint; returns the paths written."""
  state, model_cfg, _, step = restore_pretraining(workdir, step)
  if weights == "target":
    if model_cfg.contrastive_mode != "ema_target":
      raise ValueError("weights=target needs an ema_target run.")
    encoder = nnx.to_pure_dict(state.target)["target"]["encoder"]
  else:
    encoder = nnx.to_pure_dict(state.params)["encoder"]
  params = {"encoder": jax.tree.map(np.asarray, encoder)}
  out_dir = epath.Path(out)
  out_dir.mkdir(parents=True, exist_ok=True)
  written = {"orbax": os.fspath(out_dir / "encoder")}
  params_io.save_params(written["orbax"], params, model_cfg)
  for layout in layouts:
    path = os.fspath(out_dir / f"encoder_{layout}.safetensors")
    save_safetensors(export_state_dict(params, model_cfg, parts=("encoder",), layout=layout), path,
                     metadata={"variant": model_cfg.variant, "step": str(step), "weights": weights})
    written[layout] = path
  logging.info("exported the %s encoder of step %d: %s", weights, step, written)
  return written


FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Pretraining workdir (local or gs://).")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
flags.DEFINE_enum("weights", "online", ["online", "target"], "Online encoder or its EMA target.")
flags.DEFINE_list("layouts", ["timm"], "PyTorch key layouts to write: timm, hf, hf_legacy.")


def main(argv) -> None:
  del argv
  written = export_encoder(FLAGS.workdir, FLAGS.out, step=FLAGS.step, weights=FLAGS.weights,
                           layouts=tuple(FLAGS.layouts))
  for kind, path in written.items():
    print(f"{kind}: {path}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main)

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

import ml_collections
from absl import app, flags
from etils import epath

from vicmae_jax import checkpointing, config_lib, params_io, paths
from vicmae_jax.convert import export_state_dict, save_safetensors


def export_encoder(workdir: str, out: str, *, step: int | None = None, weights: str = "online",
                   layouts: tuple[str, ...] = ("timm",)) -> dict[str, str]:
  """Writes the encoder of `workdir`'s newest (or given) checkpoint; returns the paths written.

  Only the encoder is read from the checkpoint (no optimizer state); the run's own saved config
  gives the architecture, so no config file is needed.
  """
  keys = {"online": ("params", "encoder"), "target": ("target", "target", "encoder")}[weights]
  try:
    encoder, config, step = checkpointing.read_state_subtree(workdir, keys, step)
  except RuntimeError as e:
    if weights == "target":
      raise ValueError(f"weights=target needs an ema_target run ({e}).") from e
    raise
  model_cfg = config_lib.model_config(ml_collections.ConfigDict(config))
  params = {"encoder": encoder}
  out_dir = epath.Path(paths.resolve(out))
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

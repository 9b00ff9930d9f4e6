"""PyTorch <-> vicmae_jax weight conversion (timm/MAE/ViC-MAE and Hugging Face key layouts)."""
from __future__ import annotations

import os

import jax
import numpy as np
from flax import nnx

from vicmae_jax.convert.layouts import LAYOUTS, detect_layout
from vicmae_jax.convert.torch_io import load_state_dict, save_safetensors
from vicmae_jax.convert.weights import (CheckpointMismatchError, ImportReport, export_state_dict,
                                        import_state_dict)


def load_pytorch_weights(model: nnx.Module, source: str | os.PathLike | dict, *,
                         parts: tuple[str, ...] | None = None,
                         layout: str | None = None) -> ImportReport:
  """Loads a torch checkpoint file (or state dict) into `model` in place.

  A model with an EMA target gets its target set to the imported online weights, as at the start
  of training.
  """
  state = source if isinstance(source, dict) else load_state_dict(source)
  pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
  report = import_state_dict(state, pure, model.cfg, parts=parts, layout=layout)
  if "target" in pure:
    for part in ("encoder", "projector"):
      if part in report.parts:
        pure["target"][part] = jax.tree.map(np.copy, pure[part])
  model_state = nnx.state(model)
  # Device arrays: numpy leaves would be read-only and BatchNorm updates its statistics in place.
  nnx.replace_by_pure_dict(model_state, jax.tree.map(jax.numpy.asarray, pure))
  nnx.update(model, model_state)
  return report


__all__ = ["LAYOUTS", "detect_layout", "load_state_dict", "save_safetensors",
           "CheckpointMismatchError", "ImportReport", "export_state_dict", "import_state_dict",
           "load_pytorch_weights"]

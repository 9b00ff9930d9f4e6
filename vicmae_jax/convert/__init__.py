"""PyTorch <-> vicmae_jax weight conversion (timm/MAE/ViC-MAE and Hugging Face key layouts)."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx

from vicmae_jax.convert.layouts import IMPORT_LAYOUTS, LAYOUTS, detect_layout
from vicmae_jax.convert.torch_io import (SAFE_GLOBALS, load_state_dict, read_state_dict,
                                         save_safetensors)
from vicmae_jax.convert.weights import (CheckpointMismatchError, ImportReport, export_state_dict,
                                        import_state_dict)


def load_pytorch_weights(model: nnx.Module, source: str | os.PathLike | Mapping, *,
                         parts: tuple[str, ...] | None = None,
                         layout: str | None = None) -> ImportReport:
  """Loads a torch checkpoint into `model` in place.

  `source` is a file (`.pth`/`.pt`/`.bin`/`.safetensors`, local or gs://) or whatever `torch.load`
  returned: a state dict of torch tensors or numpy arrays, or a training checkpoint around one
  ({'model': ...}, {'module': ...}, {'state_dict': ...}), unwrapped as files are
  (`torch_io.unwrap`). What is not weights is listed in `report.skipped`. A model with an EMA
  target gets its target set to the imported online weights, as at the start of training.
  """
  state, skipped = read_state_dict(source)
  if skipped:
    logging.info("Checkpoint entries that are not weights, skipped: %s", ", ".join(skipped))
  pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
  report = import_state_dict(state, pure, model.cfg, parts=parts, layout=layout)
  report.skipped = skipped
  if "target" in pure:
    for part in ("encoder", "projector"):
      if part in report.parts:
        pure["target"][part] = jax.tree.map(np.copy, pure[part])
  model_state = nnx.state(model)
  # Device arrays: numpy leaves would be read-only and BatchNorm updates its statistics in place.
  nnx.replace_by_pure_dict(model_state, jax.tree.map(jax.numpy.asarray, pure))
  nnx.update(model, model_state)
  return report


__all__ = ["IMPORT_LAYOUTS", "LAYOUTS", "SAFE_GLOBALS", "detect_layout", "load_state_dict",
           "read_state_dict", "save_safetensors",
           "CheckpointMismatchError", "ImportReport", "export_state_dict", "import_state_dict",
           "load_pytorch_weights"]

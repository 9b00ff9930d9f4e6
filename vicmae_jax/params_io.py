"""A standalone params checkpoint: Orbax params + the model config as JSON beside them.

This is the exchange format between the converters, the trainer's encoder export and the
downstream evaluators; the trainer's own checkpoints are managed in `checkpointing`.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from vicmae_jax import paths
from vicmae_jax.models.config import ModelConfig

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def save_params(directory: str, params: dict, cfg: ModelConfig) -> None:
  """Writes `params` (a pure dict of arrays) and `cfg` under `directory` (local path or gs://)."""
  from etils import epath
  root = epath.Path(paths.resolve(directory))  # Orbax needs absolute paths
  root.mkdir(parents=True, exist_ok=True)
  params = jax.tree.map(np.asarray, params)
  # Orbax wants string keys; list indices of nnx.List become "0", "1", ...
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.fspath(root / PARAMS_DIR), _stringify(params), force=True)
  (root / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=2))


def load_params(directory: str) -> tuple[dict, ModelConfig]:
  """Reads what `save_params` wrote: (pure dict of numpy arrays with int list keys, config)."""
  from etils import epath
  root = epath.Path(paths.resolve(directory))  # Orbax needs absolute paths
  if not (root / CONFIG_FILE).exists():
    raise FileNotFoundError(f"{directory} has no {CONFIG_FILE}; not a vicmae_jax params export.")
  cfg = ModelConfig(**json.loads((root / CONFIG_FILE).read_text())).resolve()
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(os.fspath(root / PARAMS_DIR))
  return _destringify(jax.tree.map(np.asarray, params)), cfg


def _stringify(tree):
  if isinstance(tree, dict):
    return {str(k): _stringify(v) for k, v in tree.items()}
  return tree


def _destringify(tree):
  if isinstance(tree, dict):
    return {(int(k) if isinstance(k, str) and k.isdigit() else k): _destringify(v)
            for k, v in tree.items()}
  return tree

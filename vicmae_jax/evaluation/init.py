"""Initialise a classifier's encoder from one of three sources and report what was loaded.

  workdir:  a pretraining workdir; the newest readable checkpoint's `state.params['encoder']`.
  export:   a `params_io` directory (converter output or an exported encoder).
  pytorch:  a torch / safetensors checkpoint, through `vicmae_jax.convert` (timm, HF, MAE-ST or
            VideoMAE layout; training checkpoints too).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from vicmae_jax import checkpointing, config_lib, params_io
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.models.posembed import resize_pos_embed

SOURCES = ("none", "workdir", "export", "pytorch")


@dataclasses.dataclass
class InitReport:
  source: str
  path: str
  loaded: list[str]           # encoder keys overwritten ("blocks/0/attn/qkv/kernel", ...)
  kept: list[str]             # encoder keys left at their fresh init (e.g. pos_embed)
  step: int | None = None     # checkpoint step for workdir sources

  def summary(self) -> str:
    return (f"init from {self.source} {self.path}"
            + (f" (step {self.step})" if self.step is not None else "")
            + f": {len(self.loaded)} encoder arrays loaded, {len(self.kept)} kept "
            f"({', '.join(self.kept) or 'none'})")


def _flat(tree: dict, prefix: tuple = ()) -> dict[tuple, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def copy_encoder(model: nnx.Module, encoder_params: dict, source: str, path: str,
                 step: int | None = None) -> InitReport:
  """Writes a pure encoder dict into `model.encoder`; a position table of another grid is resized.

  Raises ValueError on shape mismatches or on keys the model does not have.
  """
  target = nnx.to_pure_dict(nnx.state(model.encoder, nnx.Param))
  flat_t, flat_s = _flat(target), _flat(checkpointing.plain_tree(encoder_params))
  problems, loaded = [], []
  for key, value in flat_s.items():
    name = "/".join(map(str, key))
    if key not in flat_t:
      problems.append(f"{name}: not in the model")
      continue
    value = np.asarray(value, np.float32)
    want = np.shape(flat_t[key])
    if key == ("pos_embed",) and value.shape != want:
      value = resize_pos_embed(value.reshape(-1, value.shape[-1]), model.cfg.grid)[None]
    if value.shape != want:
      problems.append(f"{name}: source {value.shape} vs model {want}")
      continue
    flat_t[key] = value
    loaded.append(name)
  if problems:
    raise ValueError(f"Encoder weights from {path} do not fit:\n  " + "\n  ".join(problems))
  new = {}
  for key, value in flat_t.items():
    node = new
    for k in key[:-1]:
      node = node.setdefault(k, {})
    node[key[-1]] = value
  state = nnx.state(model.encoder, nnx.Param)
  nnx.replace_by_pure_dict(state, new)
  nnx.update(model.encoder, state)
  kept = sorted("/".join(map(str, k)) for k in flat_t if k not in flat_s)
  report = InitReport(source, path, sorted(loaded), kept, step)
  logging.info(report.summary())
  return report


def read_workdir_encoder(workdir: str) -> tuple[dict, ModelConfig, int]:
  """(pure encoder params, model config, step) from the newest readable pretraining checkpoint."""
  encoder, config, step = checkpointing.read_state_subtree(workdir, ("params", "encoder"))
  return encoder, config_lib.model_config(ml_collections.ConfigDict(config)), step


def read_export_encoder(directory: str) -> tuple[dict, ModelConfig]:
  """(pure encoder params, config) from a params_io export (whole model or encoder only)."""
  params, cfg = params_io.load_params(directory)
  return (params["encoder"] if "encoder" in params else params), cfg


def source_model_config(source: str, path: str) -> ModelConfig | None:
  """The architecture stored with a workdir / export source (None for torch files)."""
  if source == "workdir":
    return read_workdir_encoder(path)[1]
  if source == "export":
    return read_export_encoder(path)[1]
  return None


def init_encoder(model: nnx.Module, source: str, path: str = "",
                 layout: str | None = None) -> InitReport:
  """Loads encoder weights into `model` (a Classifier) in place from `source` at `path`."""
  if source == "none":
    return InitReport("none", "", [], [], None)
  if source == "workdir":
    enc, _, step = read_workdir_encoder(path)
    return copy_encoder(model, enc, "workdir", path, step)
  if source == "export":
    enc, _ = read_export_encoder(path)
    return copy_encoder(model, enc, "export", path)
  if source == "pytorch":
    from vicmae_jax.convert import load_pytorch_weights
    before = _flat(jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model.encoder, nnx.Param))))
    rep = load_pytorch_weights(model, os.fspath(path), parts=("encoder",), layout=layout)
    after = _flat(nnx.to_pure_dict(nnx.state(model.encoder, nnx.Param)))
    # The converter writes every encoder entry it maps; list them by what it consumed.
    loaded = sorted("/".join(map(str, k)) for k in after
                    if not np.array_equal(before[k], np.asarray(after[k])) or k != ("pos_embed",))
    report = InitReport("pytorch", os.fspath(path), loaded, [], None)
    for note in rep.notes:
      logging.warning(note)
    logging.info(report.summary())
    return report
  raise ValueError(f"init source must be one of {SOURCES}, got {source!r}")

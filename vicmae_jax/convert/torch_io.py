"""Reading and writing PyTorch state dicts as numpy, safely.

`.pth` files are read with `torch.load(weights_only=True)`: tensors, plain containers and the
classes in `SAFE_GLOBALS`, never arbitrary pickled objects, so no code in a file ever runs.
`.safetensors` files need no torch at all. Training checkpoints hold more than weights (optimizer,
loss scaler, args, epoch, EMA copies): the state dict is found inside them (`unwrap`, the one place
for files and in-memory objects alike) and everything else is listed as skipped.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from vicmae_jax import fs, paths

# Globals a checkpoint may name beyond torch's own allow-list (tensors, OrderedDict, set,
# torch.Size, torch.device, ... which covers the optimizer and AMP GradScaler state dicts: plain
# floats, ints, tuples and tensors). Each entry must be inert when unpickled:
#   argparse.Namespace: the `args` of MAE / MAE-ST / VideoMAE / ViC-MAE `save_model` and timm's
#   CheckpointSaver. Unpickling makes an empty object and fills its __dict__; it has no
#   __setstate__ or __reduce__ of its own, and its values pass the same weights_only checks.
SAFE_GLOBALS = (argparse.Namespace,)

# Where training loops keep the weights, in the order they are looked for: `model` (MAE, MAE-ST,
# VideoMAE and ViC-MAE `save_model`), `state_dict` (timm's CheckpointSaver), `model_state` (MAE-ST
# releases), `module` (DeepSpeed, e.g. VideoMAE fine-tuning). EMA copies beside them (timm's
# `state_dict_ema`, VideoMAE's `model_ema`) are skipped like the optimizer.
_WRAPPERS = ("model", "state_dict", "model_state", "module")


def _is_array(value: Any) -> bool:
  return hasattr(value, "shape") and hasattr(value, "dtype")


def _to_numpy(value: Any) -> np.ndarray:
  if isinstance(value, (np.ndarray, np.generic)):
    return np.asarray(value)
  import torch  # only reached for torch tensors
  if value.dtype in (torch.bfloat16, torch.float16):
    value = value.float()
  return value.detach().cpu().numpy()


def _describe(key: str, value: Any) -> str:
  """'epoch=3' for scalars, 'optimizer (dict)' for anything bigger."""
  if value is None or isinstance(value, (bool, int, float)):
    return f"{key}={value}"
  if isinstance(value, str) and len(value) <= 40:
    return f"{key}={value!r}"
  return f"{key} ({type(value).__name__})"


def _rename(key: str) -> str:
  """Strips wrapper prefixes and maps key spellings onto the layouts' names."""
  for prefix in ("module.", "_orig_mod."):  # DDP / DeepSpeed, torch.compile
    if key.startswith(prefix):
      key = key[len(prefix):]
  # Hugging Face ViTMAEModel (no pretraining head) has no "vit." prefix.
  if key.startswith(("embeddings.", "layers.", "encoder.layer.", "layernorm.")):
    key = "vit." + key
  # transformers 5 writes decoder layers back as "decoder_encoder.layer" (its encoder.layer ->
  # layers renaming run in reverse); the Hub's files say "decoder_layers".
  return key.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers.")


def unwrap(obj: Any) -> tuple[dict[str, np.ndarray], list[str]]:
  """The state dict inside whatever `torch.load` (or safetensors) returned, as numpy.

  Accepts a flat state dict (torch tensors or numpy arrays) or training checkpoints around one,
  nested at any depth ({'model': ...}, {'module': ...}, {'state_dict': ...}, {'model_state': ...}).

  Returns:
    ({key: numpy array} with DDP / torch.compile prefixes stripped, descriptions of the entries
    that are not weights: 'optimizer (dict)', 'epoch=3', 'args (Namespace)', ...).
  """
  skipped, where = [], ""
  while isinstance(obj, Mapping):
    inner = next((w for w in _WRAPPERS if isinstance(obj.get(w), Mapping)), None)
    if inner is None:
      break
    skipped += [_describe(where + str(k), v) for k, v in obj.items() if k != inner]
    obj, where = obj[inner], f"{where}{inner}/"
  if not isinstance(obj, Mapping):
    raise ValueError(f"holds a {type(obj).__name__}, not a state dict")
  state = {}
  for key, value in obj.items():
    if _is_array(value) and isinstance(key, str):
      state[_rename(key)] = _to_numpy(value)
    else:
      skipped.append(_describe(where + str(key), value))  # e.g. an epoch counter among the weights
  if not state:
    raise ValueError(f"holds no tensors (entries: {', '.join(skipped[:12]) or 'none'})")
  return state, skipped


def _refusal(e: Exception) -> str:
  """torch's reason without its advice to retry with weights_only=False."""
  match = re.search(r"WeightsUnpickler error: (.*?)(\.\s|$)", str(e), re.S)
  return match.group(1) if match else f"{type(e).__name__}: {e}"


def read_file(path: str | os.PathLike) -> Any:
  """What a `.pth`/`.pt`/`.bin`/`.safetensors` file (local or gs://...) holds, unpickled safely."""
  path = os.fspath(path)
  if not fs.exists(path):
    raise FileNotFoundError(f"No checkpoint at {path}.")
  # Weights in object storage are read whole into memory (both loaders want the full file).
  source = io.BytesIO(fs.read_bytes(path)) if fs.is_url(path) else path
  if path.endswith(".safetensors"):
    from safetensors.numpy import load, load_file
    return load(source.getvalue()) if fs.is_url(path) else load_file(path)
  import torch
  try:
    with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
      return torch.load(source, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:  # what weights_only raises on anything not allow-listed
    allowed = ", ".join(f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS)
    raise ValueError(
        f"{path} was refused by torch.load(weights_only=True): {_refusal(e)}. Tensors, plain "
        f"containers and {allowed} are accepted; other pickled objects are never unpickled (they "
        "could run code). If you trust the file, save its state dict alone: "
        "torch.save(torch.load(f, weights_only=False)['model'], 'weights.pth').") from e


def read_state_dict(source: str | os.PathLike | Mapping) -> tuple[dict[str, np.ndarray], list[str]]:
  """(state dict as numpy, skipped entries) from a checkpoint file or an object `torch.load`
  returned; see `unwrap`."""
  raw = source if isinstance(source, Mapping) else read_file(source)
  try:
    return unwrap(raw)
  except ValueError as e:  # unwrap's messages start with a verb; name the checkpoint
    name = "The checkpoint" if isinstance(source, Mapping) else os.fspath(source)
    raise ValueError(f"{name} {e}.") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Loads a `.pth`/`.pt`/`.bin` or `.safetensors` file into {key: numpy array}."""
  return read_state_dict(path)[0]


def save_safetensors(tensors: dict[str, np.ndarray], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> None:
  """Writes float32 contiguous tensors; format=pt lets timm and transformers load the file."""
  from safetensors.numpy import save_file
  arrays = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()}
  save_file(arrays, os.fspath(path), metadata={"format": "pt", **(metadata or {})})
  # safetensors writes through a private temporary file (mode 0600); exported weights are meant
  # to be shared like any other file the user writes, so they get the umask's mode.
  if not paths.is_url(path):
    os.chmod(path, 0o666 & ~paths.umask())

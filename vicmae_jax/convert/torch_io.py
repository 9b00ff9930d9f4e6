"""Reading and writing PyTorch state dicts as numpy, safely.

`.pth` files are read with `torch.load(weights_only=True)`: tensors and plain containers only,
never arbitrary pickled objects. `.safetensors` files need no torch at all.
"""
from __future__ import annotations

import io
import os

import numpy as np

from vicmae_jax import fs, paths

_WRAPPERS = ("model", "state_dict", "model_state", "module")


def _to_numpy(value) -> np.ndarray:
  if isinstance(value, np.ndarray):
    return value
  import torch  # only reached for .pth contents
  if value.dtype in (torch.bfloat16, torch.float16):
    value = value.float()
  return value.detach().cpu().numpy()


def normalize_keys(state: dict) -> dict[str, np.ndarray]:
  """Unwraps {'model': ...} style containers and strips DDP / torch.compile prefixes."""
  for wrapper in _WRAPPERS:
    if wrapper in state and isinstance(state[wrapper], dict):
      state = state[wrapper]
      break
  out = {}
  for key, value in state.items():
    if not hasattr(value, "shape"):
      continue  # e.g. an epoch counter stored beside the weights
    for prefix in ("module.", "_orig_mod."):
      if key.startswith(prefix):
        key = key[len(prefix):]
    # Hugging Face ViTMAEModel (no pretraining head) has no "vit." prefix.
    if key.startswith(("embeddings.", "layers.", "encoder.layer.", "layernorm.")):
      key = "vit." + key
    out[key] = _to_numpy(value)
  return out


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Loads a `.pth`/`.pt`/`.bin` or `.safetensors` file into {key: numpy array}."""
  path = os.fspath(path)
  if not fs.exists(path):
    raise FileNotFoundError(f"No checkpoint at {path}.")
  # Weights in object storage are read whole into memory (both loaders want the full file).
  source = io.BytesIO(fs.read_bytes(path)) if fs.is_url(path) else path
  if path.endswith(".safetensors"):
    from safetensors.numpy import load, load_file
    return normalize_keys(load(source.getvalue()) if fs.is_url(path) else load_file(path))
  import torch
  try:
    raw = torch.load(source, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises UnpicklingError subclasses on unsafe content
    raise ValueError(
        f"{path} could not be loaded with weights_only=True ({type(e).__name__}: {e}). Only plain "
        "tensor checkpoints are accepted; arbitrary pickled objects are never unpickled.") from e
  if not isinstance(raw, dict):
    raise ValueError(f"{path} holds a {type(raw).__name__}, not a state dict.")
  return normalize_keys(raw)


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

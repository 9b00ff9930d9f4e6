"""The one table that maps our parameter paths to PyTorch state-dict keys
(docs/decisions.md#pytorch-checkpoint-layout).

Layouts:
  * `timm`: the released ViC-MAE / MAE checkpoints and timm's ViT (`blocks.{i}.attn.qkv`, ...).
  * `hf`: Hugging Face transformers >= 5 ViTMAE (`vit.layers.{i}.attention.q_proj`, ...).
  * `hf_legacy`: Hugging Face transformers 4 ViTMAE, as stored on the Hub
    (`vit.encoder.layer.{i}.attention.attention.query`, ...).
  * `mae_st`, `videomae` (import only): video ViTs, rewritten into `timm` by `convert/video.py`.

An `Entry` ties one leaf of our pure-dict params to one or more torch keys and a transform; both
directions (import and export) read the same entries, so a round trip is exact by construction.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from vicmae_jax.models.config import ModelConfig

LAYOUTS = ("timm", "hf", "hf_legacy")  # what we import and export
IMPORT_LAYOUTS = LAYOUTS + ("mae_st", "videomae")
Path = tuple  # path of keys in the pure-dict params, e.g. ("encoder", "blocks", 0, "attn", "qkv", "kernel")


@dataclasses.dataclass(frozen=True)
class Entry:
  ours: Path
  torch: tuple[str, ...]
  kind: str  # "copy" | "linear" | "patch" | "qkv"


# Per-block sub-keys: (our module path, torch prefix) for each layout.
_BLOCK = {
    "timm": {"norm1": "norm1", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj", "norm2": "norm2",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"},
    "hf": {"norm1": "layernorm_before", "attn.qkv": ("attention.q_proj", "attention.k_proj",
                                                     "attention.v_proj"),
           "attn.proj": "attention.o_proj", "norm2": "layernorm_after", "mlp.fc1": "mlp.fc1",
           "mlp.fc2": "mlp.fc2"},
    "hf_legacy": {"norm1": "layernorm_before",
                  "attn.qkv": ("attention.attention.query", "attention.attention.key",
                               "attention.attention.value"),
                  "attn.proj": "attention.output.dense", "norm2": "layernorm_after",
                  "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"},
}

# Top-level names: (encoder prefix, blocks prefix, final norm, decoder names...).
_NAMES = {
    "timm": dict(cls="cls_token", pos="pos_embed", patch="patch_embed.proj", blocks="blocks",
                 norm="norm", dec_embed="decoder_embed", mask="mask_token",
                 dec_pos="decoder_pos_embed", dec_blocks="decoder_blocks", dec_norm="decoder_norm",
                 dec_pred="decoder_pred"),
    "hf": dict(cls="vit.embeddings.cls_token", pos="vit.embeddings.position_embeddings",
               patch="vit.embeddings.patch_embeddings.projection", blocks="vit.layers",
               norm="vit.layernorm", dec_embed="decoder.decoder_embed", mask="decoder.mask_token",
               dec_pos="decoder.decoder_pos_embed", dec_blocks="decoder.decoder_layers",
               dec_norm="decoder.decoder_norm", dec_pred="decoder.decoder_pred"),
}
_NAMES["hf_legacy"] = dict(_NAMES["hf"], blocks="vit.encoder.layer")


def _dense(ours: Path, torch_prefix: str) -> Iterator[Entry]:
  yield Entry(ours + ("kernel",), (torch_prefix + ".weight",), "linear")
  yield Entry(ours + ("bias",), (torch_prefix + ".bias",), "copy")


def _norm(ours: Path, torch_prefix: str) -> Iterator[Entry]:
  yield Entry(ours + ("scale",), (torch_prefix + ".weight",), "copy")
  yield Entry(ours + ("bias",), (torch_prefix + ".bias",), "copy")


def _block(ours: Path, torch_prefix: str, layout: str) -> Iterator[Entry]:
  names = _BLOCK[layout]
  for mod, tkey in names.items():
    path = ours + tuple(mod.split("."))
    if mod.startswith("norm"):
      yield from _norm(path, f"{torch_prefix}.{tkey}")
    elif isinstance(tkey, tuple):  # separate q, k, v in the torch layout
      yield Entry(path + ("kernel",), tuple(f"{torch_prefix}.{k}.weight" for k in tkey), "qkv")
      yield Entry(path + ("bias",), tuple(f"{torch_prefix}.{k}.bias" for k in tkey), "qkv")
    else:
      yield from _dense(path, f"{torch_prefix}.{tkey}")


def encoder_entries(cfg: ModelConfig, layout: str, ours: Path = ("encoder",)) -> list[Entry]:
  n = _NAMES[layout]
  out = [Entry(ours + ("cls_token",), (n["cls"],), "copy"),
         Entry(ours + ("patch_embed", "proj", "kernel"), (n["patch"] + ".weight",), "patch"),
         Entry(ours + ("patch_embed", "proj", "bias"), (n["patch"] + ".bias",), "copy")]
  for i in range(cfg.depth):
    out += _block(ours + ("blocks", i), f"{n['blocks']}.{i}", layout)
  out += _norm(ours + ("norm",), n["norm"])
  return out


def decoder_entries(cfg: ModelConfig, layout: str) -> list[Entry]:
  n = _NAMES[layout]
  out = list(_dense(("decoder", "embed"), n["dec_embed"]))
  out.append(Entry(("decoder", "mask_token"), (n["mask"],), "copy"))
  for i in range(cfg.decoder_depth):
    out += _block(("decoder", "blocks", i), f"{n['dec_blocks']}.{i}", layout)
  out += _norm(("decoder", "norm"), n["dec_norm"])
  out += _dense(("decoder", "pred"), n["dec_pred"])
  return out


def projector_entries(ours: Path = ("projector",), torch_prefix: str = "projector",
                      hidden_layers: int = 2) -> list[Entry]:
  """Sequential(Linear, BN, ReLU, Linear, BN, ReLU, Linear): Linears at 3j, BatchNorms at 3j + 1."""
  out = []
  for j in range(hidden_layers + 1):
    out += _dense(ours + ("linears", j), f"{torch_prefix}.{3 * j}")
  for j in range(hidden_layers):
    t = f"{torch_prefix}.{3 * j + 1}"
    out += _norm(ours + ("norms", j), t)
    out.append(Entry(ours + ("norms", j, "mean"), (t + ".running_mean",), "copy"))
    out.append(Entry(ours + ("norms", j, "var"), (t + ".running_var",), "copy"))
  return out


def entries(cfg: ModelConfig, layout: str, parts: tuple[str, ...]) -> list[Entry]:
  """Entries of the requested parts ("encoder", "decoder", "projector")."""
  if layout not in LAYOUTS:
    raise ValueError(f"Unknown layout {layout!r}; choose one of {LAYOUTS}.")
  table = {"encoder": lambda: encoder_entries(cfg, layout),
           "decoder": lambda: decoder_entries(cfg, layout),
           "projector": projector_entries}
  if "projector" in parts and layout != "timm":
    raise ValueError("Hugging Face ViTMAE has no projector; use the timm layout for it.")
  out = []
  for part in parts:
    out += table[part]()
  return out


def position_keys(layout: str) -> tuple[str, str]:
  """(encoder, decoder) position-table keys of a layout."""
  return _NAMES[layout]["pos"], _NAMES[layout]["dec_pos"]


def to_ours(arrays: list[np.ndarray], kind: str, cfg: ModelConfig) -> np.ndarray:
  """Torch tensors (as numpy) -> our leaf."""
  if kind == "copy":
    return arrays[0]
  if kind == "linear":
    return arrays[0].T
  if kind == "patch":  # Conv2d (D, 3, p, p) -> Dense kernel in patchify order (p, q, c)
    w = arrays[0]
    return w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
  if kind == "qkv":  # three (D, D) weights or (D,) biases -> fused (D, 3D) kernel or (3D,) bias
    fused = np.concatenate(arrays, axis=0)
    return fused.T if fused.ndim == 2 else fused
  raise ValueError(kind)


def to_torch(leaf: np.ndarray, kind: str, cfg: ModelConfig) -> list[np.ndarray]:
  """Our leaf -> torch tensors (as numpy), the inverse of `to_ours`."""
  if kind == "copy":
    return [leaf]
  if kind == "linear":
    return [leaf.T]
  if kind == "patch":
    dim = leaf.shape[-1]
    return [leaf.reshape(cfg.patch, cfg.patch, 3, dim).transpose(3, 2, 0, 1)]
  if kind == "qkv":
    fused = leaf.T if leaf.ndim == 2 else leaf
    return list(np.split(fused, 3, axis=0))
  raise ValueError(kind)


def detect_layout(state) -> str:
  """Guesses the layout of a state dict (or of its keys) from the key names."""
  keys = list(state)
  if any(".attention.q_proj." in k for k in keys):
    return "hf"
  if any(".attention.attention.query." in k for k in keys):
    return "hf_legacy"
  if any(k.startswith("encoder.blocks.") or k.endswith(".attn.q_bias") for k in keys):
    return "videomae"
  if any(k.endswith(".attn.q.weight") or k == "pos_embed_spatial" for k in keys):
    return "mae_st"
  if hasattr(state, "get") and np.ndim(state.get("patch_embed.proj.weight")) == 5:
    return "videomae"  # a tubelet kernel with a fused qkv: VideoMAE without qkv biases
  return "timm"

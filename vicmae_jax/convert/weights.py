"""Import PyTorch checkpoints into a ViC-MAE model and export ours to PyTorch key layouts.

Supported inputs: released ViC-MAE pretraining state dicts (encoder, decoder, projector with
BatchNorm statistics), MAE `mae_pretrain_vit_*` (encoder; `_full` adds the decoder), fine-tuned
`models_vit` and timm ViTs (encoder; the classifier comes back in `ImportReport.extras`), Hugging
Face ViTMAE (transformers 4 or 5 key names), and the encoders of MAE-ST and VideoMAE (rewritten by
`convert/video.py`, with notes on what a video model cannot hand an image model).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from vicmae_jax.convert import layouts, video
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.models.posembed import resize_pos_embed, sincos_2d

# Keys that never map to a parameter of ours and are safe to drop silently.
_ALWAYS_IGNORED = ("num_batches_tracked",)
# Keys a fine-tuned classifier carries; handed back to the caller rather than dropped.
_EXTRA_PREFIXES = ("head.", "fc_norm.", "classifier.")


class CheckpointMismatchError(ValueError):
  """A state dict does not fit the model; the message lists every offending key at once."""


@dataclasses.dataclass
class ImportReport:
  layout: str                   # the checkpoint's layout (`layouts.IMPORT_LAYOUTS`)
  parts: tuple[str, ...]
  extras: dict[str, np.ndarray]  # classifier keys (head, fc_norm), not imported
  notes: list[str]
  # Checkpoint entries that are not weights (optimizer, scaler, args, epoch, EMA copies).
  skipped: list[str] = dataclasses.field(default_factory=list)


def _get(tree: dict, path: tuple) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: tuple, value) -> None:
  for key in path[:-1]:
    tree = tree[key]
  tree[path[-1]] = value


def _has(tree: dict, path: tuple) -> bool:
  try:
    _get(tree, path)
    return True
  except (KeyError, IndexError, TypeError):
    return False


def detect_parts(state: dict[str, np.ndarray], layout: str) -> tuple[str, ...]:
  """Which of encoder / decoder / projector a state dict contains."""
  names = layouts._NAMES[layout]
  parts = []
  if names["cls"] in state or names["patch"] + ".weight" in state:
    parts.append("encoder")
  if names["dec_embed"] + ".weight" in state:
    parts.append("decoder")
  if "projector.0.weight" in state:
    parts.append("projector")
  return tuple(parts)


def _position_note(table: np.ndarray, cfg: ModelConfig, dim: int, grid: int, what: str) -> str | None:
  """Checks a fixed position table from a checkpoint against the sin-cos one we rebuild."""
  rows = table.reshape(-1, table.shape[-1])
  if rows.shape[0] != grid * grid + 1:
    return f"{what}: checkpoint grid differs from the model's; the sin-cos table is rebuilt."
  if not np.allclose(rows, sincos_2d(dim, grid), atol=1e-4):
    return (f"{what}: checkpoint table is not the fixed sin-cos one (learned?); the model's fixed "
            "table is used. Set learned_pos_embed=True to load it.")
  return None


def import_state_dict(state: dict[str, np.ndarray], params: dict, cfg: ModelConfig, *,
                      parts: tuple[str, ...] | None = None, layout: str | None = None
                      ) -> ImportReport:
  """Writes a torch state dict into `params` (our pure dict, modified in place).

  Args:
    state: {torch key: numpy array}, e.g. from `torch_io.load_state_dict`.
    params: pure dict of the model state (`nnx.to_pure_dict(nnx.state(model))`), containing at
      least the requested parts; BatchNorm statistics live beside the params in it.
    cfg: the resolved model config the params belong to.
    parts: what to import; default: every part the state dict has.
    layout: torch key layout (`layouts.IMPORT_LAYOUTS`); default: detected from the key names.

  Raises:
    CheckpointMismatchError listing every missing, unexpected and mis-shaped key.
  """
  source_layout = layout = layout or layouts.detect_layout(state)
  if layout not in layouts.IMPORT_LAYOUTS:
    raise ValueError(f"Unknown layout {layout!r}; choose one of {layouts.IMPORT_LAYOUTS}.")
  notes, optional = [], set()
  if layout in video.VIDEO_LAYOUTS:
    if parts and set(parts) != {"encoder"}:
      raise CheckpointMismatchError(
          f"Only the encoder of a {layout} checkpoint fits this model (its decoder predicts "
          f"tubelets); import parts=('encoder',), not {parts}.")
    rewritten = video.to_timm(state, layout)
    state, layout = rewritten.state, "timm"
    notes, optional = list(rewritten.notes), set(rewritten.optional)
  if layout == "timm" and "fc_norm.weight" in state and "norm.weight" not in state:
    # Mean-pooled fine-tuned models (MAE global_pool, VideoMAE, timm avg) drop the final norm.
    optional |= {"norm.weight", "norm.bias"}
    notes.append("norm: absent (a mean-pooled classifier normalises with fc_norm, handed back in "
                 "extras); the model's final LayerNorm keeps its initial values.")
  parts = parts or detect_parts(state, layout)
  if not parts:
    raise CheckpointMismatchError(
        f"No ViT encoder, decoder or projector keys found ({len(state)} keys, layout {layout}); "
        f"first keys: {sorted(state)[:8]}")
  missing, mismatched = [], []
  consumed = set()
  for entry in layouts.entries(cfg, layout, parts):
    absent = [k for k in entry.torch if k not in state]
    if absent:
      missing += [k for k in absent if k not in optional]
      continue
    consumed.update(entry.torch)
    value = layouts.to_ours([state[k] for k in entry.torch], entry.kind, cfg)
    if not _has(params, entry.ours):
      mismatched.append(f"{'/'.join(map(str, entry.ours))}: not in the model")
      continue
    expected = np.shape(_get(params, entry.ours))
    if value.shape != expected:
      mismatched.append(f"{', '.join(entry.torch)}: checkpoint {value.shape} vs model {expected}")
      continue
    _set(params, entry.ours, value.astype(np.float32))

  enc_pos, dec_pos = layouts.position_keys(layout)
  for key, dim in ((enc_pos, cfg.width), (dec_pos, cfg.decoder_width)):
    if key in state and state[key].shape[-1] != dim:
      mismatched.append(f"{key}: checkpoint width {state[key].shape[-1]} vs model {dim}")
  if "encoder" in parts and enc_pos in state and state[enc_pos].shape[-1] == cfg.width:
    consumed.add(enc_pos)
    if cfg.learned_pos_embed:
      table = resize_pos_embed(state[enc_pos].reshape(-1, cfg.width), cfg.grid)
      _set(params, ("encoder", "pos_embed"), table[None].astype(np.float32))
    else:
      note = _position_note(state[enc_pos], cfg, cfg.width, cfg.grid, enc_pos)
      notes += [note] if note else []
  if "decoder" in parts and dec_pos in state and state[dec_pos].shape[-1] == cfg.decoder_width:
    consumed.add(dec_pos)
    note = _position_note(state[dec_pos], cfg, cfg.decoder_width, cfg.grid, dec_pos)
    notes += [note] if note else []

  extras = {k: v for k, v in state.items() if k.startswith(_EXTRA_PREFIXES)}
  unexpected = sorted(
      k for k in state if k not in consumed and k not in extras
      and k not in (enc_pos, dec_pos)
      and not k.endswith(_ALWAYS_IGNORED) and not _belongs_to_other_part(k, layout, parts))
  if missing or unexpected or mismatched:
    lines = [f"Checkpoint does not fit the {cfg.variant} model (layout {source_layout}, parts "
             f"{parts}):"]
    for title, items in (("missing", missing), ("unexpected", unexpected),
                         ("mis-shaped", mismatched)):
      if items:
        lines.append(f"  {len(items)} {title}: " + "; ".join(items[:20])
                     + (" ..." if len(items) > 20 else ""))
    raise CheckpointMismatchError("\n".join(lines))
  for note in notes:
    logging.warning(note)
  return ImportReport(layout=source_layout, parts=parts, extras=extras, notes=notes)


def _belongs_to_other_part(key: str, layout: str, parts: tuple[str, ...]) -> bool:
  """True for keys of a part the caller chose not to import (e.g. the decoder of a full model)."""
  names = layouts._NAMES[layout]
  decoder_prefixes = tuple(names[k] for k in ("dec_embed", "mask", "dec_pos", "dec_blocks",
                                              "dec_norm", "dec_pred"))
  if "decoder" not in parts and key.startswith(decoder_prefixes):
    return True
  return "projector" not in parts and key.startswith("projector.")


def export_state_dict(params: dict, cfg: ModelConfig, *, parts: tuple[str, ...] = ("encoder",),
                      layout: str = "timm") -> dict[str, np.ndarray]:
  """Our pure-dict params -> {torch key: writable float32 array} in `layout`, with position
  tables included."""
  out = {}
  for entry in layouts.entries(cfg, layout, parts):
    leaf = np.asarray(_get(params, entry.ours), dtype=np.float32)
    for key, value in zip(entry.torch, layouts.to_torch(leaf, entry.kind, cfg)):
      out[key] = value
  enc_pos, dec_pos = layouts.position_keys(layout)
  if "encoder" in parts:
    table = (np.asarray(_get(params, ("encoder", "pos_embed")))[0] if cfg.learned_pos_embed
             else sincos_2d(cfg.width, cfg.grid))
    out[enc_pos] = table[None]
  if "decoder" in parts:
    out[dec_pos] = sincos_2d(cfg.decoder_width, cfg.grid)[None]
  # Owned, writable, C-contiguous: views of device buffers are read-only, which torch.from_numpy
  # warns about, and safetensors wants contiguous memory. Copies only what needs it.
  return {k: v if v.flags.writeable and v.flags.c_contiguous else np.array(v, order="C")
          for k, v in out.items()}

"""Layer-wise learning-rate decay (BEiT / MAE `lr_decay.py`; the fine-tuning recipe in
docs/evaluation.md, "Image fine-tuning recipe").

Layer ids: cls_token, pos_embed(_spatial/_temporal/_class), patch_embed -> 0; blocks.i -> i + 1; everything else (final
norm, fc_norm, head) -> depth + 1. Multiplier = decay ** (depth + 1 - id).
"""
from __future__ import annotations

from typing import Any

import jax
import optax


def _key_name(entry: Any) -> Any:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return entry


def layer_id(path: tuple, depth: int) -> int:
  """Layer id of a parameter from its tree path (names as in `Classifier`)."""
  names = [_key_name(p) for p in path]
  # Image classifier params live under "encoder"; the video classifier's at the top level.
  rest = names[names.index("encoder") + 1:] if "encoder" in names else names
  if rest and (rest[0] in ("cls_token", "patch_embed") or str(rest[0]).startswith("pos_embed")):
    return 0
  if rest and rest[0] == "blocks":
    return int(rest[1]) + 1
  return depth + 1


def layer_multipliers(params: Any, depth: int, decay: float) -> Any:
  """A tree like `params` of float lr multipliers decay ** (depth + 1 - layer_id)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: float(decay ** (depth + 1 - layer_id(path, depth))), params)


def scale_by_tree(multipliers: Any) -> optax.GradientTransformation:
  """Multiplies each update by its multiplier. Placed after AdamW it scales lr and the decoupled
  weight decay together, which is exactly timm's per-group `lr_scale`."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m, updates, multipliers), state

  return optax.GradientTransformation(init_fn, update_fn)

"""MAE-ST and VideoMAE state dicts rewritten into the timm layout, so one key table serves all.

Both are video ViTs. What differs from our image ViT, and what the rewrite does:
  * patch embedding: a Conv3d over t-frame tubelets, (D, 3, t, p, p). Summed over time it is the
    2-D kernel that embeds a still frame as the video model embeds a static clip (the inverse of
    MAE-ST's `inflate`, which repeats a 2-D kernel over t and divides it by t).
  * attention: MAE-ST has separate q, k, v Linears; VideoMAE a bias-free qkv Linear plus `q_bias`
    and `v_bias` (k has none). Both become one fused qkv, exactly.
  * layer scale (VideoMAE `gamma_1`, `gamma_2`): folded into attn.proj and mlp.fc2, exactly.
  * positions: MAE-ST's separable tables become one table (spatial + mean temporal, the class
    position in front); VideoMAE stores none (a fixed 1-D sinusoid), so the model's stays.
  * class token: VideoMAE (and MAE-ST without cls_embed) has none; the model keeps its own.
  * decoders predict tubelets from their own position tables; they are not imported.
"""
from __future__ import annotations

import dataclasses

import numpy as np

VIDEO_LAYOUTS = ("mae_st", "videomae")
_NAMES = {"mae_st": "MAE-ST", "videomae": "VideoMAE"}
# Decoder keys of each pretraining model (VideoMAE's after its "encoder." prefix is stripped).
_DECODER = {"mae_st": ("decoder_", "mask_token"),
            "videomae": ("decoder.", "encoder_to_decoder.", "mask_token")}
# Layer-scale vector -> the Linear whose output it scales.
_LAYER_SCALE = {"gamma_1": "attn.proj", "gamma_2": "mlp.fc2"}


@dataclasses.dataclass
class Rewritten:
  state: dict[str, np.ndarray]
  notes: list[str]
  optional: tuple[str, ...]  # timm keys the source lacks by design; the model keeps its values


def _fuse_qkv(state: dict[str, np.ndarray]) -> None:
  """MAE-ST q/k/v, VideoMAE q_bias/v_bias and bias-free qkv -> attn.qkv.{weight,bias}."""
  for prefix in sorted({k[:-len(".q.weight")] for k in state if k.endswith(".attn.q.weight")}):
    weights = [state.pop(f"{prefix}.{n}.weight") for n in "qkv"]
    state[f"{prefix}.qkv.weight"] = np.concatenate(weights)
    if f"{prefix}.q.bias" in state:
      state[f"{prefix}.qkv.bias"] = np.concatenate([state.pop(f"{prefix}.{n}.bias") for n in "qkv"])
  for prefix in sorted({k[:-len(".q_bias")] for k in state if k.endswith(".attn.q_bias")}):
    q, v = state.pop(f"{prefix}.q_bias"), state.pop(f"{prefix}.v_bias")
    state[f"{prefix}.qkv.bias"] = np.concatenate([q, np.zeros_like(q), v])
  for key in [k for k in state if k.endswith(".attn.qkv.weight")]:
    bias = key[:-len("weight")] + "bias"
    if bias not in state:  # no bias is a zero bias
      state[bias] = np.zeros(state[key].shape[0], state[key].dtype)


def _fold_layer_scale(state: dict[str, np.ndarray]) -> None:
  for key in [k for k in state if k.rsplit(".", 1)[-1] in _LAYER_SCALE]:
    block, name = key.rsplit(".", 1)
    gamma, target = state.pop(key), f"{block}.{_LAYER_SCALE[name]}"
    state[target + ".weight"] = gamma[:, None] * state[target + ".weight"]
    state[target + ".bias"] = gamma * state[target + ".bias"]


def _positions(state: dict[str, np.ndarray], layout: str) -> list[str]:
  if "pos_embed_spatial" in state:  # MAE-ST sep_pos_embed (its default)
    spatial = state.pop("pos_embed_spatial")
    temporal = state.pop("pos_embed_temporal", None)
    cls = state.pop("pos_embed_class", None)
    if temporal is not None:
      spatial = spatial + temporal.mean(axis=1, keepdims=True)
    cls = np.zeros_like(spatial[:, :1]) if cls is None else cls
    state["pos_embed"] = np.concatenate([cls, spatial], axis=1)
    return ["pos_embed: MAE-ST's spatial table plus the mean of its temporal one, the class "
            "position in front."]
  if "pos_embed" in state:  # one table over space and time: no grid to read it back on
    rows = state.pop("pos_embed").shape[1]
    return [f"pos_embed: {_NAMES[layout]}'s space-time table ({rows} rows) is not imported; the "
            "model's own table is used."]
  return [f"pos_embed: {_NAMES[layout]} stores no position table (a fixed 1-D sinusoid over "
          "space-time); the model's 2-D sin-cos table is used."]


def to_timm(state: dict[str, np.ndarray], layout: str) -> Rewritten:
  """A MAE-ST or VideoMAE state dict (pretraining or fine-tuned) in the timm layout.

  Exact where the architectures agree (attention, MLP, norms, layer scale); the patch kernel and
  positions are reduced from space-time to space, as each note says.
  """
  if layout not in VIDEO_LAYOUTS:
    raise ValueError(f"Not a video layout: {layout!r}; choose one of {VIDEO_LAYOUTS}.")
  name = _NAMES[layout]
  if layout == "videomae":  # pretraining checkpoints keep the encoder under "encoder."
    state = {k[len("encoder."):] if k.startswith("encoder.") else k: v for k, v in state.items()}
  state, notes = dict(state), []
  dropped = [k for k in state if k.startswith(_DECODER[layout])]
  for key in dropped:
    del state[key]
  if dropped:
    notes.append(f"{name} decoder ({len(dropped)} tensors) not imported: it predicts tubelets from "
                 "its own position table.")
  _fuse_qkv(state)
  _fold_layer_scale(state)
  patch = state.get("patch_embed.proj.weight")
  if patch is not None and patch.ndim == 5:
    state["patch_embed.proj.weight"] = patch.sum(axis=2)
    notes.append(f"patch_embed.proj.weight: the {patch.shape[2]}-frame tubelet kernel is summed "
                 "over time (a still frame embeds as a static clip did).")
  notes += _positions(state, layout)
  optional = ()
  if "cls_token" not in state:
    optional = ("cls_token",)
    notes.append(f"cls_token: {name} has none; the model keeps its initial one (read out by mean "
                 "pooling).")
  return Rewritten(state, notes, optional)

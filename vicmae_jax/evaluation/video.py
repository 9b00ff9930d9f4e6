"""Video classification building blocks (MAE-ST fallback recipe, docs/evaluation.md "Video
fine-tuning"): tubelet inflation,
separable space-time position embeddings, head dropout, clip / segment index sampling, spatial
test crops and multi-view aggregation per video.

`evaluation/finetune.py` runs the video fine-tuning loop on these (`config.video.enabled`);
`evaluation/video_data.py` decodes and augments the clips.
"""
from __future__ import annotations

import math

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vicmae_jax.models import layers
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.models.posembed import sincos_2d


# --- tubelets -------------------------------------------------------------------------------------
def tubelet_patchify(videos: jax.Array, t: int, p: int) -> jax.Array:
  """[N, T, H, W, C] -> [N, (T/t) * (H/p) * (W/p), t*p*p*C]; tokens (time, row, col), features
  (t, p, q, c), so a kernel tiled over t lines up with the 2-D (p, q, c) patch kernel."""
  n, frames, h, w, c = videos.shape
  x = videos.reshape(n, frames // t, t, h // p, p, w // p, p, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(n, (frames // t) * (h // p) * (w // p), t * p * p * c)


def inflate_patch_kernel(kernel: np.ndarray, t: int) -> np.ndarray:
  """2-D patch kernel [p*p*C, D] -> tubelet kernel [t*p*p*C, D]: repeated over t, divided by t.

  On a static clip the tubelet embedding then equals the 2-D embedding of the frame.
  """
  return np.concatenate([np.asarray(kernel)] * t, axis=0) / t


def separable_pos_embed(spatial: jax.Array, temporal: jax.Array) -> jax.Array:
  """[L_s, D] + [T', D] -> [T' * L_s, D] in (time, space) token order."""
  return (temporal[:, None, :] + spatial[None, :, :]).reshape(-1, spatial.shape[-1])


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Inverted dropout; the identity without an `rng` (evaluation) or at rate 0."""
  if rng is None or rate <= 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


# Folded into the step key for the head dropout; drop path folds in the block index (< depth).
_HEAD_DROPOUT_STREAM = 1 << 20


class VideoClassifier(nnx.Module):
  """ViT over t x p x p tubelets with separable (spatial + temporal) and class position
  embeddings, global average pooling of patch tokens -> fc_norm -> dropout -> head (MAE-ST).

  Drop path and the head dropout are active only when a `rng` is passed (the training step).
  """

  def __init__(self, cfg: ModelConfig, num_classes: int, *, num_frames: int = 16,
               tubelet: int = 2, drop_path_rate: float = 0.0, head_dropout: float = 0.0,
               rngs: nnx.Rngs):
    if num_frames % tubelet:
      raise ValueError(f"num_frames {num_frames} is not a multiple of the tubelet size {tubelet}")
    if not 0.0 <= head_dropout < 1.0:
      raise ValueError(f"head_dropout must be in [0, 1), got {head_dropout}")
    self.cfg, self.tubelet, self.num_frames = cfg, tubelet, num_frames
    self.drop_path_rate, self.head_dropout = drop_path_rate, head_dropout
    dtype = jnp.dtype(cfg.dtype)
    fan_in = tubelet * cfg.patch * cfg.patch * 3
    self.patch_embed = layers.dense(fan_in, cfg.width, dtype=dtype, rngs=rngs)
    self.cls_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, cfg.width)))
    table = jnp.asarray(sincos_2d(cfg.width, cfg.grid))
    self.pos_embed_spatial = nnx.Param(table[1:][None])
    self.pos_embed_temporal = nnx.Param(jnp.zeros((1, num_frames // tubelet, cfg.width)))
    self.pos_embed_class = nnx.Param(table[:1][None])
    self.blocks = nnx.List([
        layers.Block(cfg.width, cfg.heads, cfg.mlp_dim, dtype=dtype,
                     attention_impl=cfg.attention_impl, rngs=rngs) for _ in range(cfg.depth)])
    self.fc_norm = layers.layer_norm(cfg.width, dtype=dtype, rngs=rngs)
    self.head = nnx.Linear(cfg.width, num_classes,
                           kernel_init=nnx.initializers.truncated_normal(2e-5),
                           bias_init=nnx.initializers.zeros_init(), dtype=dtype,
                           param_dtype=jnp.float32, rngs=rngs)

  def features(self, videos: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """[N, T, H, W, 3] -> [N, D] (mean of patch tokens, fc_norm)."""
    tokens = tubelet_patchify(videos.astype(self.cfg.dtype), self.tubelet, self.cfg.patch)
    pos = separable_pos_embed(self.pos_embed_spatial[...][0], self.pos_embed_temporal[...][0])
    x = self.patch_embed(tokens) + pos.astype(tokens.dtype)
    cls = (self.cls_token[...] + self.pos_embed_class[...]).astype(x.dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[-1])), x], axis=1)
    x = layers.run_blocks(self.blocks, x, self.cfg.remat, self.drop_path_rate, rng,
                          remat_policy=self.cfg.remat_policy, scan=self.cfg.scan_blocks)
    return self.fc_norm(jnp.mean(x[:, 1:].astype(jnp.float32), axis=1))

  def __call__(self, videos: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    x = self.features(videos, rng)
    key = None if rng is None else jax.random.fold_in(rng, _HEAD_DROPOUT_STREAM)
    return self.head(dropout(x, self.head_dropout, key)).astype(jnp.float32)


def init_from_image_encoder(model: VideoClassifier, encoder: dict) -> list[str]:
  """Copies a pure image-encoder dict (ViTEncoder layout) into `model`; returns what was set.

  The 2-D patch kernel is inflated to tubelets; the spatial table comes from the encoder's
  (learned) `pos_embed` or the sin-cos one; the temporal table stays zero, so a static clip
  starts out as the image model sees its frame. The final LayerNorm initialises fc_norm.
  """
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  pure["patch_embed"]["kernel"] = inflate_patch_kernel(
      encoder["patch_embed"]["proj"]["kernel"], model.tubelet)
  pure["patch_embed"]["bias"] = np.asarray(encoder["patch_embed"]["proj"]["bias"])
  pure["cls_token"] = np.asarray(encoder["cls_token"])
  pure["blocks"] = jax.tree.map(np.asarray, encoder["blocks"])
  pure["fc_norm"] = jax.tree.map(np.asarray, encoder["norm"])
  set_keys = ["patch_embed (inflated)", "cls_token", "blocks", "fc_norm <- norm"]
  if "pos_embed" in encoder:
    table = np.asarray(encoder["pos_embed"]).reshape(-1, model.cfg.width)
    pure["pos_embed_spatial"], pure["pos_embed_class"] = table[None, 1:], table[None, :1]
    set_keys.append("pos_embed_spatial / pos_embed_class <- pos_embed")
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  return set_keys


# --- sampling -------------------------------------------------------------------------------------
def clip_indices(num_video_frames: int, num_frames: int = 16, stride: int = 4, *,
                 rng: np.random.Generator | None = None, view: int = 0,
                 num_views: int = 1) -> np.ndarray:
  """Frame indices of one clip of `num_frames` frames `stride` apart (K400: 16 x 4).

  Training (`rng`): a uniformly random start. Test: `num_views` starts spread evenly over the
  video, this is view `view` (the 7 temporal views of the 3 x 7 protocol). Clips that run past
  the end repeat the last frame.
  """
  span = (num_frames - 1) * stride + 1
  room = max(num_video_frames - span, 0)
  if rng is not None:
    start = int(rng.integers(0, room + 1))
  elif num_views > 1:
    start = int(round(view * room / (num_views - 1)))
  else:
    start = room // 2
  return np.minimum(start + stride * np.arange(num_frames), num_video_frames - 1)


def segment_indices(num_video_frames: int, num_segments: int = 16, *,
                    rng: np.random.Generator | None = None, view: int = 0,
                    num_views: int = 1) -> np.ndarray:
  """SSv2 / TSN segment sampling: one frame per equal segment.

  Training (`rng`): a random frame in each segment. Test: the middle of each segment for one
  view; with `num_views` > 1, view v takes the frame at fraction v / num_views of every segment
  (2 views: segment starts and middles, as VideoMAE's SSv2 test).
  """
  edges = np.linspace(0, num_video_frames, num_segments + 1)
  if rng is not None:
    frac = rng.uniform(size=num_segments)
  else:
    frac = 0.5 if num_views <= 1 else view / num_views
  idx = edges[:-1] + frac * (edges[1:] - edges[:-1])
  return np.minimum(np.floor(idx).astype(np.int64), num_video_frames - 1)


def spatial_crops(frames: np.ndarray, size: int, num_crops: int = 3) -> list[np.ndarray]:
  """Resize the short side to `size`, then `num_crops` size x size crops spread along the long
  side (3: left/centre/right or top/centre/bottom, as SlowFast / MAE-ST test)."""
  t, h, w, c = frames.shape
  scale = size / min(h, w)
  nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
  resized = np.stack([cv2.resize(f, (nw, nh), interpolation=cv2.INTER_AREA) for f in frames])
  crops = []
  for i in range(num_crops):
    frac = 0.5 if num_crops == 1 else i / (num_crops - 1)
    top = int(round((nh - size) * frac)) if nh > nw else (nh - size) // 2
    left = int(round((nw - size) * frac)) if nw >= nh else (nw - size) // 2
    crops.append(resized[:, top:top + size, left:left + size])
  return crops


# --- aggregation ----------------------------------------------------------------------------------
def aggregate_views(logits: np.ndarray, video_ids: np.ndarray, labels: dict[int, int] | np.ndarray,
                    *, expected_views: int | None = None) -> dict[str, float]:
  """Per-video accuracy from per-view logits: softmax, averaged over each video's views.

  Args:
    logits: [V, C] one row per evaluated view (padding already removed).
    video_ids: [V] which video each view belongs to.
    labels: video id -> label (dict or array indexed by id).
    expected_views: views per video (e.g. 21 for 3 x 7); videos with fewer are counted in
      `videos_missing_views` (never filled in with other videos).
  Returns per-video top-1/top-5 (%), per-view (per-clip) top-1 (%), and counts.
  """
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  ids = np.asarray(video_ids)
  uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
  summed = np.zeros((len(uniq), probs.shape[-1]))
  np.add.at(summed, inverse, probs)
  mean = summed / counts[:, None]
  y = np.array([labels[int(v)] for v in uniq])
  order = np.argsort(-mean, -1)
  k5 = min(5, order.shape[-1])
  view_labels = y[inverse]
  out = {
      "video_top1": 100.0 * float(np.mean(order[:, 0] == y)),
      "video_top5": 100.0 * float(np.mean(np.any(order[:, :k5] == y[:, None], -1))),
      "clip_top1": 100.0 * float(np.mean(np.argmax(logits, -1) == view_labels)),
      "num_videos": float(len(uniq)),
      "num_views": float(len(ids)),
  }
  if expected_views is not None:
    out["videos_missing_views"] = float(np.sum(counts < expected_views))
  return out


def num_test_views(spatial: int = 3, temporal: int = 7) -> int:
  """Views per video at test: spatial x temporal (K400: 3 x 7 = 21)."""
  return int(math.prod((spatial, temporal)))

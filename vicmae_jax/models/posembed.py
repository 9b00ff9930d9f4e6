"""Fixed 2-D sin-cos position embeddings, built as the released code builds them, and the bicubic
resize of learned tables that MAE and timm use (docs/decisions.md#encoder).

Pure numpy: the tables are constants, computed once at trace time and folded into the program.
"""
from __future__ import annotations

import numpy as np

# Arithmetic of the released tables. ViC-MAE's `util/pos_embed.py` computes every step in float32
# (its frequencies are a float32 arange); MAE's original asked for `np.float`, i.e. float64, and
# its checkpoints hold that table rounded to float32. The two differ by up to ~7e-7.
VICMAE_DTYPE = np.float32
MAE_DTYPE = np.float64


def sincos_1d(dim: int, positions: np.ndarray, dtype=VICMAE_DTYPE) -> np.ndarray:
  """[len(positions), dim] table: sin block then cos block, omega_k = 1 / 10000^(k / (dim/2)).

  Every step runs in `dtype`, in the released order: k / (dim / 2), then 10000 ** that, then its
  reciprocal, then position x omega, then sin and cos. float32 gives the ViC-MAE release's bits
  (numpy's own float32 sin/cos, as there), float64 MAE's.
  """
  if dim % 2:
    raise ValueError(f"sin-cos embedding dim must be even, got {dim}.")
  dtype = np.dtype(dtype)
  omega = np.arange(dim // 2, dtype=dtype)
  omega /= dim / 2.0  # in place: stays in `dtype`
  omega = 1.0 / 10000**omega
  angles = positions.reshape(-1).astype(dtype)[:, None] * omega[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int | None = None, cls_token: bool = True,
              dtype=VICMAE_DTYPE) -> np.ndarray:
  """[(1 +) grid_h * grid_w, dim] float32 table with an all-zero cls row first when `cls_token`.

  The released weights come from `meshgrid(w, h)`, so the first half of the channels encodes the
  column index and the second half the row index; positions are flattened row-major. `dtype` is
  the arithmetic (`VICMAE_DTYPE`, the default, or `MAE_DTYPE`); the result is float32 either way.
  """
  grid_w = grid_h if grid_w is None else grid_w
  cols, rows = np.meshgrid(np.arange(grid_w, dtype=np.float32), np.arange(grid_h, dtype=np.float32))
  emb = np.concatenate([sincos_1d(dim // 2, cols, dtype), sincos_1d(dim // 2, rows, dtype)], axis=1)
  if cls_token:
    emb = np.concatenate([np.zeros((1, dim), emb.dtype), emb], axis=0)
  return emb.astype(np.float32)


def _keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
  """Keys' cubic convolution kernel with parameter `a` (torch: -0.75; its antialiased path and
  PIL: -0.5)."""
  x = np.abs(x)
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
  return np.where(x <= 1.0, near, np.where(x < 2.0, far, 0.0))


def bicubic_matrix(in_size: int, out_size: int, antialias: bool = False) -> np.ndarray:
  """[out_size, in_size] float64 weights of torch's 1-D bicubic resize with align_corners=False.

  `antialias=False` (`F.interpolate(mode="bicubic")`, MAE's and the released fine-tuning's
  `interpolate_pos_embed`): output i samples the input at (i + 0.5) * in / out - 0.5 with Keys
  a = -0.75 over the four nearest pixels, indices clamped to the border.
  `antialias=True` (timm's `resample_abs_pos_embed` default): a = -0.5, the kernel stretched by
  in / out when shrinking, taps outside the input dropped and the rest renormalised to sum 1.
  """
  scale = in_size / out_size
  out = np.zeros((out_size, in_size))
  if not antialias:
    for i in range(out_size):
      src = scale * (i + 0.5) - 0.5
      x0 = int(np.floor(src))
      t = src - x0
      for k in range(-1, 3):
        out[i, min(max(x0 + k, 0), in_size - 1)] += _keys_cubic(np.asarray(t - k), -0.75)
    return out
  support = 2.0 * scale if scale >= 1.0 else 2.0
  inv = 1.0 / scale if scale >= 1.0 else 1.0
  for i in range(out_size):
    center = scale * (i + 0.5)
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), in_size)
    taps = np.arange(lo, hi)
    w = _keys_cubic((taps - center + 0.5) * inv, -0.5)
    out[i, taps] = w / w.sum() if w.sum() != 0.0 else w
  return out


def resize_grid(grid: np.ndarray, new_hw: tuple[int, int], antialias: bool = False) -> np.ndarray:
  """[h, w, D] -> [new_h, new_w, D] by torch's separable bicubic (`bicubic_matrix`), float64
  products rounded to the input dtype."""
  wh = bicubic_matrix(grid.shape[0], new_hw[0], antialias)
  ww = bicubic_matrix(grid.shape[1], new_hw[1], antialias)
  out = np.einsum("ik,kld,jl->ijd", wh, grid.astype(np.float64), ww)
  return out.astype(grid.dtype)


def resize_pos_embed(pos_embed: np.ndarray, new_grid: int | tuple[int, int], num_prefix: int = 1,
                     old_grid: tuple[int, int] | None = None,
                     antialias: bool = False) -> np.ndarray:
  """Bicubic resize of a learned [prefix + h * w, D] table to a new (h', w') grid.

  Used when a checkpoint was trained at another resolution. The `num_prefix` rows (cls) are kept
  as they are. `old_grid` defaults to a square grid; an int `new_grid` means a square one. The
  default is the released fine-tuning's resize (torch bicubic, align_corners=False, no
  antialiasing); `antialias=True` is timm's `resample_abs_pos_embed` default. Fixed sin-cos
  tables never need this: they are rebuilt for the new grid instead.
  """
  pos_embed = np.asarray(pos_embed)
  prefix, grid_tokens = pos_embed[:num_prefix], pos_embed[num_prefix:]
  new_hw = (new_grid, new_grid) if isinstance(new_grid, int) else tuple(new_grid)
  if old_grid is None:
    side = int(round(np.sqrt(grid_tokens.shape[0])))
    if side * side != grid_tokens.shape[0]:
      raise ValueError(f"position table of {grid_tokens.shape[0]} patch rows is not a square "
                       "grid; pass old_grid.")
    old_grid = (side, side)
  old_hw = tuple(old_grid)
  if old_hw[0] * old_hw[1] != grid_tokens.shape[0]:
    raise ValueError(f"old_grid {old_hw} does not match {grid_tokens.shape[0]} patch rows.")
  if old_hw == new_hw:
    return pos_embed
  dim = grid_tokens.shape[-1]
  resized = resize_grid(grid_tokens.reshape(old_hw + (dim,)), new_hw, antialias)
  return np.concatenate([prefix, resized.reshape(-1, dim).astype(pos_embed.dtype)], axis=0)

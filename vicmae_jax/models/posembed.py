"""Fixed 2-D sin-cos position embeddings, built exactly as MAE builds them
(docs/decisions.md#encoder).

Pure numpy: the tables are constants, computed once at trace time and folded into the program.
"""
from __future__ import annotations

import numpy as np


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
  """[len(positions), dim] table: sin block then cos block, omega_k = 1 / 10000^(k / (dim/2))."""
  if dim % 2:
    raise ValueError(f"sin-cos embedding dim must be even, got {dim}.")
  omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
  omega = 1.0 / 10000**omega
  out = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int | None = None, cls_token: bool = True) -> np.ndarray:
  """[(1 +) grid_h * grid_w, dim] float32 table with an all-zero cls row first when `cls_token`.

  The released weights come from `meshgrid(w, h)`, so the first half of the channels encodes the
  column index and the second half the row index; positions are flattened row-major.
  """
  grid_w = grid_h if grid_w is None else grid_w
  cols, rows = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))
  emb = np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)
  if cls_token:
    emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
  return emb.astype(np.float32)


def resize_pos_embed(pos_embed: np.ndarray, new_grid: int, num_prefix: int = 1) -> np.ndarray:
  """Bicubic resize of a learned [prefix + g*g, D] table to a new square grid.

  Used when a checkpoint was trained at another resolution. Prefix rows (cls) are kept as they are.
  Fixed sin-cos tables never need this: they are rebuilt for the new grid instead.
  """
  import jax  # local: keep this module importable without jax for tooling

  prefix, grid_tokens = pos_embed[:num_prefix], pos_embed[num_prefix:]
  old = int(round(np.sqrt(grid_tokens.shape[0])))
  if old * old != grid_tokens.shape[0]:
    raise ValueError(f"position table of {grid_tokens.shape[0]} patch rows is not a square grid.")
  if old == new_grid:
    return pos_embed
  dim = grid_tokens.shape[-1]
  grid = grid_tokens.reshape(old, old, dim)
  resized = np.asarray(jax.image.resize(grid, (new_grid, new_grid, dim), method="cubic"))
  return np.concatenate([prefix, resized.reshape(new_grid * new_grid, dim)], axis=0)

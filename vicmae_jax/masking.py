"""Patchify and per-sample random masking: pure functions with static shapes
(docs/decisions.md#masking, #losses)."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """[N, H, W, C] -> [N, (H/p)*(W/p), p*p*C], channel fastest, then column, then row in a patch.

  This is the order of MAE's `patchify` and of the reconstruction targets, and the order the
  patch-embedding kernel is laid out in.
  """
  n, h, w, c = images.shape
  gh, gw = h // patch, w // patch
  x = images.reshape(n, gh, patch, gw, patch, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, gh * gw, patch * patch * c)


def unpatchify(patches: jax.Array, patch: int, channels: int = 3) -> jax.Array:
  """Inverse of `patchify` for a square grid: [N, L, p*p*C] -> [N, H, W, C]."""
  n, length, _ = patches.shape
  g = int(round(length**0.5))
  x = patches.reshape(n, g, g, patch, patch, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, g * patch, g * patch, channels)


class Masking(NamedTuple):
  ids_keep: jax.Array     # [N, len_keep] int32, indices of the visible patches
  ids_restore: jax.Array  # [N, L] int32, argsort of the shuffle (un-shuffles decoder tokens)
  mask: jax.Array         # [N, L] float32, 1 = removed, 0 = kept, in the original patch order


def uniform_noise(rng: jax.Array, n: int, length: int) -> jax.Array:
  """[n, length] U(0, 1) noise: `random_masking` of it masks each sample independently."""
  return jax.random.uniform(rng, (n, length))


def random_masking(noise: jax.Array, len_keep: int) -> Masking:
  """Masks per sample by argsort of uniform `noise` [N, L]: the `len_keep` smallest stay visible.

  Passing the same noise as Hugging Face ViTMAE or the released code reproduces their masks.
  """
  n, length = noise.shape
  ids_shuffle = jnp.argsort(noise, axis=1)
  ids_restore = jnp.argsort(ids_shuffle, axis=1)
  ids_keep = ids_shuffle[:, :len_keep]
  mask = jnp.concatenate(
      [jnp.zeros((n, len_keep), jnp.float32), jnp.ones((n, length - len_keep), jnp.float32)], axis=1)
  mask = jnp.take_along_axis(mask, ids_restore, axis=1)
  return Masking(ids_keep.astype(jnp.int32), ids_restore.astype(jnp.int32), mask)


def gather_tokens(x: jax.Array, ids: jax.Array) -> jax.Array:
  """x[n, ids[n, j], :] for every n, j."""
  return jnp.take_along_axis(x, ids[..., None], axis=1)

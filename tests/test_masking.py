"""Patchify order and random masking: counts, disjointness, reproducibility."""
import jax
import jax.numpy as jnp
import numpy as np

from vicmae_jax import masking


def test_patchify_matches_mae_einsum():
  rng = np.random.default_rng(0)
  imgs = rng.normal(size=(2, 3, 32, 48)).astype(np.float32)  # NCHW as MAE
  p = 8
  n, c, h, w = imgs.shape
  x = imgs.reshape(n, c, h // p, p, w // p, p)
  ref = np.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)
  ours = masking.patchify(jnp.asarray(imgs.transpose(0, 2, 3, 1)), p)
  np.testing.assert_array_equal(np.asarray(ours), ref)


def test_unpatchify_inverts_patchify():
  imgs = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  np.testing.assert_array_equal(masking.unpatchify(masking.patchify(imgs, 4), 4), imgs)


def test_mask_counts_and_disjointness():
  noise = jax.random.uniform(jax.random.key(1), (5, 196))
  m = masking.random_masking(noise, 98)
  assert m.ids_keep.shape == (5, 98) and m.mask.shape == (5, 196)
  np.testing.assert_array_equal(m.mask.sum(1), np.full(5, 98))
  for i in range(5):
    keep = set(np.asarray(m.ids_keep[i]).tolist())
    masked = set(np.flatnonzero(np.asarray(m.mask[i])).tolist())
    assert len(keep) == 98 and not keep & masked and len(keep | masked) == 196


def test_visible_patches_are_the_smallest_noise_and_restore_inverts():
  noise = jax.random.uniform(jax.random.key(2), (3, 16))
  m = masking.random_masking(noise, 4)
  for i in range(3):
    np.testing.assert_array_equal(np.sort(np.asarray(m.ids_keep[i])),
                                  np.sort(np.argsort(np.asarray(noise[i]))[:4]))
  shuffled = jnp.argsort(noise, axis=1)
  np.testing.assert_array_equal(jnp.take_along_axis(shuffled, m.ids_restore, axis=1),
                                np.tile(np.arange(16), (3, 1)))


def test_same_noise_same_mask_and_fresh_noise_differs():
  noise = jax.random.uniform(jax.random.key(3), (2, 64))
  a, b = masking.random_masking(noise, 32), masking.random_masking(noise, 32)
  np.testing.assert_array_equal(a.mask, b.mask)
  c = masking.random_masking(jax.random.uniform(jax.random.key(4), (2, 64)), 32)
  assert not np.array_equal(a.mask, c.mask)


def test_gather_tokens():
  x = jnp.arange(2 * 5 * 3).reshape(2, 5, 3)
  ids = jnp.array([[4, 0], [1, 1]])
  np.testing.assert_array_equal(masking.gather_tokens(x, ids), np.asarray(x)[[[0], [1]], ids])


def test_uniform_noise_masks_each_sample_independently():
  noise = masking.uniform_noise(jax.random.key(0), 4, 16)
  assert noise.shape == (4, 16) and float(noise.min()) >= 0.0 and float(noise.max()) < 1.0
  m = masking.random_masking(noise, 4)
  assert (m.mask.sum(axis=1) == 12).all()
  assert len({tuple(map(int, row)) for row in m.ids_keep}) == 4  # different samples, different masks

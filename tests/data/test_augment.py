"""Two-view augmentations (docs/data.md section 5): shapes, determinism, semantics of each op."""
import dataclasses

import numpy as np

from vicmae_jax.data import augment

IMG = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
OFF = augment.AugmentConfig(size=32, scale=(1.0, 1.0), ratio=(1.5, 1.5), flip_p=0, jitter_p=0,
                            gray_p=0, blur_p=0, solarize_p=0)


def test_contract_shapes_and_dtypes():
  v1, v2 = augment.two_views(IMG, IMG, np.random.default_rng(0), augment.AugmentConfig(size=48))
  assert v1.shape == v2.shape == (48, 48, 3) and v1.dtype == v2.dtype == np.float32
  u1, _ = augment.two_views(IMG, IMG, np.random.default_rng(0),
                            augment.AugmentConfig(size=48, uint8_output=True))
  assert u1.dtype == np.uint8
  np.testing.assert_allclose(augment.normalize(u1.astype(np.float32)), v1, atol=0.03)


def test_same_generator_state_same_views():
  cfg = augment.AugmentConfig(size=32)
  a = augment.two_views(IMG, IMG, np.random.default_rng(5), cfg)
  b = augment.two_views(IMG, IMG, np.random.default_rng(5), cfg)
  c = augment.two_views(IMG, IMG, np.random.default_rng(6), cfg)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c[0])


def test_normalisation_uses_imagenet_statistics():
  flat = np.full((60, 90, 3), 200, np.uint8)
  v1, _ = augment.two_views(flat, flat, np.random.default_rng(0), OFF)
  np.testing.assert_allclose(v1[0, 0], (200 / 255 - augment.MEAN) / augment.STD, rtol=1e-5)


def test_crop_box_bounds_and_fallback():
  rng = np.random.default_rng(0)
  for _ in range(200):
    top, left, h, w = augment.crop_box(rng, 60, 90, (0.08, 1.0), (3 / 4, 4 / 3))
    assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 90
  # An impossible request falls back to the central crop with the closest allowed ratio.
  assert augment.crop_box(rng, 100, 10, (2.0, 3.0), (3 / 4, 4 / 3)) == (43, 0, 13, 10)


def test_hue_rotation_keeps_grays_and_is_identity_at_zero():
  np.testing.assert_allclose(augment._hue_matrix(0.0), np.eye(3), atol=1e-6)
  np.testing.assert_allclose(augment._hue_matrix(0.1) @ np.ones(3), np.ones(3), atol=1e-6)


def test_solarisation_only_on_view_two_and_blur_only_on_view_one():
  ramp = np.tile(np.linspace(0, 255, 90, dtype=np.uint8)[None, :, None], (60, 1, 3))
  sol = dataclasses.replace(OFF, solarize_p=1.0, uint8_output=True)
  v1, v2 = augment.two_views(ramp, ramp, np.random.default_rng(0), sol)
  assert v1.max() > 200 and v2.max() <= 128  # inverted above the 128 threshold
  blur = dataclasses.replace(OFF, blur_p=1.0, blur_sigma=(2.0, 2.0))
  noise = np.random.default_rng(1).integers(0, 256, (60, 90, 3), dtype=np.uint8)
  v1, v2 = augment.two_views(noise, noise, np.random.default_rng(0), blur)
  assert v1.std() < 0.7 * v2.std()


def test_grayscale_and_jitter_probabilities():
  gray = dataclasses.replace(OFF, gray_p=1.0)
  v1, _ = augment.two_views(IMG, IMG, np.random.default_rng(0), gray)
  raw = v1 * augment.STD + augment.MEAN  # back to 0-1: equal channels
  np.testing.assert_allclose(raw[..., 0], raw[..., 1], atol=1e-5)
  jit = dataclasses.replace(OFF, jitter_p=1.0)
  a, _ = augment.two_views(IMG, IMG, np.random.default_rng(0), jit)
  b, _ = augment.two_views(IMG, IMG, np.random.default_rng(0), OFF)
  assert not np.allclose(a, b)


def test_spatial_only_is_crop_and_flip():
  cfg = augment.AugmentConfig(size=32, spatial_only=True, jitter_p=1.0, gray_p=1.0, blur_p=1.0,
                              solarize_p=1.0)
  rng = np.random.default_rng(0)
  flat = np.full((60, 90, 3), 90, np.uint8)
  v1, v2 = augment.two_views(flat, flat, rng, cfg)  # no colour op can touch a flat image's value
  np.testing.assert_allclose(v1, v2, atol=1e-6)
  np.testing.assert_allclose(v1[0, 0], (90 / 255 - augment.MEAN) / augment.STD, rtol=1e-5)
  for _ in range(50):
    top, left, h, w = augment.crop_box(rng, 60, 90, cfg.spatial_only_scale, cfg.ratio)
    assert h * w >= 0.45 * 60 * 90

"""Sin-cos tables bit for bit against the released constructions (ViC-MAE's float32, MAE's float64)
and Hugging Face's; the bicubic resize against torch / timm."""
import numpy as np
import pytest

from vicmae_jax.models.posembed import (MAE_DTYPE, VICMAE_DTYPE, bicubic_matrix, resize_pos_embed,
                                        sincos_2d)

WIDTHS_AND_GRIDS = [(768, 14), (1024, 14), (512, 14), (384, 14), (256, 14), (1280, 16),
                    (192, 7), (32, 8), (64, 24), (16, 1)]


def _release_table(dim, grid_h, grid_w, freq_dtype):
  """The released algorithm, step by step (written out here, not imported).

  Grid coordinates are float32 aranges combined as meshgrid(w, h), so the first map holds the
  column. Per half of the channels (column half first, then row half): frequencies
  k / (half / 2) for k < half / 2, an arange of `freq_dtype` divided in place; omega =
  1 / 10000**f; the outer product of the flattened coordinates and omega (numpy's promotion
  decides its dtype: float32 x float32 in ViC-MAE, float32 x float64 in MAE); sin block then cos
  block. A float64 zero row for cls is stacked on top, and the model copies the table in as
  float32.
  """
  w = np.arange(grid_w, dtype=np.float32)
  h = np.arange(grid_h, dtype=np.float32)
  maps = np.stack(np.meshgrid(w, h), axis=0)
  halves = []
  for coord in (maps[0], maps[1]):
    half = dim // 2
    freq = np.arange(half // 2, dtype=freq_dtype)
    freq /= half / 2.0
    omega = 1.0 / 10000**freq
    angle = np.einsum("m,d->md", coord.reshape(-1), omega)
    halves.append(np.concatenate([np.sin(angle), np.cos(angle)], axis=1))
  table = np.concatenate(halves, axis=1)
  table = np.concatenate([np.zeros([1, dim]), table], axis=0)
  return table.astype(np.float32)


@pytest.mark.parametrize("dim, grid", WIDTHS_AND_GRIDS)
def test_bit_equal_to_the_vicmae_release(dim, grid):
  """The default: ViC-MAE's util/pos_embed.py, every step in float32."""
  ref = _release_table(dim, grid, grid, np.float32)
  np.testing.assert_array_equal(sincos_2d(dim, grid), ref)
  np.testing.assert_array_equal(sincos_2d(dim, grid, dtype=VICMAE_DTYPE), ref)


@pytest.mark.parametrize("dim, grid", WIDTHS_AND_GRIDS)
def test_bit_equal_to_mae_with_float64(dim, grid):
  """MAE's original asked for np.float (float64) frequencies: `dtype=MAE_DTYPE`."""
  np.testing.assert_array_equal(sincos_2d(dim, grid, dtype=MAE_DTYPE),
                                _release_table(dim, grid, grid, np.float64))


@pytest.mark.parametrize("dim, grid_h, grid_w", [(768, 14, 10), (64, 3, 9), (32, 8, 1)])
def test_non_square_grid_follows_the_same_rule(dim, grid_h, grid_w):
  np.testing.assert_array_equal(sincos_2d(dim, grid_h, grid_w),
                                _release_table(dim, grid_h, grid_w, np.float32))


def test_float32_and_float64_tables_differ_by_rounding_only():
  """The two releases' tables are not the same bits (up to ~7e-7 apart at 768 x 14 x 14)."""
  f32, f64 = sincos_2d(768, 14), sincos_2d(768, 14, dtype=MAE_DTYPE)
  assert (f32 != f64).any()
  assert np.abs(f32 - f64).max() < 2e-6


def test_cls_row_is_zero_and_shape():
  table = sincos_2d(64, 7)
  assert table.shape == (50, 64) and table.dtype == np.float32
  assert not table[0].any()
  assert sincos_2d(64, 7, cls_token=False).shape == (49, 64)
  with pytest.raises(ValueError, match="even"):
    sincos_2d(66, 7)


def test_matches_hugging_face():
  torch = pytest.importorskip("torch")
  vit_mae = pytest.importorskip("transformers.models.vit_mae.modeling_vit_mae")
  build = getattr(vit_mae, "build_2d_sinusoidal_position_embedding", None)
  if build is None:
    pytest.skip("this transformers version has no build_2d_sinusoidal_position_embedding")
  hf = build(height=14, width=14, embed_dim=768, cls_token=True)
  half = hf.shape[-1] // 2
  # HF builds [h | w] and rotates the halves to MAE's [w | h] order for pretrained weights.
  hf = torch.cat([hf[..., half:], hf[..., :half]], dim=-1).numpy()
  np.testing.assert_allclose(sincos_2d(768, 14), hf, atol=1e-5)


# ---- bicubic resize ------------------------------------------------------------------------

RESIZES = [((14, 14), (16, 16)), ((14, 14), (24, 24)), ((16, 16), (14, 14)), ((14, 14), (7, 7)),
           ((14, 14), (12, 20)), ((10, 6), (20, 9)), ((7, 9), (5, 4)), ((3, 3), (30, 30))]


def _timm_resample(torch, table, new_hw, old_hw, num_prefix, antialias):
  """timm's `resample_abs_pos_embed` when timm imports; otherwise its steps with torch: split off
  the prefix rows, [1, h, w, D] -> NCHW, float32 `F.interpolate(size=new, mode="bicubic",
  align_corners=False, antialias=...)`, back to rows, prefix in front."""
  x = torch.from_numpy(table)[None]
  try:
    from timm.layers import resample_abs_pos_embed
  except ImportError:  # timm needs torchvision, which this environment may not have
    pass
  else:
    return resample_abs_pos_embed(x, list(new_hw), list(old_hw), num_prefix_tokens=num_prefix,
                                  antialias=antialias)[0].numpy()
  prefix, grid = x[:, :num_prefix], x[:, num_prefix:]
  grid = grid.reshape(1, old_hw[0], old_hw[1], -1).permute(0, 3, 1, 2)
  grid = torch.nn.functional.interpolate(grid, size=new_hw, mode="bicubic", align_corners=False,
                                         antialias=antialias)
  grid = grid.permute(0, 2, 3, 1).reshape(1, -1, table.shape[-1])
  return torch.cat([prefix, grid], dim=1)[0].numpy()


@pytest.mark.parametrize("old_hw, new_hw", RESIZES)
@pytest.mark.parametrize("num_prefix", [0, 1, 2])
@pytest.mark.parametrize("antialias", [False, True])
def test_resize_matches_timm_and_torch(old_hw, new_hw, num_prefix, antialias):
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(sum(old_hw) * 100 + sum(new_hw))
  table = rng.normal(size=(num_prefix + old_hw[0] * old_hw[1], 24)).astype(np.float32)
  ours = resize_pos_embed(table, new_hw, num_prefix=num_prefix, old_grid=old_hw,
                          antialias=antialias)
  ref = _timm_resample(torch, table, new_hw, old_hw, num_prefix, antialias)
  assert ours.shape == ref.shape == (num_prefix + new_hw[0] * new_hw[1], 24)
  assert ours.dtype == np.float32
  np.testing.assert_array_equal(ours[:num_prefix], table[:num_prefix])
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_resize_of_a_sincos_table_matches_mae_interpolate():
  """The released fine-tuning's `interpolate_pos_embed` on a real table, 14 -> 16 (224 -> 256 px)."""
  torch = pytest.importorskip("torch")
  table = sincos_2d(768, 14)
  ours = resize_pos_embed(table, 16)
  ref = _timm_resample(torch, table, (16, 16), (14, 14), 1, antialias=False)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
  # Not the same as rebuilding the table for the new grid: resizing is for learned tables.
  assert np.abs(ours - sincos_2d(768, 16)).max() > 0.1


def test_bicubic_matrix_rows_sum_to_one_and_identity():
  for in_size, out_size in [(14, 16), (16, 14), (5, 17), (9, 2)]:
    for aa in (False, True):
      np.testing.assert_allclose(bicubic_matrix(in_size, out_size, aa).sum(1), 1.0, atol=1e-12)
  np.testing.assert_allclose(bicubic_matrix(7, 7), np.eye(7), atol=1e-15)


def test_resize_keeps_cls_and_identity():
  table = np.random.default_rng(0).normal(size=(1 + 16, 8)).astype(np.float32)
  np.testing.assert_array_equal(resize_pos_embed(table, 4), table)
  bigger = resize_pos_embed(table, 6)
  assert bigger.shape == (37, 8)
  np.testing.assert_array_equal(bigger[0], table[0])
  with pytest.raises(ValueError, match="square"):
    resize_pos_embed(table[:-1], 6)
  with pytest.raises(ValueError, match="old_grid"):
    resize_pos_embed(table, 6, old_grid=(3, 4))

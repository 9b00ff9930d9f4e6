"""Sin-cos tables against MAE's construction and Hugging Face's implementation."""
import numpy as np
import pytest

from vicmae_jax.models.posembed import resize_pos_embed, sincos_2d


def _mae_reference(embed_dim, grid_size):
  """MAE's util/pos_embed.py algorithm, step by step (meshgrid(w, h): first map is the column)."""
  grid_h = np.arange(grid_size, dtype=np.float32)
  grid_w = np.arange(grid_size, dtype=np.float32)
  grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, grid_size, grid_size)

  def one_d(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
  return np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)


@pytest.mark.parametrize("dim, grid", [(768, 14), (1024, 14), (512, 14), (1280, 16), (32, 8)])
def test_matches_mae_construction(dim, grid):
  np.testing.assert_allclose(sincos_2d(dim, grid), _mae_reference(dim, grid), atol=1e-6)


def test_cls_row_is_zero_and_shape():
  table = sincos_2d(64, 7)
  assert table.shape == (50, 64)
  assert not table[0].any()
  assert sincos_2d(64, 7, cls_token=False).shape == (49, 64)


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


def test_resize_keeps_cls_and_identity():
  table = np.random.default_rng(0).normal(size=(1 + 16, 8)).astype(np.float32)
  np.testing.assert_array_equal(resize_pos_embed(table, 4), table)
  bigger = resize_pos_embed(table, 6)
  assert bigger.shape == (37, 8)
  np.testing.assert_array_equal(bigger[0], table[0])
  with pytest.raises(ValueError, match="square"):
    resize_pos_embed(table[:-1], 6)

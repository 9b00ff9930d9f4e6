"""Robust image decoding: every awkward kind found in real datasets comes out as 8-bit RGB."""
import numpy as np
import pytest

from vicmae_jax.data import images, synthetic
from vicmae_jax.data.badinput import BadInput


@pytest.mark.parametrize('kind', ['rgb_jpeg', 'gray_jpeg', 'cmyk_jpeg', 'rgba_png', 'gray16_png',
                                  'palette_png', 'png'])
def test_every_kind_decodes_to_rgb(kind):
  img = images.decode_image(synthetic.image_bytes(kind, size=(80, 60)))
  assert img.shape == (60, 80, 3) and img.dtype == np.uint8
  assert 60 < img.mean() < 200  # not black, not clipped


def test_cmyk_colours_match_rgb():
  rgb = images.decode_image(synthetic.image_bytes('rgb_jpeg')).astype(float)
  cmyk = images.decode_image(synthetic.image_bytes('cmyk_jpeg')).astype(float)
  assert np.abs(rgb - cmyk).mean() < 6


def test_sixteen_bit_uses_the_full_range():
  img = images.decode_image(synthetic.image_bytes('gray16_png'))
  assert img.max() >= 250 and img.min() <= 5  # rescaled, not clipped at 255/65535


def test_alpha_is_composited_not_dropped():
  img = images.decode_image(synthetic.image_bytes('rgba_png'))
  rgb = images.decode_image(synthetic.image_bytes('png')).astype(float)
  # 50% alpha over the mean colour: halfway between the image and (124, 116, 104).
  expected = 0.5 * rgb + 0.5 * np.array([124, 116, 104])
  assert np.abs(img - expected).mean() < 2


def test_png_named_jpeg_and_large_images(tmp_path):
  path = tmp_path / 'n02105855_2933.JPEG'
  path.write_bytes(synthetic.image_bytes('png'))
  assert images.read_image(str(path)).shape == (60, 80, 3)
  big = images.decode_image(synthetic.image_bytes('large_jpeg'), max_side=1024)
  assert max(big.shape[:2]) == 1024 and big.shape[2] == 3


@pytest.mark.parametrize('data,kind', [(b'', 'empty'), (b'not an image at all' * 10, 'corrupt_image')])
def test_bad_bytes(data, kind):
  with pytest.raises(BadInput) as e:
    images.decode_image(data)
  assert e.value.kind == kind


def test_truncated_and_missing(tmp_path):
  data = synthetic.image_bytes('rgb_jpeg', size=(400, 300))
  with pytest.raises(BadInput) as e:
    images.decode_image(data[:len(data) // 2])
  assert e.value.kind == 'corrupt_image'
  with pytest.raises(BadInput) as e:
    images.read_image(str(tmp_path / 'nope.jpg'))
  assert e.value.kind == 'missing'

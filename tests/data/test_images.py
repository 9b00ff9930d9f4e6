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


def test_huge_jpeg_decodes_reduced_and_bombs_name_the_rule(tmp_path):
  """A real 14000x14000 JPEG (over PIL's own bomb limit) decodes at reduced scale; an image whose
  decode would exceed max_pixels is refused, and the message says by which rule."""
  import io
  import time

  from PIL import Image
  buf = io.BytesIO()
  Image.new('L', (14000, 14000), 128).save(buf, 'JPEG', quality=50)
  path = tmp_path / 'huge.jpg'
  path.write_bytes(buf.getvalue())
  t0 = time.perf_counter()
  img = images.read_image(str(path), max_side=1024)
  assert img.shape == (1024, 1024, 3) and abs(int(img.mean()) - 128) <= 1
  assert time.perf_counter() - t0 < 10   # DCT-scaled: not a 196 Mpx decode
  png = io.BytesIO()
  Image.new('RGB', (3000, 2000), (10, 20, 30)).save(png, 'PNG')
  with pytest.raises(BadInput, match=r'max_pixels: 3000x2000 PNG would decode to 6,000,000 '
                                     r'pixels, over the limit 1,000,000') as e:
    images.decode_image(png.getvalue(), 1024, 'bomb.png', max_pixels=1_000_000)
  assert e.value.kind == 'corrupt_image'
  # The same pixels as a JPEG decode at 1/2 scale (1500x1000): under the limit.
  jpg = io.BytesIO()
  Image.new('RGB', (3000, 2000), (10, 20, 30)).save(jpg, 'JPEG')
  assert images.decode_image(jpg.getvalue(), 512, 'ok.jpg', max_pixels=2_000_000).shape[1] == 512

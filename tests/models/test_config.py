"""ModelConfig: table lookups, overrides and validation errors."""
import pytest

from vicmae_jax.models import ENCODERS, model_config


def test_every_variant_resolves():
  for variant in ENCODERS:
    cfg = model_config(variant, image_size=28 if "/14" in variant else 32)
    assert cfg.width == ENCODERS[variant].width
    assert cfg.decoder_width is not None


def test_overrides_win_over_the_table():
  cfg = model_config("B/16", decoder_depth=1, decoder_width=256, decoder_heads=8)
  assert (cfg.decoder_depth, cfg.decoder_width) == (1, 256)
  assert cfg.depth == 12


def test_len_keep_truncates_like_the_released_code():
  assert model_config("B/16", mask_ratio=0.5).len_keep == 98
  assert model_config("B/16", mask_ratio=0.75).len_keep == 49
  assert model_config("H/14").len_keep == 128


@pytest.mark.parametrize("kwargs, message", [
    (dict(variant="Q/16"), "Unknown model variant"),
    (dict(variant="B/16", mask_ratio=1.0), "mask_ratio"),
    (dict(variant="B/16", mask_ratio=0.0), "mask_ratio"),
    (dict(variant="B/16", image_size=100), "multiple of patch"),
    (dict(variant="B/16", pooling="gem"), "pooling"),
    (dict(variant="B/16", contrastive_mode="byol"), "contrastive_mode"),
    (dict(variant="B/16", dtype="int8"), "dtype"),
])
def test_bad_values_fail_with_a_clear_message(kwargs, message):
  variant = kwargs.pop("variant")
  with pytest.raises(ValueError, match=message):
    model_config(variant, **kwargs)

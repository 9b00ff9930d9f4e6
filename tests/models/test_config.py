"""ModelConfig: table lookups, overrides and validation errors."""
import jax
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


def test_dtype_defaults_to_auto_and_resolves_for_a_platform():
  cfg = model_config("test")
  assert cfg.dtype == "auto"
  assert cfg.for_platform("tpu").dtype == cfg.for_platform("gpu").dtype == "bfloat16"
  assert cfg.for_platform("cpu").dtype == "float32"
  explicit = model_config("test", dtype="float32")
  assert explicit.for_platform("tpu") is explicit   # an explicit dtype wins everywhere


def test_a_model_built_directly_takes_the_dtype_of_the_platform_it_is_built_for():
  """A config that reaches a model unresolved gets the dtype of the program being built (the
  trainers resolve it from their mesh before that; outside any scope: this process's CPU)."""
  import jax.numpy as jnp
  from flax import nnx

  from vicmae_jax import hardware
  from vicmae_jax.models import ViCMAE
  from vicmae_jax.models.classifier import Classifier

  cfg = model_config("test", image_size=16, projector_hidden=32, predictor_hidden=32)
  cpu = ViCMAE(cfg, rngs=nnx.Rngs(0))
  with hardware.building_for("tpu"):
    tpu = ViCMAE(cfg, rngs=nnx.Rngs(0))
    classifier = Classifier(cfg, 3, rngs=nnx.Rngs(0))
  assert cpu.cfg.dtype == "float32" and cpu.encoder.blocks[0].mlp.fc1.dtype == jnp.float32
  assert tpu.cfg.dtype == tpu.encoder.cfg.dtype == tpu.decoder.cfg.dtype == "bfloat16"
  assert tpu.encoder.blocks[0].mlp.fc1.dtype == jnp.bfloat16
  assert classifier.cfg.dtype == "bfloat16" and classifier.head.dtype == jnp.bfloat16
  # Params are float32 whatever the compute dtype.
  assert {x.dtype for x in jax.tree.leaves(nnx.state(tpu, nnx.Param))} == {jnp.dtype("float32")}

"""Hand-written LayerNorm backward vs autodiff of Flax's nnx.LayerNorm (an outside formula), and
which platforms' programs use it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vicmae_jax import hardware
from vicmae_jax.models import layernorm, layers


def test_layer_norm_matches_flax_values_and_gradients():
  x = 3.0 * jax.random.normal(jax.random.key(0), (4, 7, 32)) + 1.0
  scale = jax.random.normal(jax.random.key(1), (32,))
  bias = jax.random.normal(jax.random.key(2), (32,))
  probe = jax.random.normal(jax.random.key(3), x.shape)
  ref = nnx.LayerNorm(32, epsilon=1e-6, rngs=nnx.Rngs(0))
  ref.scale[...], ref.bias[...] = scale, bias

  def ours(x, s, b):
    return jnp.sum(layernorm.layer_norm(x, s, b, 1e-6) * probe)

  graphdef, _ = nnx.split(ref)

  def theirs(x, s, b):
    model = nnx.merge(graphdef, nnx.State({"scale": nnx.Param(s), "bias": nnx.Param(b)}))
    return jnp.sum(model(x) * probe)

  np.testing.assert_allclose(layernorm.layer_norm(x, scale, bias, 1e-6), ref(x), atol=1e-5)
  got = jax.jit(jax.grad(ours, argnums=(0, 1, 2)))(x, scale, bias)
  want = jax.grad(theirs, argnums=(0, 1, 2))(x, scale, bias)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_layer_norm_module_keeps_flax_parameter_names_and_bfloat16_output():
  norm = layers.layer_norm(16, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  assert set(nnx.to_pure_dict(nnx.state(norm, nnx.Param))) == {"scale", "bias"}
  y = norm(jnp.arange(32.0).reshape(2, 16))
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32).mean(-1), 0.0, atol=2e-2)


def test_a_seed_builds_the_same_model_as_with_flax_layernorm():
  """Our LayerNorm draws the keys nnx.LayerNorm draws, so later layers' init is unchanged."""
  def build(norm_factory):
    rngs = nnx.Rngs(0)
    norm_factory(rngs)
    return layers.dense(8, 8, dtype=jnp.float32, rngs=rngs).kernel[...]

  ours = build(lambda r: layers.layer_norm(8, dtype=jnp.float32, rngs=r))
  flax_ln = build(lambda r: nnx.LayerNorm(8, rngs=r))
  np.testing.assert_array_equal(ours, flax_ln)


@pytest.mark.parametrize("platform", ["cpu", "tpu", "gpu"])
def test_the_platform_picks_the_backward_pass_and_the_gradients_agree(platform):
  """Closed form where `hardware.layernorm_vjp()` (CPU, TPU), autodiff elsewhere (GPU): the
  program says which (the closed form's named scope), and both give the same gradients."""
  x = 3.0 * jax.random.normal(jax.random.key(0), (4, 7, 32)) + 1.0
  scale = jax.random.normal(jax.random.key(1), (32,))
  bias = jax.random.normal(jax.random.key(2), (32,))
  probe = jax.random.normal(jax.random.key(3), x.shape)

  def loss(x, s, b):
    return jnp.sum(layernorm.layer_norm(x, s, b, 1e-6) * probe)

  grad = jax.jit(hardware.bind(jax.grad(loss, argnums=(0, 1, 2)), platform))
  text = grad.lower(x, scale, bias).as_text(debug_info=True)
  assert (layernorm.BWD_SCOPE in text) == (platform in hardware.LAYERNORM_VJP_PLATFORMS)
  want = jax.jit(hardware.bind(jax.grad(loss, argnums=(0, 1, 2)), "cpu"))(x, scale, bias)
  for a, b in zip(grad(x, scale, bias), want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

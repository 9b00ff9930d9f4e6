"""Hand-written attention backward vs autodiff of jax.nn.dot_product_attention."""
import jax
import jax.numpy as jnp
import numpy as np

from vicmae_jax.models import attention


def _reference(qkv):
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  return jax.nn.dot_product_attention(q, k, v)


def test_attention_values_and_gradients_equal_dot_product_attention():
  qkv = jax.random.normal(jax.random.key(0), (3, 11, 3, 2, 8))
  probe = jax.random.normal(jax.random.key(1), (3, 11, 2, 8))
  np.testing.assert_allclose(attention.attention(qkv), _reference(qkv), atol=1e-6)
  got = jax.jit(jax.grad(lambda t: jnp.sum(attention.attention(t) * probe)))(qkv)
  want = jax.grad(lambda t: jnp.sum(_reference(t) * probe))(qkv)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_attention_bfloat16_keeps_dtypes():
  qkv = jax.random.normal(jax.random.key(2), (2, 5, 3, 2, 4)).astype(jnp.bfloat16)
  y = attention.attention(qkv)
  g = jax.grad(lambda t: jnp.sum(attention.attention(t).astype(jnp.float32)))(qkv)
  assert y.dtype == g.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(_reference(qkv), np.float32),
                             atol=3e-2)


def test_bfloat16_attention_products_stay_bfloat16_when_compiled(dot_operand_dtypes):
  """Forward and backward: no bf16 product is upcast to fp32 by XLA:CPU (see models/linear.py)."""
  qkv = jax.random.normal(jax.random.key(3), (2, 24, 3, 2, 16))

  def loss(t):
    return jnp.sum(attention.attention(jnp.tanh(t).astype(jnp.bfloat16)).astype(jnp.float32) ** 2)

  text = jax.jit(jax.grad(loss)).lower(qkv).compile().as_text()
  dtypes = dot_operand_dtypes(text)
  # forward q k^T and p v (q k^T again for the saved probabilities is fine), backward 4 products
  assert len(dtypes) >= 6 and all(d == ("bf16", "bf16") for d in dtypes), dtypes


def test_accelerator_attention_keeps_bf16_logits_and_tracks_float32():
  """Built for TPU/GPU: the [T, T] logits leave the product in bf16 (the released autocast's
  precision), the softmax runs in float32, and the result stays within bf16 rounding of the
  float32 attention; a CPU program keeps float32 logits."""
  from vicmae_jax import hardware
  qkv = jax.random.normal(jax.random.key(4), (2, 13, 3, 2, 8))
  want = _reference(qkv)
  for platform, logits_dtype in (("tpu", jnp.bfloat16), ("cpu", jnp.float32)):
    with hardware.building_for(platform):
      jaxpr = jax.make_jaxpr(attention.attention)(qkv.astype(jnp.bfloat16))
      got = attention.attention(qkv.astype(jnp.bfloat16))
    dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    if platform == "tpu":
      assert dots[0].outvars[0].aval.dtype == logits_dtype  # q k^T
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), atol=3e-2)

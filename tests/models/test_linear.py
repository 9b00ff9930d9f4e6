"""The CPU-laid-out Dense matmul: same values and gradients as autodiff of x @ kernel."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vicmae_jax.models import linear


@pytest.mark.parametrize("k,n", [(8, 24), (24, 8)])  # both weight-gradient layouts
def test_linear_values_and_gradients_equal_autodiff(k, n):
  x = jax.random.normal(jax.random.key(0), (3, 5, k))
  w = jax.random.normal(jax.random.key(1), (k, n))
  probe = jax.random.normal(jax.random.key(2), (3, 5, n))

  def loss(f):
    return lambda x, w: jnp.sum(jnp.sin(f(x, w)) * probe)

  np.testing.assert_allclose(linear.linear(x, w), x @ w, rtol=1e-6, atol=1e-6)
  ours = jax.jit(jax.grad(loss(linear.linear), argnums=(0, 1)))(x, w)
  ref = jax.grad(loss(lambda a, b: a @ b), argnums=(0, 1))(x, w)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_weight_gradient_is_a_canonical_gemm_in_the_compiled_code():
  """The point of the custom VJP: no dot contracting dimension 0 of its left operand remains."""
  x = jnp.ones((64, 16))
  dy = jnp.ones((64, 48))
  hlo = jax.jit(linear.weight_gradient).lower(x, dy).compile().as_text()
  dots = [line for line in hlo.splitlines() if "lhs_contracting_dims" in line]
  assert dots and all("lhs_contracting_dims={1}" in line for line in dots), dots


def test_bfloat16_gradient_dtypes():
  x = jnp.ones((4, 8), jnp.bfloat16)
  w = jnp.ones((8, 16), jnp.bfloat16)
  dx, dw = jax.grad(lambda x, w: jnp.sum(linear.linear(x, w).astype(jnp.float32)),
                    argnums=(0, 1))(x, w)
  assert dx.dtype == dw.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(dw, np.float32), 4.0)

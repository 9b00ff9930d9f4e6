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


@pytest.mark.parametrize("k,n", [(8, 24), (24, 8)])
def test_linear_with_bias_equals_autodiff(k, n):
  x = jax.random.normal(jax.random.key(3), (2, 7, k))
  w = jax.random.normal(jax.random.key(4), (k, n))
  b = jax.random.normal(jax.random.key(5), (n,))
  probe = jax.random.normal(jax.random.key(6), (2, 7, n))

  def loss(f):
    return lambda x, w, b: jnp.sum(jnp.sin(f(x, w, b)) * probe)

  np.testing.assert_allclose(linear.linear(x, w, b), x @ w + b, rtol=1e-6, atol=1e-6)
  ours = jax.jit(jax.grad(loss(linear.linear), argnums=(0, 1, 2)))(x, w, b)
  ref = jax.grad(loss(lambda a, w, b: a @ w + b), argnums=(0, 1, 2))(x, w, b)
  for a, r in zip(ours, ref):
    np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,n", [(64, 192), (192, 64)])  # both weight-gradient layouts
def test_bfloat16_products_stay_bfloat16_in_the_compiled_backward_pass(k, n, dot_operand_dtypes):
  """XLA:CPU silently upcasts a bf16 dot whose operand is a transposed view (5x slower here):
  every product of the forward and backward pass must still multiply bf16 by bf16."""
  x = jnp.ones((256, k), jnp.float32)
  w = jnp.ones((k, n), jnp.float32)
  b = jnp.ones((n,), jnp.float32)
  bf16 = jnp.bfloat16

  def loss(x, w, b):
    y = linear.linear(jnp.tanh(x).astype(bf16), w.astype(bf16), b.astype(bf16))
    return jnp.sum(jnp.tanh(y).astype(jnp.float32) ** 2)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, w, b).compile()
  dtypes = dot_operand_dtypes(grads.as_text())
  assert len(dtypes) == 3 and all(d == ("bf16", "bf16") for d in dtypes), dtypes


def test_column_sum_is_the_float32_sum_over_rows():
  dy = jax.random.normal(jax.random.key(7), (300, 40)).astype(jnp.bfloat16)
  got = jax.jit(linear.column_sum)(dy)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, np.asarray(dy, np.float32).sum(0), rtol=1e-5, atol=1e-4)


def test_row_major_and_swap_last_keep_values():
  a = jax.random.normal(jax.random.key(8), (2, 3, 5)).astype(jnp.bfloat16)
  np.testing.assert_array_equal(jax.jit(linear.row_major)(a), a)
  np.testing.assert_array_equal(jax.jit(linear.swap_last)(a), jnp.swapaxes(a, -1, -2))
  np.testing.assert_array_equal(jax.jit(linear.rhs_transpose)(a.astype(jnp.float32)),
                                jnp.swapaxes(a, -1, -2).astype(jnp.float32))

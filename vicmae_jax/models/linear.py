"""The Dense layer's matmul, with a backward pass laid out for XLA:CPU's fast GEMM path.

XLA:CPU sends a dot to its fast GEMM library (YNNPACK) only when the left operand contracts its
last dimension. The weight gradient x^T @ dy contracts dimension 0 of both operands, and XLA folds
any transpose we write back into the dot's dimension numbers, so the weight gradient of every
Dense runs as a slower Eigen dot beside a transposed copy of one operand. The custom VJP below
materialises the transposed operand behind an optimisation barrier, so the product is a canonical
[K, M] @ [M, N] GEMM, and transposes the smaller of x and dy. On GPU and TPU transposes are free
inside the GEMM call, so `linear` is the plain product there and XLA derives the gradient itself.

Low precision on CPU: XLA:CPU runs a bf16 x bf16 dot on its AMX / AVX-512-BF16 GEMM only when the
dot's output is float32; with a bf16 output it converts and runs at fp32 speed or below. `matmul`
asks for a float32 result and rounds it once, which is also the accumulation GPUs and TPUs use.
XLA:CPU also decides whether a bf16 dot stays bf16 before it assigns layouts, from the operands'
layouts as the program writes them, and a transposed operand is written as a column-major view:
such a dot is upcast to fp32. `swap_last` gives low-precision transposes as row-major copies (a
flat reshape behind an optimisation barrier). Measured effect of each: docs/scaling.md, section 7.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vicmae_jax import hardware


def cpu_layout_vjps() -> bool:
  """Whether the hand-laid-out backward passes (here and in `attention`) are used: only in a
  program built for CPU (`hardware.cpu_layout_vjps`, from the platform set by the step's mesh).

  GPU and TPU compilers fold transposes into their GEMM calls, so autodiff is already right there.
  """
  return hardware.cpu_layout_vjps()


def _low_precision(a: jax.Array) -> bool:
  return jnp.finfo(a.dtype).bits < 32


def row_major(a: jax.Array) -> jax.Array:
  """a as a row-major array XLA:CPU can hand to a bf16 GEMM; fp32 arrays unchanged.

  A flat reshape forces the copy a transposed view needs, and the barrier keeps XLA from folding
  the reshapes away before it picks each dot's precision (module docstring).
  """
  if not _low_precision(a):
    return a
  return jax.lax.optimization_barrier(a.reshape(-1)).reshape(a.shape)


def swap_last(a: jax.Array) -> jax.Array:
  """a with its last two axes swapped, materialised, so XLA cannot fold it back into a dot."""
  t = jnp.swapaxes(a, -1, -2)
  return row_major(t) if _low_precision(a) else jax.lax.optimization_barrier(t)


def rhs_transpose(b: jax.Array) -> jax.Array:
  """b^T (last two axes) as a dot's right operand: a view in fp32, whose [M, K] @ [N, K]^T GEMM is
  fast on XLA:CPU, and on GPU/TPU; a row-major copy in low precision on CPU (module docstring)."""
  if cpu_layout_vjps() and _low_precision(b):
    return swap_last(b)
  return jnp.swapaxes(b, -1, -2)


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """`jnp.matmul(a, b)` in a's dtype; sub-fp32 inputs accumulate and leave the GEMM in float32 on
  CPU (the fast bf16 kernels, see the module docstring)."""
  if cpu_layout_vjps() and _low_precision(a):
    return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(a.dtype)
  return jnp.matmul(a, b)


def linear(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
  """x [..., K] @ kernel [K, N] (+ bias [N]) -> [..., N]; the values and gradients of the plain
  formula."""
  if not cpu_layout_vjps():
    return _affine(x, kernel, bias)
  lead = x.shape[:-1]
  y = _cpu_affine(x.reshape(-1, x.shape[-1]), kernel, bias)
  return y.reshape(lead + y.shape[-1:])


def _affine(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
  y = matmul(x, kernel)
  return y if bias is None else y + bias


_cpu_affine = jax.custom_vjp(_affine)


def _fwd(x: jax.Array, kernel: jax.Array, bias: jax.Array | None):
  return _affine(x, kernel, bias), (x, kernel, bias)


def _bwd(res, dy: jax.Array):
  x, kernel, bias = res
  dx = matmul(dy, rhs_transpose(kernel))
  db = None if bias is None else column_sum(dy).astype(bias.dtype)
  return dx, weight_gradient(x, dy).astype(kernel.dtype), db


def weight_gradient(x: jax.Array, dy: jax.Array) -> jax.Array:
  """x [M, K], dy [M, N] -> x^T @ dy [K, N] as a canonical GEMM (see the module docstring)."""
  k, n = x.shape[1], dy.shape[1]
  if k <= n:  # transposing x is the cheaper copy
    return matmul(swap_last(x), dy)
  # Transpose dy instead; the [N, K] product's small transpose is kept out of the dot by a barrier.
  return jax.lax.optimization_barrier(matmul(swap_last(dy), x)).T


def column_sum(dy: jax.Array) -> jax.Array:
  """dy [M, N] summed over M, in float32 (the bias gradient).

  XLA:CPU hands a reduce to its fast library kernel only when the reduced array is not a convert;
  otherwise it becomes a much slower tree of reduce-windows (docs/scaling.md, section 7). The
  barrier keeps the float32 copy a separate array.
  """
  if not _low_precision(dy):
    return jnp.sum(dy, axis=0)
  return jnp.sum(jax.lax.optimization_barrier(dy.astype(jnp.float32)), axis=0)


_cpu_affine.defvjp(_fwd, _bwd)

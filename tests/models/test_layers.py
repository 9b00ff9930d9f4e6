"""Building blocks against torch: BatchNorm1d semantics, exact GELU, init bounds."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vicmae_jax.models import layers


def test_batchnorm_matches_torch_batchnorm1d():
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).normal(2.0, 3.0, size=(16, 8)).astype(np.float32)
  bn = layers.BatchNorm(8)
  bn.scale[...] = jnp.linspace(0.5, 1.5, 8)
  bn.bias[...] = jnp.linspace(-1, 1, 8)
  ref = torch.nn.BatchNorm1d(8, eps=1e-5, momentum=0.1)
  with torch.no_grad():
    ref.weight.copy_(torch.linspace(0.5, 1.5, 8))
    ref.bias.copy_(torch.linspace(-1, 1, 8))
  for _ in range(3):  # running statistics follow torch's update, unbiased variance included
    y = bn(jnp.asarray(x), train=True)
    y_ref = ref.train()(torch.from_numpy(x))
  np.testing.assert_allclose(np.asarray(y), y_ref.detach().numpy(), atol=1e-5)
  np.testing.assert_allclose(bn.mean[...], ref.running_mean.numpy(), atol=1e-5)
  np.testing.assert_allclose(bn.var[...], ref.running_var.numpy(), atol=1e-5)
  y_eval = bn(jnp.asarray(x), train=False)
  np.testing.assert_allclose(np.asarray(y_eval), ref.eval()(torch.from_numpy(x)).detach().numpy(),
                             atol=1e-5)


def test_batchnorm_groups_are_normalised_independently():
  x = jax.random.normal(jax.random.key(0), (2, 4, 8)) * jnp.array([1.0, 5.0])[:, None, None]
  bn = layers.BatchNorm(8)
  y = bn(x, train=True)
  for g in range(2):
    np.testing.assert_allclose(y[g].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y[g].std(0), 1, atol=1e-2)


def test_mlp_uses_exact_gelu():
  mlp = layers.Mlp(4, 8, dtype=jnp.float32, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (3, 4))
  h = x @ mlp.fc1.kernel[...] + mlp.fc1.bias[...]
  exact = 0.5 * h * (1 + jax.scipy.special.erf(h / np.sqrt(2)))
  np.testing.assert_allclose(mlp(x), exact @ mlp.fc2.kernel[...] + mlp.fc2.bias[...], atol=1e-6)


def test_fused_qkv_xavier_bound_uses_the_fused_matrix():
  dim = 64
  attn = layers.Attention(dim, 4, dtype=jnp.float32, attention_impl=None, rngs=nnx.Rngs(0))
  bound = np.sqrt(6 / (dim + 3 * dim))
  kernel = np.asarray(attn.qkv.kernel[...])
  assert kernel.shape == (dim, 3 * dim)
  assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
  assert not np.asarray(attn.qkv.bias[...]).any()


def test_attention_matches_explicit_softmax():
  attn = layers.Attention(16, 2, dtype=jnp.float32, attention_impl=None, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(2), (2, 5, 16))
  qkv = (x @ attn.qkv.kernel[...] + attn.qkv.bias[...]).reshape(2, 5, 3, 2, 8)
  q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
  w = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(8), axis=-1)
  y = (w @ v).transpose(0, 2, 1, 3).reshape(2, 5, 16)
  np.testing.assert_allclose(attn(x), y @ attn.proj.kernel[...] + attn.proj.bias[...], atol=1e-5)


def test_mlp_head_shapes_and_bn_count():
  head = layers.MLPHead(32, 64, 16, hidden_layers=2, dtype=jnp.float32, rngs=nnx.Rngs(0))
  assert len(head.linears) == 3 and len(head.norms) == 2
  assert head(jnp.ones((2, 6, 32)), train=True).shape == (2, 6, 16)

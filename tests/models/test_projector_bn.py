"""Projector BatchNorm running statistics: one update per view, as the released code's one
projector call per view makes (docs/decisions.md, D9).

Expected values are computed by hand from each view's batch statistics with torch's update rule
(momentum 0.1): after views 1 and 2, r = 0.81 r + 0.09 s_1 + 0.1 s_2, s the batch mean or the
unbiased batch variance; normalisation in train mode uses each view's own (biased) statistics.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vicmae_jax.models import ViCMAE, model_config
from vicmae_jax.models.layers import BatchNorm, MLPHead


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """float64 (mean, biased var, unbiased var) over the batch axis of [N, C]."""
  x = x.astype(np.float64)
  return x.mean(0), x.var(0), x.var(0, ddof=1)


def _two_calls(r: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
  return 0.81 * r + 0.09 * s1 + 0.1 * s2


def _views(n=6, c=5, seed=0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  # Different location and scale per view, so an average of the two is visibly wrong.
  return np.stack([rng.normal(1.0, 2.0, (n, c)), rng.normal(-3.0, 0.5, (n, c))]).astype(np.float32)


def _bn_with_stats(c: int, seed: int = 1) -> tuple[BatchNorm, np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  r_mean = rng.normal(size=c).astype(np.float32)
  r_var = rng.uniform(0.5, 2.0, size=c).astype(np.float32)
  bn = BatchNorm(c)
  bn.mean[...] = jnp.asarray(r_mean)
  bn.var[...] = jnp.asarray(r_var)
  return bn, r_mean, r_var


def test_two_views_update_the_running_statistics_in_turn():
  x = _views()
  bn, r_mean, r_var = _bn_with_stats(x.shape[-1])
  y = np.asarray(bn(jnp.asarray(x), train=True))
  (m1, v1, u1), (m2, v2, u2) = _stats(x[0]), _stats(x[1])
  np.testing.assert_allclose(bn.mean[...], _two_calls(r_mean, m1, m2), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bn.var[...], _two_calls(r_var, u1, u2), rtol=1e-5, atol=1e-6)
  # One update with the views' mean would give 0.9 r + 0.1 (s_1 + s_2) / 2: not what happened.
  one = 0.9 * r_mean + 0.1 * (m1 + m2) / 2
  assert np.abs(np.asarray(bn.mean[...]) - one).max() > 0.05
  # Normalisation: each view by its own biased batch statistics.
  for v, (m, var) in enumerate([(m1, v1), (m2, v2)]):
    np.testing.assert_allclose(y[v], (x[v] - m) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)


def test_two_views_equal_two_calls_of_torch_batchnorm1d():
  """The released projector: torch BatchNorm1d(momentum 0.1) called on view 1, then view 2."""
  torch = pytest.importorskip("torch")
  x = _views(n=8, c=4, seed=3)
  bn, r_mean, r_var = _bn_with_stats(4, seed=4)
  ref = torch.nn.BatchNorm1d(4, eps=1e-5, momentum=0.1).train()
  with torch.no_grad():
    ref.running_mean.copy_(torch.from_numpy(r_mean))
    ref.running_var.copy_(torch.from_numpy(r_var))
  y = np.asarray(bn(jnp.asarray(x), train=True))
  y_ref = [ref(torch.from_numpy(x[v])).detach().numpy() for v in range(2)]
  np.testing.assert_allclose(y, np.stack(y_ref), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(bn.mean[...], ref.running_mean.numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(bn.var[...], ref.running_var.numpy(), rtol=1e-6, atol=1e-6)
  # Eval mode then uses those statistics, as the released projector's eval does.
  y_eval = np.asarray(bn(jnp.asarray(x[0]), train=False))
  np.testing.assert_allclose(y_eval, ref.eval()(torch.from_numpy(x[0])).detach().numpy(),
                             rtol=1e-5, atol=1e-5)


def test_grouped_views_average_their_groups_then_update_in_turn():
  """[2, G, g, C] (`bn_group_size`): per view, the mean of its groups' statistics, unbiased with
  the group size; still one update per view."""
  x = _views(n=8, c=3, seed=5).reshape(2, 2, 4, 3)
  bn, r_mean, r_var = _bn_with_stats(3, seed=6)
  y = np.asarray(bn(jnp.asarray(x), train=True))
  per_view = []
  for v in range(2):
    groups = [_stats(x[v, g]) for g in range(2)]
    per_view.append((np.mean([s[0] for s in groups], 0), np.mean([s[2] for s in groups], 0)))
  (m1, u1), (m2, u2) = per_view
  np.testing.assert_allclose(bn.mean[...], _two_calls(r_mean, m1, m2), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bn.var[...], _two_calls(r_var, u1, u2), rtol=1e-5, atol=1e-6)
  m, var, _ = _stats(x[1, 0])
  np.testing.assert_allclose(y[1, 0], (x[1, 0] - m) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)


def test_single_call_input_updates_once():
  x = _views()[0]
  bn, r_mean, r_var = _bn_with_stats(x.shape[-1])
  bn(jnp.asarray(x), train=True)
  m, _, u = _stats(x)
  np.testing.assert_allclose(bn.mean[...], 0.9 * r_mean + 0.1 * m, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bn.var[...], 0.9 * r_var + 0.1 * u, rtol=1e-5, atol=1e-6)


def _head_by_hand(head: MLPHead, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
  """Per BatchNorm of `head`, the (mean, unbiased var) each view's batch gives it, in float64,
  running one view at a time through Linear -> BN (own batch statistics) -> ReLU."""
  out = []
  for lin, norm in zip(head.linears[:-1], head.norms):
    k, b = (np.asarray(v[...], np.float64) for v in (lin.kernel, lin.bias))
    x = x @ k + b
    stats = [_stats(x[v]) for v in range(x.shape[0])]
    out.append([(s[0], s[2]) for s in stats])
    scale, bias = (np.asarray(v[...], np.float64) for v in (norm.scale, norm.bias))
    x = np.stack([(x[v] - s[0]) / np.sqrt(s[1] + 1e-5) for v, s in enumerate(stats)])
    x = np.maximum(x * scale + bias, 0.0)
  return out


def _tiny(mode: str):
  return model_config("test", image_size=16, contrastive_mode=mode, projector_hidden=24,
                      projector_out=8, predictor_hidden=16)


@pytest.mark.parametrize("mode", ["shared_projector", "ema_target"])
def test_model_heads_update_once_per_view(mode):
  """The projector (both modes), predictor and target projector (ema_target): two updates per
  forward pass, view 1 then view 2, from that view's batch through the head."""
  cfg = _tiny(mode)
  model = ViCMAE(cfg, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 6, 16, 16, 3))
  out = model(x[0], x[1], rng=jax.random.key(2), train=True)
  latent = np.asarray(out.latent, np.float64)
  feats = latent[:, 1:].mean(1).reshape(6, 2, -1).swapaxes(0, 1)  # interleaved -> [2, N, D]
  heads = [(model.projector, feats)]
  if mode == "ema_target":
    # The predictor's input is the projector output; the target encoder sees the same visible
    # patches and starts as a copy, so the target projector sees the same features.
    proj = np.stack([_project(model.projector, feats[v]) for v in range(2)])
    heads += [(model.predictor, proj), (model.target.projector, feats)]
  for head, inputs in heads:
    for norm, ((m1, u1), (m2, u2)) in zip(head.norms, _head_by_hand(head, inputs)):
      # Fresh BatchNorms: running mean 0, var 1.
      np.testing.assert_allclose(norm.mean[...], _two_calls(0.0, m1, m2), rtol=1e-4, atol=1e-5)
      np.testing.assert_allclose(norm.var[...], _two_calls(1.0, u1, u2), rtol=1e-4, atol=1e-5)


def _project(head: MLPHead, x: np.ndarray) -> np.ndarray:
  """One view [N, C] through `head` in train mode (own batch statistics), float64."""
  for lin, norm in zip(head.linears[:-1], head.norms):
    x = x @ np.asarray(lin.kernel[...], np.float64) + np.asarray(lin.bias[...], np.float64)
    m, var, _ = _stats(x)
    x = (x - m) / np.sqrt(var + 1e-5) * np.asarray(norm.scale[...]) + np.asarray(norm.bias[...])
    x = np.maximum(x, 0.0)
  last = head.linears[-1]
  return x @ np.asarray(last.kernel[...], np.float64) + np.asarray(last.bias[...], np.float64)

"""EMA update math and the cosine momentum schedule (docs/decisions.md, D3)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vicmae_jax import ema
from vicmae_jax.ema import update_target
from vicmae_jax.models import ViCMAE, model_config, split_model


def test_ema_update_math():
  target = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(4.0)}}
  online = {"a": jnp.array([3.0, 2.0]), "b": {"c": jnp.array(0.0)}}
  out = ema.ema_update(target, online, 0.75)
  np.testing.assert_allclose(out["a"], [1.5, 2.0])
  np.testing.assert_allclose(out["b"]["c"], 3.0)
  jax.tree.map(np.testing.assert_array_equal, ema.ema_update(target, online, 1.0), target)
  jax.tree.map(np.testing.assert_array_equal, ema.ema_update(target, online, 0.0), online)


def test_momentum_is_traced_one_compile_serves_the_schedule():
  traces = []

  @jax.jit
  def step(t, o, m):
    traces.append(1)
    return ema.ema_update(t, o, m)

  for m in (0.9, 0.99, 0.999):
    out = step(jnp.ones(3), jnp.zeros(3), jnp.float32(m))
    np.testing.assert_allclose(out, m, rtol=1e-6)
  assert len(traces) == 1


def test_cosine_schedule_endpoints_and_monotone():
  vals = [float(ema.cosine_momentum(s, 100)) for s in (0, 25, 50, 75, 100, 200)]
  assert vals[0] == pytest.approx(0.996)
  assert vals[2] == pytest.approx(0.998)
  assert vals[4] == pytest.approx(1.0) and vals[5] == pytest.approx(1.0)
  assert all(a <= b for a, b in zip(vals, vals[1:]))


def test_update_target_moves_only_tracked_parts():
  cfg = model_config("test", image_size=16, projector_hidden=32, predictor_hidden=32)
  _, params, target, _ = split_model(ViCMAE(cfg, rngs=nnx.Rngs(0)))
  shifted = jax.tree.map(lambda x: x + 1.0, params)
  new = update_target(target, shifted, 0.9)
  assert jax.tree.structure(new) == jax.tree.structure(target)
  for part in ("encoder", "projector"):
    jax.tree.map(lambda n, t: np.testing.assert_allclose(n, t + 0.1, rtol=1e-5, atol=1e-6),
                 new["target"][part], target["target"][part])

"""The pure train step: sharding invariance, accumulation, NaN guard, EMA target."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vicmae_jax import optim, sharding
from vicmae_jax.models import model_config
from vicmae_jax.train_state import create_train_state
from vicmae_jax.train_step import StepConfig, train_step

CFG = dict(image_size=16, projector_hidden=64, predictor_hidden=64)


def _setup(n_devices, mode="ema_target", accum=1, lr=1e-3, fsdp=1, sgd=False, dtype="float32"):
  cfg = model_config("test", contrastive_mode=mode, dtype=dtype, **CFG)
  sched = optim.learning_rate_schedule(lr, 20, 2)
  # Plain SGD keeps updates proportional to gradients; Adam would turn the rounding noise of
  # parameters with an exactly-zero gradient (biases before BatchNorm, attention key biases)
  # into +-lr steps whose sign depends on the summation order.
  tx = optax.sgd(sched) if sgd else optim.make_optimizer(sched)
  sc = StepConfig(patch=cfg.patch, contrastive_mode=mode, total_steps=20, accum_steps=accum)
  mesh = sharding.make_mesh(data=n_devices // fsdp, fsdp=fsdp, devices=jax.devices()[:n_devices])
  graphdef, state, shardings = create_train_state(cfg, tx, 0, mesh, fsdp_min_mb=0.0)
  bs = sharding.batch_sharding(mesh)
  step = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=sched, sc=sc),
                 in_shardings=(shardings, bs), out_shardings=(shardings, sharding.replicated(mesh)),
                 donate_argnums=0)
  return state, step, bs


def _batch(seed=0, n=16):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.normal(size=(n, 16, 16, 3)), jnp.float32) for k in ("view1", "view2")}


def _run(n_devices, steps=3, **kw):
  state, step, bs = _setup(n_devices, **kw)
  losses = []
  for i in range(steps):
    state, metrics = step(state, jax.device_put(_batch(i), bs))
    losses.append(float(metrics["loss"]))
  return state, losses


@pytest.mark.parametrize("mode", ["ema_target", "shared_projector"])
def test_sharded_step_equals_single_device(mode):
  s1, l1 = _run(1, mode=mode, sgd=True, lr=0.5)
  s8, l8 = _run(8, mode=mode, sgd=True, lr=0.5)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  for tree in ("params", "target", "batch_stats"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 jax.device_get(getattr(s1, tree)), jax.device_get(getattr(s8, tree)))
  # The update moved the params (the comparison is not between two untouched inits).
  s0, _ = _run(1, mode=mode, steps=0)
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), jax.device_get(s0.params),
                       jax.device_get(s1.params))
  assert max(jax.tree.leaves(moved)) > 1e-3


def test_fsdp_sharded_params_give_the_same_step():
  _, l1 = _run(1)
  state, l_fsdp = _run(8, fsdp=4)
  np.testing.assert_allclose(l1, l_fsdp, rtol=1e-5)
  kernel = state.params["decoder"]["blocks"][0]["mlp"]["fc1"]["kernel"]
  assert "fsdp" in str(kernel[...].sharding.spec)


def test_accumulation_averages_micro_batch_gradients():
  """With accum=2, the update uses the mean of two micro-batch gradients; state stays finite."""
  state, losses = _run(8, accum=2)
  assert all(np.isfinite(losses))
  assert int(state.step) == 3


def test_loss_decreases_on_a_fixed_batch():
  state, step, bs = _setup(1, lr=3e-3)
  batch = jax.device_put(_batch(0), bs)
  losses = []
  for _ in range(15):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("mode", ["ema_target", "shared_projector"])
def test_bfloat16_step_tracks_the_float32_step_and_trains(mode):
  """The bf16 path (fp32 accumulation, row-major operand copies, fp32 bias sums on CPU) computes
  the fp32 step's losses over 15 updates to bf16 accuracy and lowers the loss on a fixed batch."""
  runs = {}
  for dtype in ("float32", "bfloat16"):
    state, step, bs = _setup(1, mode=mode, lr=3e-3, dtype=dtype)
    batch = jax.device_put(_batch(0), bs)
    losses = []
    for _ in range(15):
      state, m = step(state, batch)
      losses.append(float(m["loss"]))
    runs[dtype] = losses
  f32, bf16 = np.asarray(runs["float32"]), np.asarray(runs["bfloat16"])
  np.testing.assert_allclose(bf16, f32, rtol=1e-2)  # measured: <= 0.14%
  assert np.all(np.isfinite(bf16)) and bf16[-1] < 0.8 * bf16[0]


def test_non_finite_update_is_skipped_and_counted():
  state, step, bs = _setup(1)
  state, _ = step(state, jax.device_put(_batch(0), bs))
  before = jax.device_get((state.params, state.target, state.opt_state))
  bad = _batch(1)
  bad["view1"] = bad["view1"].at[0, 0, 0, 0].set(jnp.nan)
  state, m = step(state, jax.device_put(bad, bs))
  assert int(m["update_skipped"]) == 1 and int(m["skipped_steps"]) == 1
  assert int(m["consecutive_skipped"]) == 1 and int(state.step) == 2
  after = jax.device_get((state.params, state.target, state.opt_state))
  jax.tree.map(np.testing.assert_array_equal, before, after)
  state, m = step(state, jax.device_put(_batch(2), bs))
  assert int(m["update_skipped"]) == 0 and int(m["consecutive_skipped"]) == 0
  assert int(m["skipped_steps"]) == 1


def test_ema_target_follows_with_the_scheduled_momentum():
  state, step, bs = _setup(1)
  old_target = jax.device_get(state.target)
  state, m = step(state, jax.device_put(_batch(0), bs))
  momentum = float(m["ema_momentum"])
  assert momentum == pytest.approx(0.996)
  new_online = jax.device_get(state.params)["encoder"]["norm"]["scale"][...]
  expected = momentum * old_target["target"]["encoder"]["norm"]["scale"][...] + (1 - momentum) * new_online
  np.testing.assert_allclose(jax.device_get(state.target)["target"]["encoder"]["norm"]["scale"][...],
                             expected, rtol=1e-6)

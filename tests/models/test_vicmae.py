"""The composed model: shapes of every variant, parameter counts, both contrastive modes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vicmae_jax import hardware, losses
from vicmae_jax.models import (ENCODERS, ViCMAE, count_params, interleave, merge_model,
                               model_config, per_view, split_model)


def _abstract_forward(cfg, batch=2):
  def run():
    model = ViCMAE(cfg, rngs=nnx.Rngs(0))
    x = jnp.zeros((batch, cfg.image_size, cfg.image_size, 3))
    return model(x, x, rng=jax.random.key(0))
  return jax.eval_shape(run)


@pytest.mark.parametrize("variant", sorted(ENCODERS))
@pytest.mark.parametrize("mode", ["ema_target", "shared_projector"])
def test_shapes_of_every_variant(variant, mode):
  cfg = model_config(variant, image_size=28 if "/14" in variant else 32, contrastive_mode=mode,
                     projector_hidden=64, predictor_hidden=64)
  out = _abstract_forward(cfg)
  L, K = cfg.num_patches, cfg.len_keep
  assert out.pred.shape == (4, L, cfg.patch_dim)
  assert out.mask.shape == (4, L)
  assert out.latent.shape == (4, 1 + K, cfg.width)
  assert out.online.shape == (2, 2, cfg.projector_out)
  assert (out.target is None) == (mode == "shared_projector")


@pytest.mark.parametrize("variant, encoder_m, total_m", [
    ("B/16", 85.65, 132.13), ("L/16", 303.10, 350.76), ("H/14", 630.44, 679.18)])
def test_parameter_counts_equal_the_released_code(variant, encoder_m, total_m):
  cfg = model_config(variant, contrastive_mode="shared_projector")
  abstract = nnx.eval_shape(lambda: ViCMAE(cfg, rngs=nnx.Rngs(0)))
  _, params, target, _ = split_model(abstract)
  encoder = sum(x.size for x in jax.tree.leaves(params["encoder"]))
  assert round(encoder / 1e6, 2) == encoder_m
  assert round(count_params(cfg) / 1e6, 2) == total_m
  assert not jax.tree.leaves(target)


def test_ema_target_starts_as_a_copy_and_gets_no_gradient():
  cfg = model_config("test", image_size=16, projector_hidden=32, predictor_hidden=32)
  model = ViCMAE(cfg, rngs=nnx.Rngs(0))
  graphdef, params, target, rest = split_model(model)
  for part in ("encoder", "projector"):
    jax.tree.map(np.testing.assert_array_equal, target["target"][part], params[part])
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))

  def loss(p, t):
    out = merge_model(graphdef, p, t, rest)(x, x[::-1], rng=jax.random.key(2))
    return losses.vicmae_loss(out, x, x[::-1], patch=cfg.patch, mode=cfg.contrastive_mode)[0]

  g_online, g_target = jax.grad(loss, argnums=(0, 1))(params, target)
  assert all(np.all(g == 0) for g in jax.tree.leaves(g_target))
  assert any(np.any(g != 0) for g in jax.tree.leaves(g_online["predictor"]))


def test_visible_token_pooling_and_full_view_target():
  cfg = model_config("test", image_size=16, projector_hidden=32, predictor_hidden=32,
                     target_sees_full_view=True)
  model = ViCMAE(cfg, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  out = model(x, x, rng=jax.random.key(3))
  full = model.target.encoder(jnp.concatenate([x, x]))
  assert full.shape[1] == 1 + cfg.num_patches
  assert out.latent.shape[1] == 1 + cfg.len_keep


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_pooling_options(pooling):
  cfg = model_config("test", image_size=16, pooling=pooling, projector_hidden=32,
                     contrastive_mode="shared_projector")
  out = ViCMAE(cfg, rngs=nnx.Rngs(0))(jnp.ones((2, 16, 16, 3)), jnp.ones((2, 16, 16, 3)),
                                      rng=jax.random.key(0))
  assert np.isfinite(np.asarray(out.online)).all()


def test_explicit_noise_reproduces_masks_and_outputs():
  cfg = model_config("test", image_size=16, projector_hidden=32, predictor_hidden=32)
  model = ViCMAE(cfg, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  noise = (jax.random.uniform(jax.random.key(5), (2, 16)), jax.random.uniform(jax.random.key(6), (2, 16)))
  a = model(x, x, noise=noise, train=False)
  b = model(x, x, noise=noise, train=False)
  np.testing.assert_array_equal(a.mask, b.mask)
  np.testing.assert_array_equal(a.pred, b.pred)
  np.testing.assert_array_equal(per_view(a.mask)[0], (np.argsort(np.argsort(noise[0], 1), 1) >= 8))
  np.testing.assert_array_equal(per_view(a.mask)[1], (np.argsort(np.argsort(noise[1], 1), 1) >= 8))


def test_bf16_compute_keeps_fp32_params_and_loss():
  cfg = model_config("test", image_size=16, dtype="bfloat16", projector_hidden=32,
                     predictor_hidden=32)
  model = ViCMAE(cfg, rngs=nnx.Rngs(0))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  out = model(x, x, rng=jax.random.key(0))
  assert out.latent.dtype == jnp.bfloat16
  assert out.pred.dtype == jnp.float32 and out.online.dtype == jnp.float32
  total, _ = losses.vicmae_loss(out, x, x, patch=cfg.patch, mode=cfg.contrastive_mode)
  assert total.dtype == jnp.float32 and np.isfinite(float(total))
  # On CPU the projector and predictor compute in fp32 (one row per image: casting their weights
  # would cost more than it saves), the encoder in bf16.
  assert _dots(cfg, "cpu", jnp.float32) == 3 + 2 + 3  # projector, predictor, target projector
  assert _dots(cfg, "cpu", jnp.bfloat16) > 0 and model.encoder.blocks[0].mlp.fc1.dtype == jnp.bfloat16


def test_remat_changes_nothing_numerically():
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  grads = []
  for remat, policy in ((False, "full"), (True, "full"), (True, "dots")):
    cfg = model_config("test", image_size=16, remat=remat, remat_policy=policy,
                       projector_hidden=32, contrastive_mode="shared_projector")
    graphdef, params, target, rest = split_model(ViCMAE(cfg, rngs=nnx.Rngs(0)))

    def loss(p):
      out = merge_model(graphdef, p, target, rest)(x, x, rng=jax.random.key(2))
      return losses.vicmae_loss(out, x, x, patch=cfg.patch, mode=cfg.contrastive_mode)[0]

    grads.append(jax.jit(jax.grad(loss))(params))
  for other in grads[1:]:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads[0],
                 other)


def test_unknown_remat_policy_is_refused():
  with pytest.raises(ValueError, match="remat_policy"):
    model_config("test", remat=True, remat_policy="some")


def test_grouped_batchnorm_needs_divisible_batch():
  cfg = model_config("test", image_size=16, bn_group_size=3, projector_hidden=32,
                     contrastive_mode="shared_projector")
  with pytest.raises(ValueError, match="bn_group_size"):
    ViCMAE(cfg, rngs=nnx.Rngs(0))(jnp.ones((4, 16, 16, 3)), jnp.ones((4, 16, 16, 3)),
                                  rng=jax.random.key(0))


def _dots(cfg, platform: str, dtype) -> int:
  """Products with both operands in `dtype` in the forward pass of `cfg`'s model traced for
  `platform` (BatchNorm in eval mode: a plain trace may not update its statistics)."""
  model = ViCMAE(cfg, rngs=nnx.Rngs(0))
  x = jnp.ones((4, 16, 16, 3))
  with hardware.building_for(platform):
    jaxpr = jax.make_jaxpr(lambda a, b: model(a, b, rng=jax.random.key(0), train=False))(x, x)
  return sum(all(v.aval.dtype == dtype for v in e.invars) for e in _all_eqns(jaxpr.jaxpr)
             if e.primitive.name == "dot_general")


def _all_eqns(jaxpr):
  """Every equation of a jaxpr, nested ones (custom VJPs, remat, calls) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (list, tuple)) else [param]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _all_eqns(inner)


def test_heads_keep_the_model_dtype_on_accelerators():
  """Only a program built for CPU runs the projector/predictor in fp32 (a speed choice); GPU and
  TPU programs use cfg.dtype, whichever backend the tracing process has."""
  cfg = model_config("test", image_size=16, dtype="bfloat16", projector_hidden=32,
                     predictor_hidden=32)
  head_linears = 3 + 2 + 3  # projector, predictor, target projector
  assert _dots(cfg, "gpu", jnp.bfloat16) - _dots(cfg, "cpu", jnp.bfloat16) == head_linears
  assert _dots(cfg, "tpu", jnp.bfloat16) == _dots(cfg, "gpu", jnp.bfloat16)
  assert _dots(cfg, "gpu", jnp.float32) == 0


def test_interleave_and_per_view_are_inverse():
  a, b = jnp.arange(6.0).reshape(3, 2), 10 + jnp.arange(6.0).reshape(3, 2)
  both = interleave(a, b)
  np.testing.assert_array_equal(both[0::2], a)
  np.testing.assert_array_equal(both[1::2], b)
  np.testing.assert_array_equal(per_view(both), jnp.stack([a, b]))

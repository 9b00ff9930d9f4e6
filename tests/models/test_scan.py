"""`ModelConfig.scan_blocks`: the blocks as one lax.scan over depth give the unrolled loop's
numbers (forward, gradients, drop path, remat) with a program that does not grow with depth.

The residual stream out of the blocks is bit-identical. What follows it (a LayerNorm) and the
backward pass differ in the last float32 bits at most: XLA fuses the ops at block boundaries
differently in a loop body, which changes the order of a few sums.
"""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from vicmae_jax import config_lib, losses, params_io
from vicmae_jax.models.video_classifier import VideoClassifier
from vicmae_jax.models import ViCMAE, layers, merge_model, model_config, split_model
from vicmae_jax.models.vit import MAEDecoder, ViTEncoder

REMATS = [(False, "full"), (True, "full"), (True, "dots")]


def _cfg(scan: bool, **overrides):
  kw = dict(image_size=16, depth=4, decoder_depth=3, projector_hidden=32, predictor_hidden=32)
  return model_config("test", scan_blocks=scan, **{**kw, **overrides})


def _exact(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _close(a, b, tol=2e-6):
  """Equal to a few float32 roundings at the scale of each array (its largest magnitude)."""
  def check(u, v):
    u, v = np.asarray(u, np.float32), np.asarray(v, np.float32)
    np.testing.assert_allclose(u, v, rtol=0, atol=tol * max(np.abs(u).max(), 1e-30))
  jax.tree.map(check, a, b)


def _encoder_run(cfg, images, rate=0.0, rng=None, final_norm=False):
  """(output, gradient w.r.t. every encoder param) of a loss on the encoder's output (by default
  the last block's: the residual stream the scan carries)."""
  graphdef, params = nnx.split(ViTEncoder(cfg, rngs=nnx.Rngs(0)))

  @jax.jit
  def run(p):
    def loss(p):
      out = nnx.merge(graphdef, p)(images, drop_path_rate=rate, drop_path_rng=rng,
                                   final_norm=final_norm)
      return jnp.sum(jnp.sin(out.astype(jnp.float32))), out
    return jax.grad(loss, has_aux=True)(p)

  grads, out = run(params)
  return out, grads


@pytest.mark.parametrize("remat, policy", REMATS)
def test_encoder_forward_and_gradients_match_the_loop(remat, policy):
  images = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
  runs = [_encoder_run(_cfg(scan, remat=remat, remat_policy=policy), images)
          for scan in (False, True)]
  _exact(runs[0][0], runs[1][0])
  _close(runs[0][1], runs[1][1])
  normed = [_encoder_run(_cfg(scan, remat=remat, remat_policy=policy), images, final_norm=True)
            for scan in (False, True)]
  _close(normed[0][0], normed[1][0], tol=5e-7)
  _close(normed[0][1], normed[1][1])


@pytest.mark.parametrize("remat, policy", REMATS)
@pytest.mark.parametrize("key", [jax.random.key, jax.random.PRNGKey], ids=["typed", "raw"])
def test_drop_path_draws_the_same_masks(remat, policy, key):
  images = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))
  rng = key(3)
  runs = [_encoder_run(_cfg(scan, remat=remat, remat_policy=policy), images, 0.5, rng)
          for scan in (False, True)]
  _exact(runs[0][0], runs[1][0])
  _close(runs[0][1], runs[1][1])
  # Drop path is really on: the output differs from the deterministic one.
  plain = _encoder_run(_cfg(True), images)[0]
  assert not np.allclose(plain, runs[1][0])


@pytest.mark.parametrize("depth, rate", [(4, 0.3), (76, 0.7)])
def test_bfloat16_encoder_matches_the_loop(depth, rate):
  """Bit for bit once XLA rounds every bfloat16 op (by default it may keep float32 across the
  ops of a fusion, and a loop body fuses differently). At depth 76 and rate 0.7, block 34's
  survivor scale 1 / keep rounds to another bfloat16 through float32 than directly."""
  images = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))
  outs = []
  for scan in (False, True):
    graphdef, params = nnx.split(ViTEncoder(_cfg(scan, depth=depth, dtype="bfloat16"),
                                            rngs=nnx.Rngs(0)))
    fn = jax.jit(lambda p: nnx.merge(graphdef, p)(
        images, drop_path_rate=rate, drop_path_rng=jax.random.key(4), final_norm=False))
    compiled = fn.lower(params).compile(compiler_options={"xla_allow_excess_precision": False})
    outs.append(compiled(params))
  assert outs[1].dtype == jnp.bfloat16
  _exact(outs[0], outs[1])


def test_decoder_forward_matches_the_loop():
  cfg = _cfg(False)
  latent = jax.random.normal(jax.random.key(1), (2, 1 + cfg.len_keep, cfg.width))
  ids_restore = jnp.stack([jax.random.permutation(jax.random.key(i), cfg.num_patches)
                           for i in range(2)])
  outs = []
  for scan in (False, True):
    decoder = MAEDecoder(_cfg(scan), rngs=nnx.Rngs(0))
    norm, streams = decoder.norm, []  # the blocks' output, read on its way into the final norm
    decoder.norm = lambda h, norm=norm, streams=streams: streams.append(h) or norm(h)

    @jax.jit
    def run(latent, ids_restore, decoder=decoder, streams=streams):
      return decoder(latent, ids_restore), streams[-1]

    outs.append(run(latent, ids_restore))
  _exact(outs[0][1], outs[1][1])
  _close(outs[0][0], outs[1][0], tol=5e-7)


@pytest.mark.parametrize("remat, policy", REMATS)
def test_pretraining_loss_and_gradients_match_the_loop(remat, policy):
  """The whole model (encoder, decoder, heads) through the pretraining loss. (With 2 images the
  projector's BatchNorm over 2 samples turns last-bit differences into 0.1% gradient noise.)"""
  x = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))
  results = []
  for scan in (False, True):
    cfg = _cfg(scan, remat=remat, remat_policy=policy, contrastive_mode="shared_projector")
    graphdef, params, target, rest = split_model(ViCMAE(cfg, rngs=nnx.Rngs(0)))

    def loss(p):
      out = merge_model(graphdef, p, target, rest)(x, x[::-1], rng=jax.random.key(2))
      return losses.vicmae_loss(out, x, x[::-1], patch=cfg.patch, mode=cfg.contrastive_mode)[0]

    results.append(jax.jit(jax.value_and_grad(loss))(params))
  np.testing.assert_allclose(results[0][0], results[1][0], rtol=2e-6)
  _close(results[0][1], results[1][1])


@pytest.mark.parametrize("remat", [False, True])
def test_video_classifier_matches_the_loop(remat):
  videos = jax.random.normal(jax.random.key(1), (4, 4, 16, 16, 3))
  runs = []
  for scan in (False, True):
    model = VideoClassifier(_cfg(scan, remat=remat), 5, num_frames=4, tubelet=2,
                            drop_path_rate=0.4, head_dropout=0.2, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)

    @jax.jit
    def run(p):
      def loss(p):
        logits = nnx.merge(graphdef, p)(videos, jax.random.PRNGKey(7))
        return jnp.sum(jax.nn.log_softmax(logits)[:, 0]), logits
      return jax.grad(loss, has_aux=True)(p)

    grads, logits = run(params)
    evaluated = jax.jit(lambda p: nnx.merge(graphdef, p)(videos))(params)
    runs.append((logits, grads, evaluated))
  _close(runs[0][0], runs[1][0], tol=5e-7)
  _close(runs[0][1], runs[1][1])
  _close(runs[0][2], runs[1][2], tol=5e-7)  # evaluation: no rng, no drop path


def _all_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (list, tuple)) else [param]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _all_eqns(inner)


def _encoder_jaxpr(scan: bool, depth: int, **overrides):
  model = ViTEncoder(_cfg(scan, depth=depth, **overrides), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  images = jnp.zeros((2, 16, 16, 3))
  fn = lambda p, r: nnx.merge(graphdef, p)(images, drop_path_rate=0.1, drop_path_rng=r)
  return jax.make_jaxpr(fn)(params, jax.random.key(0)).jaxpr


@pytest.mark.parametrize("remat", [False, True])
def test_scanned_program_does_not_grow_with_depth(remat):
  sizes = {}
  for scan in (False, True):
    for depth in (2, 8):
      jaxpr = _encoder_jaxpr(scan, depth, remat=remat)
      eqns = list(_all_eqns(jaxpr))
      scans = sum(e.primitive.name == "scan" for e in eqns)
      assert scans == (1 if scan else 0)
      sizes[scan, depth] = len(eqns)
  assert sizes[True, 2] == sizes[True, 8], sizes
  assert sizes[False, 8] > 3 * sizes[False, 2] > 3 * sizes[True, 8], sizes


def test_scan_keeps_the_parameter_layout():
  states = [nnx.to_pure_dict(nnx.state(ViTEncoder(_cfg(scan), rngs=nnx.Rngs(0)), nnx.Param))
            for scan in (False, True)]
  assert sorted(states[1]["blocks"]) == [0, 1, 2, 3]
  _exact(states[0], states[1])


def test_one_block_runs_unscanned():
  block = layers.Block(8, 2, 16, dtype=jnp.float32, attention_impl=None, rngs=nnx.Rngs(0))
  x = jnp.ones((2, 3, 8))
  np.testing.assert_array_equal(layers.run_blocks(nnx.List([block]), x, False, scan=True),
                                block(x))


def test_scan_blocks_is_a_config_key_and_old_exports_load(tmp_path):
  from configs import common
  c = ml_collections.ConfigDict(common.base_config())
  assert c.model.scan_blocks is False
  c.model.scan_blocks = True
  assert config_lib.model_config(c).scan_blocks is True
  # An export written before the key existed loads with the default.
  cfg = _cfg(False)
  params = nnx.to_pure_dict(nnx.state(ViTEncoder(cfg, rngs=nnx.Rngs(0)), nnx.Param))
  params_io.save_params(str(tmp_path), params, cfg)
  config_file = tmp_path / params_io.CONFIG_FILE
  import json
  data = json.loads(config_file.read_text())
  del data["scan_blocks"]
  config_file.write_text(json.dumps(data))
  _, loaded = params_io.load_params(str(tmp_path))
  assert loaded == dataclasses.replace(cfg, scan_blocks=False)

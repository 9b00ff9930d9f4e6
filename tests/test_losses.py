"""Losses on hand-made inputs, against a numpy reference, and sharded over 8 devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vicmae_jax import losses, masking, sharding
from vicmae_jax.models import ViCMAE, model_config, split_model, merge_model


def test_normalized_targets_use_unbiased_variance():
  imgs = jax.random.normal(jax.random.key(0), (2, 8, 8, 3)) * 3 + 1
  t = losses.normalized_pixel_targets(imgs, 4)
  raw = np.asarray(masking.patchify(imgs, 4))
  ref = (raw - raw.mean(-1, keepdims=True)) / np.sqrt(raw.var(-1, ddof=1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(t, ref, atol=1e-5)


def test_reconstruction_loss_counts_masked_patches_only():
  imgs = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  target = losses.normalized_pixel_targets(imgs, 4)  # [2, 4, 48]
  mask = jnp.array([[1, 0, 1, 0], [0, 0, 1, 1]], jnp.float32)
  # Perfect on masked patches, garbage on visible ones: the loss ignores the visible ones.
  pred = jnp.where(mask[..., None] > 0, target, 100.0)
  assert float(losses.reconstruction_loss(pred, imgs, mask, 4)) == pytest.approx(0.0, abs=1e-10)
  # Predicting zeros costs mean(t^2) = (P - 1) / P per patch for unbiased-normalised targets.
  zero = float(losses.reconstruction_loss(jnp.zeros_like(target), imgs, mask, 4))
  assert zero == pytest.approx(47 / 48, rel=1e-4)


def test_reconstruction_without_norm_pix():
  imgs = jnp.ones((1, 4, 4, 3)) * 2.0
  loss = losses.reconstruction_loss(jnp.zeros((1, 1, 48)), imgs, jnp.ones((1, 1)), 4, norm_pix=False)
  assert float(loss) == pytest.approx(4.0)


def test_nt_xent_on_hand_made_embeddings():
  e = np.eye(3, dtype=np.float32)
  z1, z2 = jnp.asarray(e[:2]), jnp.asarray(e[:2])  # positives identical, negatives orthogonal
  loss, acc = losses.nt_xent(z1, z2, temperature=0.1)
  # Each anchor: positive logit 10, two negatives at 0, self excluded.
  assert float(loss) == pytest.approx(-np.log(np.exp(10) / (np.exp(10) + 2)), abs=1e-6)
  assert float(acc) == 1.0


def _solo_learn_ntxent(z, temperature):
  """The released objective on one device, with unique sample ids (so no cross-device bug)."""
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  n2 = z.shape[0]
  ids = np.concatenate([np.arange(n2 // 2)] * 2)
  sim = np.exp(z @ z.T / temperature)
  pos = (ids[:, None] == ids[None, :]) & ~np.eye(n2, dtype=bool)
  neg = ids[:, None] != ids[None, :]
  return np.mean(-np.log((sim * pos).sum(1) / ((sim * pos).sum(1) + (sim * neg).sum(1))))


def test_nt_xent_matches_the_released_formula():
  z1, z2 = (np.random.default_rng(i).normal(size=(6, 16)).astype(np.float32) for i in (1, 2))
  ours, _ = losses.nt_xent(jnp.asarray(z1), jnp.asarray(z2), 0.1)
  ref = _solo_learn_ntxent(np.concatenate([z1, z2]).astype(np.float64), 0.1)
  assert float(ours) == pytest.approx(ref, rel=1e-4)


def test_info_nce_on_hand_made_embeddings():
  p = jnp.asarray(np.eye(4, dtype=np.float32)[:3])
  loss, acc = losses.info_nce(p, p, temperature=0.5)
  assert float(loss) == pytest.approx(-np.log(np.exp(2) / (np.exp(2) + 2)), rel=1e-5)
  assert float(acc) == 1.0
  loss_swapped, acc_swapped = losses.info_nce(p, p[::-1], temperature=0.5)
  assert float(loss_swapped) > float(loss) and float(acc_swapped) < 1.0


def test_ema_mode_pairs_each_prediction_with_the_other_views_target():
  rng = np.random.default_rng(3)
  online, target = (jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32) for _ in range(2))
  loss, _ = losses.contrastive_loss(online, target, "ema_target", 0.1)
  ref = 0.5 * (losses.info_nce(online[0], target[1], 0.1)[0] + losses.info_nce(online[1], target[0], 0.1)[0])
  assert float(loss) == pytest.approx(float(ref))
  with pytest.raises(ValueError, match="target"):
    losses.contrastive_loss(online, None, "ema_target", 0.1)


def test_contrastive_weight_ramp():
  assert float(losses.contrastive_weight(5, 0.03)) == pytest.approx(0.03)
  w = [float(losses.contrastive_weight(s, 0.03, ramp_steps=10)) for s in (0, 5, 10, 20)]
  assert w == pytest.approx([0.0, 0.015, 0.03, 0.03])


def test_total_is_the_weighted_sum():
  cfg = model_config("test", image_size=16, projector_hidden=32, contrastive_mode="shared_projector")
  model = ViCMAE(cfg, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  out = model(x, x[::-1], rng=jax.random.key(2))
  total, m = losses.vicmae_loss(out, x, x[::-1], patch=4, mode=cfg.contrastive_mode,
                                weight_recon=0.97, weight_contrast=0.03)
  assert float(total) == pytest.approx(0.97 * float(m["recon_loss"]) + 0.03 * float(m["contrastive_loss"]), rel=1e-6)
  for key in ("recon_loss", "contrastive_loss", "contrastive_accuracy", "embedding_std"):
    assert np.isfinite(float(m[key]))


@pytest.mark.parametrize("mode", ["shared_projector", "ema_target"])
def test_sharded_over_8_devices_equals_one_device(mode):
  assert jax.device_count() == 8
  cfg = model_config("test", image_size=16, contrastive_mode=mode, projector_hidden=32,
                     predictor_hidden=32)
  graphdef, params, target, rest = split_model(ViCMAE(cfg, rngs=nnx.Rngs(0)))
  batch = 16
  v1, v2 = (jax.random.normal(jax.random.key(i), (batch, 16, 16, 3)) for i in (1, 2))
  noise = (jax.random.uniform(jax.random.key(3), (batch, 16)),
           jax.random.uniform(jax.random.key(4), (batch, 16)))

  def loss_fn(params, target, rest, v1, v2, n1, n2):
    out = merge_model(graphdef, params, target, rest)(v1, v2, noise=(n1, n2))
    return losses.vicmae_loss(out, v1, v2, patch=4, mode=mode)

  single = jax.jit(loss_fn)(params, target, rest, v1, v2, *noise)
  mesh = sharding.make_mesh(data=8, fsdp=1)
  data = sharding.batch_sharding(mesh)
  sharded_inputs = [jax.device_put(a, data) for a in (v1, v2, *noise)]
  assert len(sharded_inputs[0].sharding.device_set) == 8
  sharded = jax.jit(loss_fn)(params, target, rest, *sharded_inputs)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6), single, sharded)
  # A per-device loss (negatives from one device's 2 samples only) would give another value.
  out = merge_model(graphdef, params, target, rest)(v1, v2, noise=noise)
  per_device = np.mean([float(losses.contrastive_loss(out.online[:, i:i + 2],
                                                      None if out.target is None else out.target[:, i:i + 2],
                                                      mode, 0.1)[0]) for i in range(0, batch, 2)])
  assert abs(per_device - float(single[1]["contrastive_loss"])) > 1e-3

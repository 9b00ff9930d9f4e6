"""Pure pieces of the evaluation package: layer decay, metrics, exact-once batches, kNN, mixing."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vicmae_jax.evaluation import augment, knn, layer_decay, metrics
from vicmae_jax.models.classifier import Classifier
from vicmae_jax.evaluation.data import ArraySource, eval_iterator
from vicmae_jax.models import layers, model_config


def _classifier(depth=3, readout="cls"):
  cfg = model_config("test", image_size=16, depth=depth)
  return Classifier(cfg, 5, readout=readout, rngs=nnx.Rngs(0))


def test_layer_decay_multipliers_per_layer():
  depth, decay = 3, 0.65
  params = nnx.to_pure_dict(nnx.state(_classifier(depth, "mean"), nnx.Param))
  mult = layer_decay.layer_multipliers(params, depth, decay)
  top = decay ** (depth + 1)
  enc = mult["encoder"]
  for name in ("cls_token", "pos_embed"):
    assert enc[name] == pytest.approx(top)                        # id 0
  assert enc["patch_embed"]["proj"]["kernel"] == pytest.approx(top)
  for i in range(depth):                                          # blocks.i -> id i + 1
    for leaf in jax.tree.leaves(enc["blocks"][i]):
      assert leaf == pytest.approx(decay ** (depth - i))
  for leaf in jax.tree.leaves((enc["norm"], mult["fc_norm"], mult["head"])):
    assert leaf == 1.0                                            # id depth + 1


def test_scale_by_tree_scales_adamw_updates():
  params = {"a": jnp.ones((2, 2)), "b": jnp.ones((3,))}
  grads = {"a": jnp.full((2, 2), 0.5), "b": jnp.full((3,), -2.0)}
  base = optax.adamw(0.1, weight_decay=0.05)
  scaled = optax.chain(base, layer_decay.scale_by_tree({"a": 0.25, "b": 1.0}))
  u0, _ = base.update(grads, base.init(params), params)
  u1, _ = scaled.update(grads, scaled.init(params), params)
  np.testing.assert_allclose(u1["a"], 0.25 * u0["a"], rtol=1e-6)
  np.testing.assert_allclose(u1["b"], u0["b"], rtol=1e-6)


def test_topk_correct_ignores_masked_rows():
  logits = jnp.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.0, 0.0, 1.0]])
  labels = jnp.array([1, 1, 0])
  m = metrics.topk_correct(logits, labels, jnp.array([1.0, 1.0, 0.0]), ks=(1, 2))
  assert float(m["count"]) == 2 and float(m["top1"]) == 1 and float(m["top2"]) == 2


@pytest.mark.parametrize("n,batch", [(37, 8), (5, 8), (64, 24), (1, 16)])
def test_eval_covers_every_example_exactly_once(n, batch):
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
  src = ArraySource(images, np.arange(n) % 3, 3)
  seen, acc = [], metrics.MetricAccumulator(expected=n)
  for b in eval_iterator(src, batch, transform=lambda img: img.astype(np.float32)):
    assert b["image"].shape[0] == batch                           # static shape, padded
    seen += list(b["index"][b["mask"] > 0])
    acc.add(metrics.topk_correct(jnp.zeros((batch, 3)), jnp.asarray(b["label"]),
                                 jnp.asarray(b["mask"])))
  assert sorted(seen) == list(range(n))
  assert acc.result()["num_examples"] == n


@pytest.mark.parametrize("n,batch", [(37, 8), (3, 8)])
def test_each_process_decodes_only_its_rows_of_the_eval_batches(monkeypatch, n, batch):
  """Two processes: each reads only its half of every global batch, and together (mask > 0)
  they cover the split exactly once; a process whose rows are all padding still yields."""
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)

  class CountingSource(ArraySource):
    def get(self, i):
      self.read.append(i)
      return super().get(i)

  monkeypatch.setattr(jax, "process_count", lambda: 2)
  covered = []
  for proc in (0, 1):
    monkeypatch.setattr(jax, "process_index", lambda p=proc: p)
    src = CountingSource(images, np.arange(n) % 3, 3)
    src.read = []
    batches = list(eval_iterator(src, batch, transform=lambda img: img.astype(np.float32)))
    assert len(batches) == -(-n // batch)
    assert all(b["image"].shape == (batch // 2, 4, 4, 3) for b in batches)
    mine = [i for b in batches for i in b["index"][b["mask"] > 0]]
    if mine:  # the placeholder read of a process with no real rows is not counted as data
      assert sorted(src.read) == sorted(mine)
    for b in batches:
      np.testing.assert_array_equal(b["image"][b["mask"] > 0][:, 0, 0, 0], b["index"][b["mask"] > 0])
    covered += mine
  assert sorted(covered) == list(range(n))


def test_accumulator_rejects_a_wrong_count():
  acc = metrics.MetricAccumulator(expected=10)
  acc.add({"count": 9.0, "top1": 3.0})
  with pytest.raises(AssertionError, match="evaluated 9"):
    acc.result()


def test_knn_weighted_votes_and_accuracy():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(4, 16)) * 5
  train_y, test_y = rng.integers(0, 4, 200), rng.integers(0, 4, 50)
  train = centers[train_y] + rng.normal(size=(200, 16))
  test = centers[test_y] + rng.normal(size=(50, 16))
  m = knn.knn_classify(train, train_y, test, test_y, num_classes=4, k=20, temperature=0.07,
                       chunk=16)
  assert m["knn_top1"] > 95 and m["knn_num_examples"] == 50
  # Votes: exp(sim / T) summed per class over the k nearest.
  votes = knn.knn_votes(jnp.array([[1.0, 0], [0, 1.0], [1.0, 0.1]]), jnp.array([0, 1, 1]),
                        jnp.array([[1.0, 0.0]]), k=2, temperature=0.5, num_classes=2)
  sim = 1.0 / np.sqrt(1.01)
  np.testing.assert_allclose(votes[0], [np.exp(2.0), np.exp(sim / 0.5)], rtol=1e-5)


def test_mixup_cutmix_targets_sum_to_one_and_smooth():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 16, 16, 3)).astype(np.float32)
  y = np.arange(8) % 4
  for seed in range(6):
    xm, t = augment.mixup_cutmix(x, y, np.random.default_rng(seed), num_classes=4)
    assert xm.shape == x.shape and t.shape == (8, 4)
    np.testing.assert_allclose(t.sum(-1), 1.0, rtol=1e-5)
    assert t.min() >= 0.1 / 4 - 1e-6                             # smoothing off-value floor
  t = augment.smooth_one_hot(np.array([2]), 4, 0.1)
  np.testing.assert_allclose(t, [[0.025, 0.025, 0.925, 0.025]])


def test_train_and_eval_transforms_shapes():
  img = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
  rng = np.random.default_rng(1)
  for _ in range(5):
    out = augment.train_transform(img, rng, size=32)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
  assert augment.eval_transform(img, size=32).shape == (32, 32, 3)
  for op in augment.RAND_OPS:
    assert augment._op(op, __import__("PIL.Image").Image.fromarray(img), 9.0, rng).size == (56, 40)


def test_rand_augment_levels_follow_timm_increasing_ops():
  from PIL import Image
  ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (2, 1, 3))
  pil, rng = Image.fromarray(ramp), np.random.default_rng(0)
  assert len(augment.RAND_OPS) == 15 and "SolarizeAdd" in augment.RAND_OPS
  # SolarizeAdd m=10: +110 below 128 (clipped), untouched above.
  out = np.asarray(augment._op("SolarizeAdd", pil, 10.0, rng))[0, :, 0].astype(int)
  ref = np.where(np.arange(256) < 128, np.minimum(np.arange(256) + 110, 255), np.arange(256))
  np.testing.assert_array_equal(out, ref)
  # Posterize increasing keeps 4 - int(m / 10 * 4) bits: m=5 -> 2 bits, m=10 -> 0 bits (black).
  out = np.asarray(augment._op("Posterize", pil, 5.0, rng))[0, :, 0]
  np.testing.assert_array_equal(out, np.arange(256) & 0b11000000)
  assert not np.asarray(augment._op("Posterize", pil, 10.0, rng)).any()
  # Solarize increasing: threshold 256 - int(m / 10 * 256); m=5 inverts from 128 up.
  out = np.asarray(augment._op("Solarize", pil, 5.0, rng))[0, :, 0].astype(int)
  np.testing.assert_array_equal(out, np.where(np.arange(256) >= 128, 255 - np.arange(256),
                                              np.arange(256)))


def test_drop_path_linear_rates_and_eval_identity():
  assert layers.drop_path_rates(0.1, 3) == pytest.approx([0.0, 0.05, 0.1])
  model = _classifier(3)
  model.drop_path_rate = 0.5
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
  # No rng: deterministic, equal to rate 0; with an rng: stochastic.
  a, b = model(x), model(x)
  np.testing.assert_array_equal(a, b)
  c = model(x, rng=jax.random.key(1))
  assert not np.allclose(a, c)
  model.drop_path_rate = 0.0
  np.testing.assert_array_equal(model(x, rng=jax.random.key(1)), a)


def test_head_init_and_readouts():
  model = _classifier(2, "mean")
  k = np.asarray(model.head.kernel[...])
  assert np.abs(k).max() < 1e-4 and np.all(np.asarray(model.head.bias[...]) == 0)
  assert model.cfg.learned_pos_embed
  assert model(jnp.zeros((2, 16, 16, 3))).shape == (2, 5)


def test_mean_readout_pools_before_the_final_norm_as_mae_global_pool():
  model = _classifier(2, "mean")
  x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
  blocks_out = model.encoder(x, final_norm=False)
  expected = model.fc_norm(jnp.mean(blocks_out[:, 1:], axis=1))
  np.testing.assert_allclose(model.features(x), expected, rtol=1e-6, atol=1e-6)
  normed_first = model.fc_norm(jnp.mean(model.encoder(x)[:, 1:], axis=1))
  assert not np.allclose(model.features(x), normed_first, atol=1e-3)
  # MAE drops the encoder's final norm in this branch: it gets no gradient.
  graphdef, params = nnx.split(model, nnx.Param)
  grads = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x) ** 2))(params)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["encoder"]["norm"]))
  assert float(jnp.abs(grads["fc_norm"]["scale"][...]).max()) > 0


def test_weight_decay_mask_follows_timm():
  from vicmae_jax.evaluation import finetune_step
  from vicmae_jax.models.video_classifier import VideoClassifier
  mask = finetune_step.weight_decay_mask(nnx.to_pure_dict(nnx.state(_classifier(2), nnx.Param)))
  enc = mask["encoder"]
  assert not enc["cls_token"] and not enc["pos_embed"] and not enc["norm"]["scale"]
  assert enc["blocks"][0]["attn"]["qkv"]["kernel"] and mask["head"]["kernel"]
  assert not mask["head"]["bias"]
  vid = VideoClassifier(model_config("test", image_size=16), 3, num_frames=4, rngs=nnx.Rngs(0))
  vmask = finetune_step.weight_decay_mask(nnx.to_pure_dict(nnx.state(vid, nnx.Param)))
  assert not any(vmask[k] for k in ("pos_embed_spatial", "pos_embed_temporal", "pos_embed_class"))
  mult = layer_decay.layer_multipliers(nnx.to_pure_dict(nnx.state(vid, nnx.Param)), 2, 0.5)
  assert mult["pos_embed_temporal"] == 0.125 and mult["blocks"][1]["mlp"]["fc1"]["kernel"] == 0.5
  assert mult["head"]["kernel"] == 1.0


def test_small_split_probe_sgd_learns_where_lars_cannot_move():
  """Why the in-loop probe uses SGD: on a few hundred steps LARS's trust ratio (0.001 x |w| per
  unit lr) leaves a std-0.01 head at the chance loss; SGD with the same head and schedule fits."""
  from vicmae_jax.evaluation import linear_probe
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(10, 32)) * 2.0
  y = rng.integers(0, 10, 600)
  x = (centres[y] + rng.normal(size=(600, 32))).astype(np.float32)
  train, val = (x[:400], y[:400]), (x[400:], y[400:])
  cfg = dict(epochs=30, batch_size=64, base_lr=1.0, warmup_epochs=3)
  lars = linear_probe.probe(train, val, 10, linear_probe.ProbeConfig(**cfg))
  sgd = linear_probe.probe(train, val, 10, linear_probe.ProbeConfig(**cfg, optimizer="sgd"))
  assert lars["train_loss"] > 0.9 * np.log(10) and sgd["train_loss"] < 0.5 * np.log(10)
  assert sgd["top1"] > 90 and sgd["top1"] > lars["top1"] + 30
  with pytest.raises(ValueError, match="lars or sgd"):
    linear_probe.make_lars(linear_probe.ProbeConfig(optimizer="adam"), 10)

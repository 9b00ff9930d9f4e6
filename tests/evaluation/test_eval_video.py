"""Video pieces: tubelet inflation, separable positions, sampling, crops, multi-view aggregation."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vicmae_jax import masking
from vicmae_jax.evaluation import metrics, video_augment, video_sampling
from vicmae_jax.models import video_classifier
from vicmae_jax.models import ViTEncoder, model_config


def test_inflated_tubelet_embedding_equals_the_frame_embedding_on_a_static_clip():
  cfg = model_config("test", image_size=16)
  enc = ViTEncoder(cfg, rngs=nnx.Rngs(0))
  pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(enc, nnx.Param)))
  model = video_classifier.VideoClassifier(cfg, 5, num_frames=4, tubelet=2, rngs=nnx.Rngs(1))
  video_classifier.init_from_image_encoder(model, pure)
  frame = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  clip = jnp.repeat(frame[:, None], 4, axis=1)
  tubelets = video_classifier.tubelet_patchify(clip, 2, cfg.patch)          # [2, 2 * 16, 2*4*4*3]
  assert tubelets.shape == (2, 2 * cfg.num_patches, 2 * cfg.patch_dim)
  got = model.patch_embed(tubelets)[:, :cfg.num_patches]
  want = enc.patch_embed(masking.patchify(frame, cfg.patch))
  np.testing.assert_allclose(got, want, atol=1e-5)
  # Zero temporal table: both time slots carry the image's spatial table.
  pos = video_classifier.separable_pos_embed(model.pos_embed_spatial[...][0],
                                  model.pos_embed_temporal[...][0])
  np.testing.assert_allclose(pos[:cfg.num_patches], pos[cfg.num_patches:])
  assert model(clip).shape == (2, 5)
  assert model(clip, rng=jax.random.key(1)).shape == (2, 5)


def test_head_dropout_is_on_in_training_and_off_at_eval():
  cfg = model_config("test", image_size=16)
  model = video_classifier.VideoClassifier(cfg, 7, num_frames=4, tubelet=2, head_dropout=0.3,
                                rngs=nnx.Rngs(0))
  clip = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
  features = model.features(clip)
  evaluated = model(clip)
  np.testing.assert_allclose(evaluated, model.head(features), rtol=1e-6)   # no dropout at eval
  np.testing.assert_array_equal(evaluated, model(clip))                     # deterministic
  a, b = model(clip, rng=jax.random.key(1)), model(clip, rng=jax.random.key(2))
  assert not np.allclose(a, evaluated) and not np.allclose(a, b)            # on in training
  np.testing.assert_array_equal(a, model(clip, rng=jax.random.key(1)))      # driven by the key
  off = video_classifier.VideoClassifier(cfg, 7, num_frames=4, tubelet=2, head_dropout=0.0,
                              rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(off(clip, rng=jax.random.key(1)), off(clip))
  # The dropout itself: ~30% zeros, survivors scaled by 1 / 0.7.
  x = video_classifier.dropout(jnp.ones((20000,)), 0.3, jax.random.key(3))
  assert abs(float(jnp.mean(x == 0)) - 0.3) < 0.02
  np.testing.assert_allclose(x[x > 0], 1 / 0.7, rtol=1e-6)


def test_separable_pos_embed_layout():
  spatial = jnp.arange(6.0).reshape(3, 2)
  temporal = jnp.array([[0.0, 0.0], [10.0, 10.0]])
  pos = video_classifier.separable_pos_embed(spatial, temporal)
  np.testing.assert_array_equal(pos[3:] - pos[:3], 10.0)


def test_clip_and_segment_sampling():
  idx = video_sampling.clip_indices(300, 16, 4, view=0, num_views=7)
  assert len(idx) == 16 and idx[0] == 0 and np.all(np.diff(idx) == 4)
  last = video_sampling.clip_indices(300, 16, 4, view=6, num_views=7)
  assert last[-1] == 299
  starts = [video_sampling.clip_indices(300, 16, 4, view=v, num_views=7)[0] for v in range(7)]
  assert starts == sorted(starts) and len(set(starts)) == 7
  short = video_sampling.clip_indices(20, 16, 4)
  assert short.max() == 19                                       # repeats the last frame
  rnd = video_sampling.clip_indices(300, 16, 4, rng=np.random.default_rng(0))
  assert 0 <= rnd[0] <= 300 - 61
  seg = video_sampling.segment_indices(48, 16)
  np.testing.assert_array_equal(seg, np.arange(16) * 3 + 1)
  seg_r = video_sampling.segment_indices(48, 16, rng=np.random.default_rng(0))
  assert np.all((seg_r >= np.arange(16) * 3) & (seg_r < np.arange(16) * 3 + 3))
  # Two SSv2 test views: segment starts and segment middles (VideoMAE).
  np.testing.assert_array_equal(video_sampling.segment_indices(64, 16, view=0, num_views=2),
                                np.arange(16) * 4)
  np.testing.assert_array_equal(video_sampling.segment_indices(64, 16, view=1, num_views=2),
                                np.arange(16) * 4 + 2)


def test_three_spatial_crops_cover_the_long_side():
  frames = np.zeros((2, 40, 80, 3), np.uint8)
  frames[:, :, :20] = 255                                        # bright left quarter
  crops = video_augment.spatial_crops(frames, 32, 3)
  assert [c.shape for c in crops] == [(2, 32, 32, 3)] * 3
  assert crops[0].mean() > crops[1].mean() >= crops[2].mean()
  assert video_sampling.num_test_views(3, 7) == 21


def test_multi_view_aggregation_per_video():
  # Video 0 (label 1): 2 of 3 views wrong but confident-right view dominates the mean.
  logits = np.array([[1.0, 0.0], [1.0, 0.0], [-10.0, 10.0],      # video 0
                     [0.0, 3.0], [0.0, 2.0], [0.0, 1.0],         # video 1, label 1
                     [5.0, 0.0]])                                # video 2, label 0, 1 view
  ids = np.array([0, 0, 0, 1, 1, 1, 2])
  out = metrics.aggregate_views(logits, ids, {0: 1, 1: 1, 2: 0}, expected_views=3)
  assert out["video_top1"] == 100.0
  assert abs(out["clip_top1"] - 100.0 * 5 / 7) < 1e-9            # per clip: 5 of 7 right
  assert out["num_videos"] == 3 and out["num_views"] == 7
  assert out["videos_missing_views"] == 1


def test_video_finetune_from_an_image_export_with_multi_view_test(tmp_path):
  from configs import finetune_k400_vitl
  from vicmae_jax import params_io
  from vicmae_jax.evaluation import finetune
  from vicmae_jax.models import ViCMAE
  cfg = model_config("test", image_size=16)
  pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(ViCMAE(cfg, rngs=nnx.Rngs(3)))))
  params_io.save_params(str(tmp_path / "export"), pure, cfg)
  c = finetune_k400_vitl.get_config(f"tiny,init=export,path={tmp_path / 'export'}")
  # The tiny run keeps the MAE-ST training extras on: 2 clips per video, clip RandAugment,
  # cube erasing and head dropout.
  assert c.video.repeat_aug == 2 and c.video.head_dropout == 0.3
  assert c.aug.rand_augment_n == 2 and c.aug.reprob == 0.25
  c.total_steps = 6
  out = finetune.finetune(c, str(tmp_path / "run"))
  ev = out["eval"]
  # 6 videos x (3 spatial x 2 temporal) views at eval batch 16: 36 views, last batch padded.
  assert (ev["num_videos"], ev["num_views"], ev["videos_missing_views"]) == (6, 36, 0)
  assert 0 <= ev["video_top1"] <= 100 and 0 <= ev["clip_top1"] <= 100
  assert out["init"].source == "export" and out["init"].loaded

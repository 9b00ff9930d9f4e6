"""Numerical parity with Hugging Face transformers' ViTMAEForPreTraining on CPU (an outside oracle).

The HF model's weights are carried over by our importer; both get the same noise, so the same
masks. The encoder output and the norm-pix reconstruction loss must agree within 1e-4 in fp32.
"""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from vicmae_jax import losses  # noqa: E402
from vicmae_jax.convert import export_state_dict, load_pytorch_weights  # noqa: E402
from vicmae_jax.models import ViCMAE, model_config, per_view  # noqa: E402
from vicmae_jax.models.posembed import sincos_2d  # noqa: E402

SIZES = [
    # (width, depth, heads, decoder width, decoder depth, decoder heads, patch, image, mask)
    (64, 2, 4, 32, 2, 4, 4, 32, 0.5),
    (96, 3, 6, 64, 2, 2, 8, 64, 0.75),
]


def _hf_model(width, depth, heads, dw, dd, dh, patch, image, mask_ratio, seed=0):
  torch.manual_seed(seed)
  config = transformers.ViTMAEConfig(
      hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
      intermediate_size=4 * width, image_size=image, patch_size=patch, decoder_hidden_size=dw,
      decoder_num_hidden_layers=dd, decoder_num_attention_heads=dh, decoder_intermediate_size=4 * dw,
      layer_norm_eps=1e-6, norm_pix_loss=True, mask_ratio=mask_ratio, hidden_act="gelu")
  model = transformers.ViTMAEForPreTraining(config).eval()
  grid = image // patch
  with torch.no_grad():
    # Released checkpoints carry MAE's fixed sin-cos tables; transformers 5 leaves them at zero
    # in a fresh model, so give it the real ones. Non-zero biases exercise every bias path.
    model.vit.embeddings.position_embeddings.copy_(torch.from_numpy(sincos_2d(width, grid))[None])
    model.decoder.decoder_pos_embed.copy_(torch.from_numpy(sincos_2d(dw, grid))[None])
    for p in model.parameters():
      if p.ndim == 1:
        p.add_(0.05 * torch.randn_like(p))
    model.decoder.mask_token.normal_(std=0.02)
  return model


@pytest.mark.parametrize("size", SIZES)
def test_encoder_and_loss_match_hugging_face(size):
  width, depth, heads, dw, dd, dh, patch, image, mask_ratio = size
  hf = _hf_model(*size)
  cfg = model_config("test", image_size=image, width=width, depth=depth, heads=heads,
                     mlp_dim=4 * width, patch=patch, decoder_width=dw, decoder_depth=dd,
                     decoder_heads=dh, mask_ratio=mask_ratio, contrastive_mode="shared_projector",
                     projector_hidden=32)
  ours = ViCMAE(cfg, rngs=nnx.Rngs(0))
  report = load_pytorch_weights(ours, {k: v.numpy() for k, v in hf.state_dict().items()})
  assert report.layout == "hf" and report.parts == ("encoder", "decoder") and not report.notes

  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 3, image, image)).astype(np.float32)
  noise = rng.uniform(size=(3, cfg.num_patches)).astype(np.float32)
  with torch.no_grad():
    hf_out = hf(pixel_values=torch.from_numpy(x), noise=torch.from_numpy(noise))
    hf_latent = hf.vit(pixel_values=torch.from_numpy(x),
                       noise=torch.from_numpy(noise)).last_hidden_state.numpy()
  xj = jnp.asarray(x.transpose(0, 2, 3, 1))
  out = ours(xj, xj, noise=(jnp.asarray(noise), jnp.asarray(noise)), train=False)

  np.testing.assert_array_equal(np.asarray(per_view(out.mask)[0]), hf_out.mask.numpy())
  np.testing.assert_allclose(np.asarray(per_view(out.latent)[0]), hf_latent, atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(per_view(out.pred)[0]), hf_out.logits.numpy(), atol=1e-4,
                             rtol=0)
  loss = float(losses.reconstruction_loss(per_view(out.pred)[0], xj, per_view(out.mask)[0], patch))
  assert abs(loss - float(hf_out.loss)) < 1e-4


def test_exported_hf_layout_loads_into_transformers(tmp_path):
  """Our export in the HF layout is a valid ViTMAEForPreTraining state dict (strict load)."""
  size = SIZES[0]
  width, depth, heads, dw, dd, dh, patch, image, mask_ratio = size
  cfg = model_config("test", image_size=image, width=width, depth=depth, heads=heads,
                     mlp_dim=4 * width, patch=patch, decoder_width=dw, decoder_depth=dd,
                     decoder_heads=dh, mask_ratio=mask_ratio, contrastive_mode="shared_projector",
                     projector_hidden=32)
  ours = ViCMAE(cfg, rngs=nnx.Rngs(3))
  import jax
  pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(ours)))
  state = export_state_dict(pure, cfg, parts=("encoder", "decoder"), layout="hf")
  hf = _hf_model(*size)
  missing, unexpected = hf.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                                           strict=True)
  assert not missing and not unexpected
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 3, image, image)).astype(np.float32)
  noise = rng.uniform(size=(2, cfg.num_patches)).astype(np.float32)
  with torch.no_grad():
    hf_out = hf(pixel_values=torch.from_numpy(x), noise=torch.from_numpy(noise))
  xj = jnp.asarray(x.transpose(0, 2, 3, 1))
  out = ours(xj, xj, noise=(jnp.asarray(noise), jnp.asarray(noise)), train=False)
  np.testing.assert_allclose(np.asarray(per_view(out.pred)[0]), hf_out.logits.numpy(), atol=1e-4,
                             rtol=0)


@pytest.mark.parametrize("size", SIZES)
def test_gradients_match_hugging_face_autograd(size):
  """Every encoder and decoder weight gradient of the norm-pix loss equals PyTorch autograd's on
  HF ViTMAE: an outside check of our hand-written backward passes (Dense, LayerNorm, attention)."""
  import jax
  width, depth, heads, dw, dd, dh, patch, image, mask_ratio = size
  hf = _hf_model(*size).train()  # no dropout in ViTMAE's defaults; train() only enables grads
  cfg = model_config("test", image_size=image, width=width, depth=depth, heads=heads,
                     mlp_dim=4 * width, patch=patch, decoder_width=dw, decoder_depth=dd,
                     decoder_heads=dh, mask_ratio=mask_ratio, contrastive_mode="shared_projector",
                     projector_hidden=32)
  ours = ViCMAE(cfg, rngs=nnx.Rngs(0))
  load_pytorch_weights(ours, {k: v.detach().numpy() for k, v in hf.state_dict().items()})
  rng = np.random.default_rng(4)
  x = rng.normal(size=(3, 3, image, image)).astype(np.float32)
  noise = rng.uniform(size=(3, cfg.num_patches)).astype(np.float32)
  hf(pixel_values=torch.from_numpy(x), noise=torch.from_numpy(noise)).loss.backward()
  hf_grads = {k: p.grad.numpy() for k, p in hf.named_parameters() if p.grad is not None}

  xj = jnp.asarray(x.transpose(0, 2, 3, 1))

  def loss_fn(model):
    out = model(xj, xj, noise=(jnp.asarray(noise), jnp.asarray(noise)), train=False)
    return losses.reconstruction_loss(per_view(out.pred)[0], xj, per_view(out.mask)[0], patch)

  grads = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.grad(loss_fn)(ours)))
  ours_hf = export_state_dict(grads, cfg, parts=("encoder", "decoder"), layout="hf")
  # Tolerance on the scale of the whole gradient: some entries (the key bias) are zero in exact
  # arithmetic, and both sides leave float32 rounding noise there.
  scale = max(float(np.abs(g).max()) for g in hf_grads.values())
  compared = 0
  for key, expected in hf_grads.items():
    np.testing.assert_allclose(ours_hf[key], expected, rtol=1e-3, atol=1e-5 * scale, err_msg=key)
    compared += 1
  assert compared == len(ours_hf) - 2  # all but the two fixed position tables

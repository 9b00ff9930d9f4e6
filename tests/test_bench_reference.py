"""The PyTorch reference of `bench/train_step.py` computes the same model as ours.

Same weights (HF ViTMAE -> ours by the importer; projector, predictor and target heads copied
directly), same masking noise, BatchNorm in train mode: the total loss and both of its terms must
agree in fp32, in both contrastive modes. Without this the benchmark's speed ratio means nothing.
"""
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import torch_vicmae  # noqa: E402
from vicmae_jax import flops, losses  # noqa: E402
from vicmae_jax.convert import load_pytorch_weights  # noqa: E402
from vicmae_jax.models import ViCMAE, model_config  # noqa: E402


def _tiny_cfg(mode: str):
  return model_config("test", image_size=32, width=64, depth=2, heads=4, mlp_dim=256, patch=4,
                      decoder_width=32, decoder_depth=2, decoder_heads=4, mask_ratio=0.5,
                      contrastive_mode=mode, projector_hidden=96, projector_out=16,
                      predictor_hidden=48)


def _copy_head(src: torch.nn.Sequential, dst) -> None:
  """torch Sequential(Linear, BN, ReLU, ..., Linear) -> our MLPHead (kernels transposed)."""
  linears = [m for m in src if isinstance(m, torch.nn.Linear)]
  norms = [m for m in src if isinstance(m, torch.nn.BatchNorm1d)]
  assert len(linears) == len(dst.linears) and len(norms) == len(dst.norms)
  for t, ours in zip(linears, dst.linears):
    ours.kernel[...] = jnp.asarray(t.weight.detach().numpy().T)
    ours.bias[...] = jnp.asarray(t.bias.detach().numpy())
  for t, ours in zip(norms, dst.norms):
    ours.scale[...] = jnp.asarray(t.weight.detach().numpy())
    ours.bias[...] = jnp.asarray(t.bias.detach().numpy())


def _models(mode: str, with_ours: bool = True):
  cfg = _tiny_cfg(mode)
  torch.manual_seed(0)
  ref = torch_vicmae.TorchViCMAE(cfg)
  with torch.no_grad():
    # Non-zero biases and BatchNorm affines exercise every bias path.
    for p in ref.parameters():
      if p.ndim == 1:
        p.add_(0.05 * torch.randn_like(p))
    ref.mae.decoder.mask_token.normal_(std=0.02)
  if ref.ema:
    ref.reset_target()
  ref.train()
  if not with_ours:
    return cfg, ref, None
  ours = ViCMAE(cfg, rngs=nnx.Rngs(0))
  sd = {k: v.numpy() for k, v in ref.mae.state_dict().items()}
  report = load_pytorch_weights(ours, sd)
  assert report.parts == ("encoder", "decoder") and not report.notes
  _copy_head(ref.projector, ours.projector)
  if ref.ema:
    _copy_head(ref.predictor, ours.predictor)
    _copy_head(ref.target_projector, ours.target.projector)
  return cfg, ref, ours


@pytest.mark.parametrize("mode", ["shared_projector", "ema_target"])
def test_reference_loss_matches_ours(mode):
  cfg, ref, ours = _models(mode)
  n = 4
  rng = np.random.default_rng(1)
  v1, v2 = (rng.normal(size=(n, 3, 32, 32)).astype(np.float32) for _ in range(2))
  noise = rng.uniform(size=(2 * n, cfg.num_patches)).astype(np.float32)
  with torch.no_grad():
    total, recon, contrast = ref(torch.from_numpy(v1), torch.from_numpy(v2),
                                 noise=torch.from_numpy(noise))
  j1, j2 = (jnp.asarray(v.transpose(0, 2, 3, 1)) for v in (v1, v2))
  out = ours(j1, j2, noise=(jnp.asarray(noise[:n]), jnp.asarray(noise[n:])), train=True)
  j_total, metrics = losses.vicmae_loss(out, j1, j2, patch=cfg.patch, mode=mode)
  # The contrastive term is O(log N) and carries no 0.03 factor: check it on its own too.
  assert abs(float(metrics["recon_loss"]) - float(recon)) < 1e-4
  assert abs(float(metrics["contrastive_loss"]) - float(contrast)) < 1e-4
  assert abs(float(j_total) - float(total)) < 1e-4
  assert float(contrast) > 0.1  # a non-trivial value, not two zeros agreeing
  # BatchNorm running statistics: the reference calls each head once per view (two updates), as
  # the released projector does; ours must end in the same state.
  heads = [(ref.projector, ours.projector)]
  if ref.ema:
    heads += [(ref.predictor, ours.predictor), (ref.target_projector, ours.target.projector)]
  for t_head, j_head in heads:
    t_norms = [m for m in t_head if isinstance(m, torch.nn.BatchNorm1d)]
    for t, j in zip(t_norms, j_head.norms):
      np.testing.assert_allclose(j.mean[...], t.running_mean.numpy(), rtol=1e-4, atol=1e-5)
      np.testing.assert_allclose(j.var[...], t.running_var.numpy(), rtol=1e-4, atol=1e-5)


def test_reference_step_runs_and_updates_target():
  """One reference step: finite loss, online weights move, the target follows by EMA only."""
  cfg, ref, _ = _models("ema_target", with_ours=False)
  step = torch_vicmae.TrainStep(ref, total_steps=10)
  t_before = ref.target_projector[0].weight.detach().clone()
  o_before = ref.projector[0].weight.detach().clone()
  v = torch.randn(4, 3, 32, 32)
  assert np.isfinite(step(v, v + 0.1 * torch.randn_like(v)))
  o_after = ref.projector[0].weight.detach()
  t_after = ref.target_projector[0].weight.detach()
  assert not torch.equal(o_before, o_after)
  m = torch_vicmae.cosine_momentum(0, 10)
  torch.testing.assert_close(t_after, m * t_before + (1 - m) * o_after, rtol=1e-5, atol=1e-6)
  # The reference's analytic FLOPs differ from ours only by embedding the masked patches.
  assert torch_vicmae.train_flops_per_pair(cfg) > flops.train_flops_per_pair(cfg)


def test_benchmark_ratio_is_taken_per_pair_of_rounds():
  """`bench/train_step.py` runs each side in its own process, in alternating rounds; the ratio is
  the PyTorch round's median step time over the adjacent JAX round's."""
  from bench import train_step as bench_train_step
  jax_rounds = [[2.0, 2.2, 9.0], [1.0, 1.1, 1.2]]
  torch_rounds = [[3.0, 3.3, 3.1], [2.4, 2.2, 2.3]]
  ratios = bench_train_step.round_ratios(jax_rounds, torch_rounds)
  np.testing.assert_allclose(ratios, [3.1 / 2.2, 2.3 / 1.1])

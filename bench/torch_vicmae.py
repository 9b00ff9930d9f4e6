"""A PyTorch ViC-MAE training step: the reference side of `bench/train_step.py`.

Hugging Face `ViTMAEForPreTraining` supplies the encoder, decoder and norm-pix reconstruction
loss; the projector, predictor, contrastive losses and EMA target branch are written here to
match `vicmae_jax` (docs/decisions.md: the heads and losses sections, D1-D3).
`tests/test_bench_reference.py` checks that both compute the same loss from the same weights and
masks, so the speed comparison is fair.

Layout: images are [N, 3, H, W] (torch's), the two views go through the encoder as one batch of
2N images, as the JAX model does.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from vicmae_jax import flops
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.models.posembed import sincos_2d


def mlp_head(dims: list[int]) -> nn.Sequential:
  """[Linear, BatchNorm1d, ReLU] per hidden layer, then Linear (the released projector's layout:
  Linears at 3j, BatchNorms at 3j + 1)."""
  mods: list[nn.Module] = []
  for a, b in zip(dims[:-2], dims[1:-1]):
    mods += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
  mods.append(nn.Linear(dims[-2], dims[-1]))
  for m in mods:
    if isinstance(m, nn.Linear):  # MAE's init, as ours
      nn.init.xavier_uniform_(m.weight)
      nn.init.zeros_(m.bias)
  return nn.Sequential(*mods)


def hf_config(cfg: ModelConfig) -> transformers.ViTMAEConfig:
  """The Hugging Face ViTMAE config with our model's sizes and MAE's numerics."""
  return transformers.ViTMAEConfig(
      hidden_size=cfg.width, num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads,
      intermediate_size=cfg.mlp_dim, image_size=cfg.image_size, patch_size=cfg.patch,
      decoder_hidden_size=cfg.decoder_width, decoder_num_hidden_layers=cfg.decoder_depth,
      decoder_num_attention_heads=cfg.decoder_heads, decoder_intermediate_size=4 * cfg.decoder_width,
      layer_norm_eps=1e-6, norm_pix_loss=True, mask_ratio=cfg.mask_ratio, hidden_act="gelu",
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
  """Symmetric SimCLR loss over the 2N embeddings (as `vicmae_jax.losses.nt_xent`)."""
  n = z1.shape[0]
  z = F.normalize(torch.cat([z1, z2]), dim=-1)
  logits = z @ z.T / temperature
  logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
  labels = torch.cat([torch.arange(n) + n, torch.arange(n)]).to(z.device)
  return F.cross_entropy(logits, labels)


def info_nce(p: torch.Tensor, z: torch.Tensor, temperature: float) -> torch.Tensor:
  """InfoNCE of predictions against targets, other rows as negatives (MoCo v3 form)."""
  logits = F.normalize(p, dim=-1) @ F.normalize(z, dim=-1).T / temperature
  return F.cross_entropy(logits, torch.arange(p.shape[0], device=p.device))


class TorchViCMAE(nn.Module):
  """ViC-MAE on top of `ViTMAEForPreTraining`, in either contrastive mode of `cfg`."""

  def __init__(self, cfg: ModelConfig, *, temperature: float = 0.1, weight_recon: float = 0.97,
               weight_contrast: float = 0.03):
    super().__init__()
    self.cfg = cfg
    self.temperature = temperature
    self.weight_recon = weight_recon
    self.weight_contrast = weight_contrast
    self.mae = transformers.ViTMAEForPreTraining(hf_config(cfg))
    with torch.no_grad():
      # transformers 5 leaves the fixed tables at zero in a fresh model; use MAE's sin-cos ones.
      self.mae.vit.embeddings.position_embeddings.copy_(
          torch.from_numpy(sincos_2d(cfg.width, cfg.grid))[None])
      self.mae.decoder.decoder_pos_embed.copy_(
          torch.from_numpy(sincos_2d(cfg.decoder_width, cfg.grid))[None])
    self.projector = mlp_head(
        [cfg.width, cfg.projector_hidden, cfg.projector_hidden, cfg.projector_out])
    self.ema = cfg.contrastive_mode == "ema_target"
    if self.ema:
      self.predictor = mlp_head([cfg.projector_out, cfg.predictor_hidden, cfg.projector_out])
      self.reset_target()

  def reset_target(self) -> None:
    """Target branch = a frozen copy of the online encoder and projector (start of training)."""
    self.target_encoder = copy.deepcopy(self.mae.vit)
    self.target_projector = copy.deepcopy(self.projector)
    for p in list(self.target_encoder.parameters()) + list(self.target_projector.parameters()):
      p.requires_grad_(False)

  def online_parameters(self) -> list[nn.Parameter]:
    """What the optimizer updates (the fixed position tables have requires_grad=False)."""
    skip = {id(p) for m in ("target_encoder", "target_projector") if hasattr(self, m)
            for p in getattr(self, m).parameters()}
    return [p for p in self.parameters() if p.requires_grad and id(p) not in skip]

  def _heads(self, head: nn.Sequential, feats: torch.Tensor) -> torch.Tensor:
    # One call per view, as the released code: BatchNorm normalises each view on its own and
    # updates its running statistics once per view, view 1 first (ours: `layers.BatchNorm`).
    return torch.stack([head(feats[0]), head(feats[1])])

  @staticmethod
  def _pool(latent: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of the visible patch tokens (cls excluded) -> [2, N, D]."""
    return latent[:, 1:].mean(dim=1).reshape(2, n, -1)

  def forward(self, view1: torch.Tensor, view2: torch.Tensor,
              noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (total, recon, contrast) losses of one step. `noise`: [2N, L] masking noise."""
    n = view1.shape[0]
    images = torch.cat([view1, view2])
    if noise is None:
      noise = torch.rand(2 * n, self.cfg.num_patches, device=images.device)
    enc = self.mae.vit(images, noise=noise)
    latent = enc.last_hidden_state
    logits = self.mae.decoder(latent, enc.ids_restore).logits
    # HF's norm-pix loss over all 2N images equals the mean of the two views' losses: every image
    # has the same number of masked patches.
    target = self.mae.patchify(images)
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((logits - target) ** 2).mean(dim=-1)
    recon = (per_patch * enc.mask).sum() / enc.mask.sum()

    online = self._heads(self.projector, self._pool(latent, n))
    if self.ema:
      online = self._heads(self.predictor, online)
      with torch.no_grad():
        # The target sees the online branch's visible tokens: same noise, same masks
        # (docs/decisions.md, D2).
        t_latent = self.target_encoder(images, noise=noise).last_hidden_state
        tgt = self._heads(self.target_projector, self._pool(t_latent, n))
      contrast = 0.5 * (info_nce(online[0], tgt[1], self.temperature)
                        + info_nce(online[1], tgt[0], self.temperature))
    else:
      contrast = nt_xent(online[0], online[1], self.temperature)
    total = self.weight_recon * recon + self.weight_contrast * contrast
    return total, recon, contrast

  @torch.no_grad()
  def update_target(self, momentum: float) -> None:
    """target <- m * target + (1 - m) * online, on the encoder and projector."""
    for t_mod, o_mod in ((self.target_encoder, self.mae.vit),
                         (self.target_projector, self.projector)):
      t = [p for p in t_mod.parameters()]
      o = [p for p in o_mod.parameters()]
      torch._foreach_lerp_(t, o, 1.0 - momentum)


def make_optimizer(model: TorchViCMAE, lr: float = 1.5e-4) -> torch.optim.Optimizer:
  """AdamW(0.9, 0.95), weight decay 0.05 on tensors of rank >= 2 (ours: `optim.decay_mask`)."""
  params = model.online_parameters()
  groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.05},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
  try:  # the fused CPU kernel is torch's fastest AdamW; fall back where a build lacks it
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
  except (RuntimeError, TypeError):
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
  """As `vicmae_jax.ema.cosine_momentum`."""
  frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
  return final - (final - base) * 0.5 * (1.0 + math.cos(math.pi * frac))


class TrainStep:
  """forward, backward, AdamW step and (ema_target) EMA update of the target branch.

  `autocast=torch.bfloat16` runs the forward under `torch.autocast` (PyTorch's mixed precision:
  fp32 params, bf16 matmuls, fp32 softmax / norms / losses), backward outside it, as PyTorch
  recommends; the counterpart of our `dtype="bfloat16"`.
  """

  def __init__(self, model: TorchViCMAE, total_steps: int = 1000,
               autocast: torch.dtype | None = None):
    self.model = model.train()
    self.opt = make_optimizer(model)
    self.total_steps = total_steps
    self.autocast = autocast
    self.step = 0

  def __call__(self, view1: torch.Tensor, view2: torch.Tensor) -> float:
    device = view1.device.type
    with torch.autocast(device, dtype=self.autocast or torch.bfloat16,
                        enabled=self.autocast is not None):
      total, _, _ = self.model(view1, view2)
    self.opt.zero_grad(set_to_none=True)
    total.backward()
    self.opt.step()
    if self.model.ema:
      self.model.update_target(cosine_momentum(self.step, self.total_steps))
    self.step += 1
    return float(total.detach())


def train_flops_per_pair(cfg: ModelConfig) -> float:
  """Analytic training FLOPs per pair of the reference: ours plus the patch embedding of the
  masked patches (HF embeds all patches before masking; the JAX model gathers pixels first)."""
  masked_embed = 2 * (cfg.num_patches - cfg.len_keep) * cfg.patch_dim * cfg.width
  extra = 2 * 3 * masked_embed  # two online views, training = 3 x forward (the FLOP convention)
  if cfg.contrastive_mode == "ema_target":
    extra += 2 * masked_embed  # the target's forward
  return flops.train_flops_per_pair(cfg) + extra

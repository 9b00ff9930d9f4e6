"""ViC-MAE losses as pure functions (docs/decisions.md#losses; decisions D1 and D4 there).

All inputs are global arrays: under `jax.jit` with a batch sharded over a mesh, the similarity
matrices below span every device, so negatives are the whole (micro-)batch with no gather code and
no per-device index bug.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vicmae_jax import masking, typed_config


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The objective's settings (`config.loss`); the released recipe's values by default."""

  temperature: float = 0.1
  weight_recon: float = 0.97
  weight_contrast: float = 0.03
  contrast_ramp_steps: int = 0        # steps of the contrastive weight's ramp (docs/decisions.md, D4)...
  contrast_start_weight: float = 0.0  # ...from this value (0 steps: constant weight)
  norm_pix: bool = True               # reconstruct per-patch normalised pixels

  def __post_init__(self):
    typed_config.check(**{
        "temperature > 0": self.temperature > 0,
        "weight_recon >= 0 and weight_contrast >= 0": min(self.weight_recon,
                                                          self.weight_contrast) >= 0,
        "a positive loss weight": self.weight_recon + self.weight_contrast > 0,
        "contrast_ramp_steps >= 0": self.contrast_ramp_steps >= 0})


def normalized_pixel_targets(images: jax.Array, patch: int, eps: float = 1e-6) -> jax.Array:
  """Patchified images with each patch normalised by its mean and unbiased variance (norm_pix_loss)."""
  target = masking.patchify(images.astype(jnp.float32), patch)
  mean = jnp.mean(target, axis=-1, keepdims=True)
  var = jnp.var(target, axis=-1, keepdims=True, ddof=1)  # torch's default: unbiased
  return (target - mean) / jnp.sqrt(var + eps)


def reconstruction_loss(pred: jax.Array, images: jax.Array, mask: jax.Array, patch: int,
                        norm_pix: bool = True) -> jax.Array:
  """Mean squared error per patch, averaged over the masked patches only. Shapes [N, L, P], [N, L]."""
  target = (normalized_pixel_targets(images, patch) if norm_pix
            else masking.patchify(images.astype(jnp.float32), patch))
  per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=-1)
  return jnp.sum(per_patch * mask) / jnp.sum(mask)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps), as torch.nn.functional.normalize."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean cross-entropy and top-1 accuracy of integer `labels`."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  loss = -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))
  acc = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
  return loss, acc


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """Symmetric SimCLR loss over the 2N embeddings (`shared_projector` mode, the released objective).

  Each anchor's positive is the other view of its own sample, identified by its global position;
  every other of the 2N - 2 embeddings is a negative. Returns (loss, accuracy).
  """
  n = z1.shape[0]
  z = l2_normalize(jnp.concatenate([z1, z2], axis=0))
  logits = z @ z.T / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)  # an anchor is not its own pair
  labels = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
  return _cross_entropy(logits, labels)


def info_nce(p: jax.Array, z: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """InfoNCE of predictions p [N, C] against targets z [N, C]: z[i] is p[i]'s positive, the other
  rows of z its negatives (MoCo v3 form). Returns (loss, accuracy)."""
  logits = l2_normalize(p) @ l2_normalize(z).T / temperature
  return _cross_entropy(logits, jnp.arange(p.shape[0]))


def contrastive_loss(online: jax.Array, target: jax.Array | None, mode: str,
                     temperature: float) -> tuple[jax.Array, jax.Array]:
  """The contrastive term of `mode` (docs/decisions.md, D1). `online`, `target`: [2, N, C] per
  view. Returns (loss, accuracy)."""
  if mode == "shared_projector":
    return nt_xent(online[0], online[1], temperature)
  if target is None:
    raise ValueError("ema_target mode needs target projections.")
  # Each view's prediction is contrasted with the *other* view's target, symmetrised.
  l12, a12 = info_nce(online[0], target[1], temperature)
  l21, a21 = info_nce(online[1], target[0], temperature)
  return 0.5 * (l12 + l21), 0.5 * (a12 + a21)


def contrastive_weight(step: jax.Array, weight: float, ramp_steps: int = 0,
                       start_weight: float = 0.0) -> jax.Array:
  """The contrastive weight, optionally ramped linearly from `start_weight` over `ramp_steps`
  (docs/decisions.md, D4)."""
  if ramp_steps <= 0:
    return jnp.asarray(weight, jnp.float32)
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / ramp_steps, 0.0, 1.0)
  return start_weight + frac * (weight - start_weight)


def vicmae_loss(outputs, view1: jax.Array, view2: jax.Array, *, patch: int, mode: str,
                temperature: float = LossConfig.temperature,
                weight_recon: float = LossConfig.weight_recon,
                weight_contrast: jax.Array | float = LossConfig.weight_contrast,
                norm_pix: bool = LossConfig.norm_pix) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Total = w_recon * recon + w_contrast * contrast; returns (total, metrics with every term).

  `outputs` is the model's `Outputs`; reconstruction targets are the views the encoder saw.
  """
  n = view1.shape[0]
  # Pairs are interleaved in the model's per-image outputs (models.vicmae.interleave).
  pred = outputs.pred.reshape((n, 2) + outputs.pred.shape[1:])
  mask = outputs.mask.reshape((n, 2) + outputs.mask.shape[1:])
  recon_views = [reconstruction_loss(pred[:, i], view, mask[:, i], patch, norm_pix)
                 for i, view in enumerate((view1, view2))]
  recon = 0.5 * (recon_views[0] + recon_views[1])
  contrast, accuracy = contrastive_loss(outputs.online, outputs.target, mode, temperature)
  total = weight_recon * recon + weight_contrast * contrast
  metrics = {
      "loss": total,
      "recon_loss": recon,
      "contrastive_loss": contrast,
      "contrastive_accuracy": accuracy,
      "contrastive_weight": jnp.asarray(weight_contrast, jnp.float32),
      # Collapse monitor: the std of normalised embeddings falls towards 0 if all collapse.
      "embedding_std": jnp.mean(jnp.std(l2_normalize(outputs.online.reshape(2 * n, -1)), axis=0)),
  }
  return total, metrics

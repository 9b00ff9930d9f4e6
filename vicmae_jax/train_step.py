"""The pure pretraining step: `train_step(state, batch)`, arrays in and arrays out, no I/O.

`train.build_train_step` binds its static settings (`StepConfig`) and compiles it with `jax.jit`,
explicit shardings and a donated state (docs/decisions.md: D3 EMA target, D8 negatives per
micro-batch, D10 pure jitted step). Non-finite updates are skipped and counted.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vicmae_jax import ema, losses
from vicmae_jax.models import merge_model
from vicmae_jax.train_state import TrainState


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static settings of the train step (everything that is not an array)."""

  patch: int
  contrastive_mode: str
  total_steps: int
  loss: losses.LossConfig = losses.LossConfig()
  ema: ema.EmaConfig = ema.EmaConfig()
  accum_steps: int = 1


def _micro_batches(batch: dict[str, jax.Array], accum: int) -> dict[str, jax.Array]:
  """[B, ...] -> [accum, B / accum, ...] taking every accum-th example into one micro-batch.

  Strided (not contiguous) slices keep each micro-batch spread over all devices that hold the
  batch, so no device idles while another computes its micro-batch.
  """
  def split(x):
    return x.reshape((x.shape[0] // accum, accum) + x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(split, batch)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, graphdef,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               sc: StepConfig) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update on a global batch, with `sc.accum_steps` micro-batches.

  Negatives of the contrastive loss come from each micro-batch (docs/decisions.md, D8). A
  non-finite loss or gradient leaves params, optimizer, target and BatchNorm statistics untouched
  and is counted.
  """
  step_key = jax.random.fold_in(state.rng, state.step)
  lc = sc.loss
  w_contrast = losses.contrastive_weight(state.step, lc.weight_contrast, lc.contrast_ramp_steps,
                                         lc.contrast_start_weight)

  def loss_fn(params, batch_stats, micro, key):
    model = merge_model(graphdef, params, state.target, batch_stats)
    out = model(micro["view1"], micro["view2"], rng=key, train=True)
    total, metrics = losses.vicmae_loss(
        out, micro["view1"], micro["view2"], patch=sc.patch, mode=sc.contrastive_mode,
        temperature=lc.temperature, weight_recon=lc.weight_recon, weight_contrast=w_contrast,
        norm_pix=lc.norm_pix)
    return total, (metrics, nnx.state(model, nnx.BatchStat))

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  views = {k: batch[k] for k in ("view1", "view2")}
  if sc.accum_steps == 1:
    (_, (metrics, new_stats)), grads = grad_fn(state.params, state.batch_stats, views, step_key)
  else:
    micro = _micro_batches(views, sc.accum_steps)

    def body(carry, xs):
      grad_sum, stats = carry
      mb, i = xs
      (_, (m, stats)), g = grad_fn(state.params, stats, mb, jax.random.fold_in(step_key, i))
      return (jax.tree.map(jnp.add, grad_sum, g), stats), m

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (grad_sum, new_stats), per_micro = jax.lax.scan(
        body, (zeros, state.batch_stats), (micro, jnp.arange(sc.accum_steps)))
    grads = jax.tree.map(lambda g: g / sc.accum_steps, grad_sum)
    metrics = jax.tree.map(jnp.mean, per_micro)

  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
  momentum = ema.cosine_momentum(state.step, sc.total_steps, sc.ema.base, sc.ema.final)

  def apply(_):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    target = ema.update_target(state.target, params, momentum)
    return params, target, new_stats, opt_state

  def keep(_):
    return state.params, state.target, state.batch_stats, state.opt_state

  # A conditional, not a select per leaf: the skipped branch does no optimizer work, and the good
  # branch writes the donated buffers in place instead of through one more pass over the state.
  params, target, batch_stats, opt_state = jax.lax.cond(finite, apply, keep, None)
  bad = (~finite).astype(jnp.int32)
  new_state = state.replace(
      step=state.step + 1, params=params, target=target, batch_stats=batch_stats,
      opt_state=opt_state, skipped=state.skipped + bad,
      consecutive_skipped=jnp.where(finite, 0, state.consecutive_skipped + 1))
  metrics = dict(metrics)
  metrics.update(
      learning_rate=schedule(state.step), ema_momentum=momentum, grad_norm=grad_norm,
      param_norm=optax.tree.norm(new_state.params), update_skipped=bad,
      skipped_steps=new_state.skipped, consecutive_skipped=new_state.consecutive_skipped)
  return new_state, metrics

"""Pretraining state and the pure train step (D3, D8, D10).

`train_step(state, batch)` is a pure function: arrays in, arrays out, no I/O. `train.py` binds
its static settings and compiles it with `jax.jit`, explicit shardings and a donated state.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from vicmae_jax import ema, hardware, losses, sharding
from vicmae_jax.models import ModelConfig, ViCMAE, merge_model, split_model, update_target


@flax.struct.dataclass
class TrainState:
  step: jax.Array                 # int32 scalar: optimizer updates done (skipped ones included)
  params: nnx.State               # online encoder, decoder, projector, predictor
  target: nnx.State               # EMA target encoder + projector (empty in shared_projector mode)
  batch_stats: nnx.State          # BatchNorm running statistics (online and target heads)
  opt_state: Any
  rng: jax.Array                  # raw uint32 key; per-step keys are folded in from `step`
  skipped: jax.Array              # int32: updates skipped for a non-finite loss or gradient
  consecutive_skipped: jax.Array  # int32: length of the current run of skipped updates


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static settings of the train step (everything that is not an array)."""

  patch: int
  mode: str
  total_steps: int
  temperature: float = 0.1
  weight_recon: float = 0.97
  weight_contrast: float = 0.03
  contrast_ramp_steps: int = 0
  contrast_start_weight: float = 0.0
  norm_pix: bool = True
  accum_steps: int = 1
  ema_base: float = 0.996
  ema_final: float = 1.0


def _abstract_graphdef(cfg: ModelConfig):
  return split_model(nnx.eval_shape(lambda: ViCMAE(cfg, rngs=nnx.Rngs(0))))[0]


def _initializer(cfg: ModelConfig, tx: optax.GradientTransformation):
  def init(rng: jax.Array) -> TrainState:
    model = ViCMAE(cfg, rngs=nnx.Rngs(params=rng))
    _, params, target, rest = split_model(model)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, target=target, batch_stats=rest,
                      opt_state=tx.init(params), rng=jax.random.fold_in(rng, 1),
                      skipped=zero, consecutive_skipped=zero)
  return init


def abstract_train_state(cfg: ModelConfig, tx: optax.GradientTransformation, mesh: Mesh,
                         fsdp_min_mb: float = 4.0):
  """(graphdef, state skeleton, shardings): shapes, dtypes and shardings over `mesh`, nothing
  allocated. The skeleton is also the checkpoint restore target, and what `compile_check`
  compiles against for a slice that is not attached."""
  abstract = jax.eval_shape(_initializer(cfg, tx), jax.random.PRNGKey(0))
  shardings = sharding.tree_shardings(abstract, mesh, fsdp_min_mb)
  return _abstract_graphdef(cfg), sharding.skeleton(abstract, shardings), shardings


def init_train_state(cfg: ModelConfig, tx: optax.GradientTransformation, seed: int, mesh: Mesh,
                     shardings) -> TrainState:
  """The state, initialised by one jitted call straight into `shardings` (from
  `abstract_train_state`): no parameter is ever materialised unsharded."""
  init = hardware.bind(_initializer(cfg, tx), mesh)
  return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(seed))


def create_train_state(cfg: ModelConfig, tx: optax.GradientTransformation, seed: int, mesh: Mesh,
                       fsdp_min_mb: float = 4.0):
  """Builds the state directly sharded over `mesh`: abstract shapes first, then a jitted init.

  Returns (graphdef, state, state shardings).
  """
  graphdef, _, shardings = abstract_train_state(cfg, tx, mesh, fsdp_min_mb)
  return graphdef, init_train_state(cfg, tx, seed, mesh, shardings), shardings


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

  Negatives of the contrastive loss come from each micro-batch (D8). A non-finite loss or
  gradient leaves params, optimizer, target and BatchNorm statistics untouched and is counted.
  """
  step_key = jax.random.fold_in(state.rng, state.step)
  w_contrast = losses.contrastive_weight(state.step, sc.weight_contrast, sc.contrast_ramp_steps,
                                         sc.contrast_start_weight)

  def loss_fn(params, batch_stats, micro, key):
    model = merge_model(graphdef, params, state.target, batch_stats)
    out = model(micro["view1"], micro["view2"], rng=key, train=True)
    total, metrics = losses.vicmae_loss(
        out, micro["view1"], micro["view2"], patch=sc.patch, mode=sc.mode,
        temperature=sc.temperature, weight_recon=sc.weight_recon, weight_contrast=w_contrast,
        norm_pix=sc.norm_pix)
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
  momentum = ema.cosine_momentum(state.step, sc.total_steps, sc.ema_base, sc.ema_final)

  def apply(_):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    target = (update_target(state.target, params, momentum) if sc.mode == "ema_target"
              else state.target)
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

"""The fine-tuning step: state, loss, optimizer (AdamW, timm no-decay rules, layer-wise lr
decay), the jitted train / eval / logits functions of a config for one mesh.

`build_finetune_step` is what `evaluation.finetune` runs and `compile_check` compiles for a
named slice, from the same config parsing.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from vicmae_jax import flops, hardware, optim, sharding
from vicmae_jax.evaluation import classifiers, layer_decay, metrics
from vicmae_jax.evaluation.config import EvalConfig, eval_config
from vicmae_jax.models.config import ModelConfig


@flax.struct.dataclass
class FinetuneState:
  step: jax.Array        # int32 scalar: optimizer updates done (skipped ones included)
  params: nnx.State      # classifier params (encoder + fc_norm + head)
  opt_state: Any
  rng: jax.Array         # raw key; per-step keys (drop path) are folded in from `step`
  skipped: jax.Array               # int32: updates skipped for a non-finite loss or gradient
  consecutive_skipped: jax.Array   # int32: length of the current run of skipped updates


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """timm SoftTargetCrossEntropy: mean over the batch of -sum(targets * log_softmax(logits))."""
  return jnp.mean(-jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32), -1), -1))


def weight_decay_mask(params: Any) -> Any:
  """timm: no decay on 1-D params (biases, norms) nor on pos_embed(_*) / cls_token."""
  def keep(path, x):
    names = [getattr(p, "key", getattr(p, "name", None)) for p in path]
    return (x.ndim >= 2 and "cls_token" not in names
            and not any(str(n).startswith("pos_embed") for n in names))
  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(params: Any, schedule: optax.Schedule, *, depth: int, layer_decay_rate: float,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   weight_decay: float = 0.05, grad_clip: float = 0.0
                   ) -> optax.GradientTransformation:
  """AdamW (timm no-decay rules) with layer-wise lr decay; optional global-norm clipping."""
  chain = [optax.clip_by_global_norm(grad_clip)] if grad_clip and grad_clip > 0 else []
  chain.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                           mask=weight_decay_mask))
  if layer_decay_rate < 1.0:
    chain.append(layer_decay.scale_by_tree(
        layer_decay.layer_multipliers(params, depth, layer_decay_rate)))
  return optax.chain(*chain)


def train_step(state: FinetuneState, batch: dict[str, jax.Array], *, graphdef,
               tx: optax.GradientTransformation, schedule: optax.Schedule
               ) -> tuple[FinetuneState, dict[str, jax.Array]]:
  """One AdamW update on soft targets (mixup / cutmix / smoothing applied on the host).

  As in pretraining (train_step.py), a non-finite loss or gradient leaves params and optimizer
  state untouched and is counted (`skipped`, `consecutive_skipped`); the trainer stops a run
  after `max_consecutive_skipped` of them in a row (run_lib.stop_if_diverged).
  """
  key = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    model = nnx.merge(graphdef, params, copy=True)
    logits = model(batch["image"], rng=key)
    return soft_cross_entropy(logits, batch["target"]), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  def apply(_):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), opt_state

  def keep(_):
    return state.params, state.opt_state

  # A conditional, not a select per leaf: a skipped step does no optimizer work, and a good one
  # updates the donated buffers in place (pretraining's choice, train_step.py).
  params, opt_state = jax.lax.cond(finite, apply, keep, None)
  bad = (~finite).astype(jnp.int32)
  new = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                      skipped=state.skipped + bad,
                      consecutive_skipped=jnp.where(finite, 0, state.consecutive_skipped + 1))
  acc = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
  return new, {"loss": loss, "train_top1_unmixed_labels": acc,
               "learning_rate": schedule(state.step), "grad_norm": grad_norm,
               "update_skipped": bad, "skipped_steps": new.skipped,
               "consecutive_skipped": new.consecutive_skipped}


def eval_step(params: nnx.State, batch: dict[str, jax.Array], *, graphdef) -> dict[str, jax.Array]:
  """Summed top-1/top-5 hits and count over the valid (unpadded) rows of one batch."""
  model = nnx.merge(graphdef, params, copy=True)
  logits = model(batch["image"])
  return metrics.topk_correct(logits, batch["label"], batch["mask"])


@dataclasses.dataclass(frozen=True)
class FinetuneStep:
  """The fine-tuning step of a config for one mesh, before any array exists (see
  `train.CompiledStep`): jitted train, eval and logits functions traced for the mesh's platform,
  the state and batch as sharded `ShapeDtypeStruct`s, and `init_state(params)`."""

  fn: Any
  eval_fn: Any
  logits_fn: Any
  init_state: Any
  state: Any
  state_shardings: Any
  batch: dict[str, jax.ShapeDtypeStruct]
  model_cfg: ModelConfig
  model_flops: float      # analytic training FLOPs of one step (flops.py conventions)


def schedule_steps(config: EvalConfig, per_epoch: int) -> tuple[int, int]:
  """(total steps, warm-up steps) of a fine-tuning config."""
  sched = optim.schedule(per_epoch, num_epochs=config.num_epochs,
                         warmup_epochs=config.optim.warmup_epochs, total_steps=config.total_steps)
  return sched.total_steps, sched.warmup_steps


def build_finetune_step(config: EvalConfig | ml_collections.ConfigDict, mesh, *, num_classes: int,
                        model_cfg: ModelConfig | None = None, model=None, total: int | None = None,
                        warmup: int | None = None) -> FinetuneStep:
  """Optimizer, state skeleton and jitted steps of a fine-tuning config: what `finetune` runs
  and `compile_check` compiles for a named slice. `model` (concrete or abstract) defaults to an
  abstract one of `model_cfg` (default: the config's architecture); `total`/`warmup` default to
  the config's own (the schedule is a value in the program, not a shape)."""
  config = eval_config(config)
  # An "auto" dtype resolved for the mesh's platform (the trainer passes it resolved already).
  model_cfg = (model_cfg or config.model).for_platform(hardware.platform_of(mesh))
  video = config.is_video
  if model is None:
    new = classifiers.new_video_model if video else classifiers.build_classifier
    model = nnx.eval_shape(lambda: new(config, model_cfg, num_classes))
  if total is None:
    total, warmup = schedule_steps(config, config.steps_per_epoch or 1)
  graphdef, params = nnx.split(model, nnx.Param)
  lr_fn = optim.learning_rate_schedule(
      optim.peak_learning_rate(config.optim.base_lr, config.batch_size), total, warmup,
      config.optim.min_lr)
  tx = make_optimizer(params, lr_fn, depth=model_cfg.depth,
                      layer_decay_rate=config.optim.layer_decay, b1=config.optim.b1,
                      b2=config.optim.b2, eps=config.optim.eps,
                      weight_decay=config.optim.weight_decay, grad_clip=config.optim.grad_clip)

  def init_state(params):
    zero = jnp.zeros((), jnp.int32)
    return FinetuneState(step=zero, params=params, opt_state=tx.init(params),
                         rng=jax.random.PRNGKey(config.seed + 1), skipped=zero,
                         consecutive_skipped=zero)

  abstract = jax.eval_shape(init_state, params)
  shardings = sharding.tree_shardings(abstract, mesh, config.mesh.fsdp_min_mb)
  batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  b, size = config.batch_size, model_cfg.image_size
  frames = (config.video.num_frames,) if video else ()
  batch = sharding.skeleton({"image": jax.ShapeDtypeStruct((b,) + frames + (size, size, 3),
                                                           jnp.float32),
                             "target": jax.ShapeDtypeStruct((b, num_classes), jnp.float32),
                             "label": jax.ShapeDtypeStruct((b,), jnp.int32)}, batch_sharding)
  bind = functools.partial(hardware.bind, target=mesh)
  fn = jax.jit(bind(functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=lr_fn)),
               in_shardings=(shardings, batch_sharding), out_shardings=(shardings, replicated),
               donate_argnums=0)
  eval_fn = jax.jit(bind(functools.partial(eval_step, graphdef=graphdef)),
                    in_shardings=(shardings.params, batch_sharding), out_shardings=replicated)
  logits_fn = jax.jit(bind(lambda p, x: nnx.merge(graphdef, p, copy=True)(x)),
                      in_shardings=(shardings.params, batch_sharding), out_shardings=replicated)
  tubelets = config.video.num_frames // config.video.tubelet if video else 1
  model_flops = 3.0 * b * flops.encoder_fwd(model_cfg, tubelets * model_cfg.num_patches)
  return FinetuneStep(fn=fn, eval_fn=eval_fn, logits_fn=logits_fn, init_state=init_state,
                      state=sharding.skeleton(abstract, shardings), state_shardings=shardings,
                      batch=batch,
                      model_cfg=model_cfg, model_flops=model_flops)

"""Image and video classification fine-tuning: `finetune(config, workdir)`
(docs/decisions.md#downstream-recipes).

Images: the released recipe. Videos (`config.video.enabled`, MAE-ST recipe): the image encoder
inflated to t = 2 tubelets with separable space-time positions and a dropout before the head
(models/video_classifier.py); in training each visited video is decoded once (only the clip's
span) and gives `video.repeat_aug` independently augmented clips (crop, flip, clip RandAugment,
cube erasing: evaluation/video_augment.py; reading: evaluation/video_data.py); at test
spatial x temporal views are averaged per video.

Same machinery as pretraining: ('data', 'fsdp') mesh, sharded state, `jax.jit` with explicit
shardings and a donated state, Orbax checkpoints with the data iterator state (auto-resume),
clu writers. Evaluation (resize + centre crop, top-1/top-5) covers the validation split exactly
once at any batch size.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from vicmae_jax import config_lib, flops, hardware, logging_utils, optim, run_lib, sharding
from vicmae_jax.evaluation import augment, init as init_lib, layer_decay, metrics, video_augment
from vicmae_jax.evaluation import video_data
from vicmae_jax.evaluation import data as data_lib
from vicmae_jax.evaluation.config import EvalConfig, eval_config
from vicmae_jax.models import video_classifier
from vicmae_jax.models.classifier import Classifier
from vicmae_jax.models.config import ModelConfig

_ARCH_FIELDS = ("variant", "width", "depth", "heads", "mlp_dim", "patch")


@flax.struct.dataclass
class FinetuneState:
  step: jax.Array        # int32 scalar: optimizer updates done
  params: nnx.State      # classifier params (encoder + fc_norm + head)
  opt_state: Any
  rng: jax.Array         # raw key; per-step keys (drop path) are folded in from `step`


# --- pure pieces ----------------------------------------------------------------------------------
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
  """One AdamW update on soft targets (mixup / cutmix / smoothing applied on the host)."""
  key = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    model = nnx.merge(graphdef, params, copy=True)
    logits = model(batch["image"], rng=key)
    return soft_cross_entropy(logits, batch["target"]), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  acc = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
  return new, {"loss": loss, "train_top1_unmixed_labels": acc,
               "learning_rate": schedule(state.step), "grad_norm": optax.tree.norm(grads)}


def eval_step(params: nnx.State, batch: dict[str, jax.Array], *, graphdef) -> dict[str, jax.Array]:
  """Summed top-1/top-5 hits and count over the valid (unpadded) rows of one batch."""
  model = nnx.merge(graphdef, params, copy=True)
  logits = model(batch["image"])
  return metrics.topk_correct(logits, batch["label"], batch["mask"])


# --- setup helpers --------------------------------------------------------------------------------
def resolve_model_config(config: EvalConfig | ml_collections.ConfigDict) -> ModelConfig:
  """The config's model, with the architecture of the init source when `init.use_source_arch`."""
  config = eval_config(config)
  cfg = config.model
  if config.init.source in ("workdir", "export") and config.init.use_source_arch:
    src = init_lib.source_model_config(config.init.source, config.init.path)
    cfg = dataclasses.replace(cfg, **{k: getattr(src, k) for k in _ARCH_FIELDS}).resolve()
  return cfg


def build_classifier(config: EvalConfig | ml_collections.ConfigDict, model_cfg: ModelConfig,
                     num_classes: int) -> Classifier:
  config = eval_config(config)
  return Classifier(model_cfg, num_classes, readout=config.head.readout,
                    drop_path_rate=config.head.drop_path,
                    rngs=nnx.Rngs(params=jax.random.PRNGKey(config.seed)))


def train_transform_fn(config: EvalConfig, image_size: int):
  a = config.aug
  return functools.partial(augment.train_transform, size=image_size,
                           rand_augment_n=a.rand_augment_n, rand_augment_m=a.rand_augment_m,
                           reprob=a.reprob, scale=(a.scale_min, 1.0),
                           hflip=a.hflip)


def mix_fn(config: EvalConfig, num_classes: int):
  a = config.aug
  return functools.partial(augment.mixup_cutmix, num_classes=num_classes, mixup_alpha=a.mixup,
                           cutmix_alpha=a.cutmix, switch_prob=a.switch_prob, prob=a.mix_prob,
                           smoothing=a.smoothing)


def evaluate(eval_fn, params, source, config: EvalConfig, image_size: int, batch_sharding) -> dict[str, float]:
  """Top-1/top-5 (%) over every example of `source` exactly once."""
  transform = functools.partial(augment.eval_transform, size=image_size,
                                crop_pct=config.aug.crop_pct)
  acc = metrics.MetricAccumulator(expected=len(source))
  for batch in data_lib.eval_iterator(source, config.eval_batch_size, transform=transform,
                                      sharding=batch_sharding, threads=config.data.threads):
    acc.add(eval_fn(params, {k: batch[k] for k in ("image", "label", "mask")}))
  return acc.result()


def is_video(config: EvalConfig | ml_collections.ConfigDict) -> bool:
  return eval_config(config).is_video


def video_kwargs(config: EvalConfig) -> dict[str, Any]:
  v = config.video
  return dict(num_frames=v.num_frames, stride=v.stride, sampling=v.sampling)


def video_sample_fn(config: EvalConfig, source, image_size: int):
  """`TrainIterator.sample_fn`: `video.repeat_aug` augmented clips per decoded video."""
  v, a = config.video, config.aug
  return functools.partial(
      video_data.load_train_clips, source=source, repeats=v.repeat_aug, size=image_size,
      crop=v.train_crop, scale=(a.scale_min, 1.0),
      jitter_scales=video_augment.jitter_scales_for(image_size, tuple(v.jitter_scales)),
      hflip=a.hflip, rand_augment_n=a.rand_augment_n,
      rand_augment_m=a.rand_augment_m, reprob=a.reprob, **video_kwargs(config))


def _new_video_model(config: EvalConfig, model_cfg: ModelConfig, num_classes: int):
  return video_classifier.VideoClassifier(
      model_cfg, num_classes, num_frames=config.video.num_frames, tubelet=config.video.tubelet,
      drop_path_rate=config.head.drop_path, head_dropout=config.video.head_dropout,
      rngs=nnx.Rngs(params=jax.random.PRNGKey(config.seed)))


def build_video_model(config: EvalConfig | ml_collections.ConfigDict, model_cfg: ModelConfig,
                      num_classes: int):
  """VideoClassifier with the image encoder of `config.init` inflated to tubelets."""
  config = eval_config(config)
  model = _new_video_model(config, model_cfg, num_classes)
  if config.init.source == "none":
    return model, None
  image = build_classifier(config, model_cfg, 1)
  report = init_lib.init_encoder(image, config.init.source, config.init.path,
                                 config.init.layout or None)
  encoder = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(image.encoder, nnx.Param)))
  loaded = video_classifier.init_from_image_encoder(model, encoder)
  logging.info("video model initialised from the image encoder: %s", loaded)
  return model, report


def evaluate_video(logits_fn, params, source, config: EvalConfig, image_size: int, batch_sharding
                   ) -> dict[str, float]:
  """Per-video accuracy over spatial x temporal views, every view exactly once."""
  v = config.video
  expected = v.test_spatial * v.test_temporal
  all_logits, all_ids, labels = [], [], {}
  for batch in video_data.view_batches(source, config.eval_batch_size, sharding=batch_sharding,
                                       size=image_size, spatial=v.test_spatial,
                                       temporal=v.test_temporal, **video_kwargs(config)):
    logits = np.asarray(jax.device_get(logits_fn(params, batch["image"])))
    mask = np.asarray(jax.device_get(batch["mask"])) > 0
    ids = np.asarray(jax.device_get(batch["video"]))[mask]
    all_logits.append(logits[mask])
    all_ids.append(ids)
    labels.update(zip(ids.tolist(), np.asarray(jax.device_get(batch["label"]))[mask].tolist()))
  ids = np.concatenate(all_ids)
  if len(ids) != len(source) * expected:
    raise AssertionError(f"evaluated {len(ids)} views, expected {len(source)} x {expected}")
  out = metrics.aggregate_views(np.concatenate(all_logits), ids, labels,
                                  expected_views=expected)
  out["top1"], out["top5"] = out["video_top1"], out["video_top5"]
  out["num_examples"] = out["num_videos"]
  return out


def validate(config: EvalConfig | ml_collections.ConfigDict, device_count: int) -> None:
  """Checks a fine-tuning config against the devices: one ConfigError naming every problem
  (unknown keys and bad modes or init sources included, from `eval_config`)."""
  config = eval_config(config)
  problems = []
  for name in ("batch_size", "eval_batch_size"):
    if getattr(config, name) % device_count:
      problems.append(f"{name} {getattr(config, name)} is not divisible by the {device_count} "
                      "devices")
  if config.head.readout not in ("cls", "mean"):
    problems.append(f"head.readout must be cls or mean, got {config.head.readout!r}")
  if config.init.source != "none" and not config.init.path:
    problems.append(f"init.source {config.init.source!r} needs init.path")
  if config.is_video:
    v = config.video
    if v.repeat_aug < 1 or config.batch_size % (v.repeat_aug * jax.process_count()):
      problems.append(f"batch_size {config.batch_size} is not a multiple of video.repeat_aug "
                      f"{v.repeat_aug} x {jax.process_count()} processes")
    if v.train_crop not in ("rrc", "jitter"):
      problems.append(f"video.train_crop must be rrc or jitter, got {v.train_crop!r}")
    if v.sampling not in ("clip", "segment"):
      problems.append(f"video.sampling must be clip or segment, got {v.sampling!r}")
  if problems:
    raise config_lib.ConfigError("Invalid config:\n  " + "\n  ".join(problems))


def _with_source(config: EvalConfig, source: str) -> EvalConfig:
  return dataclasses.replace(config, init=dataclasses.replace(config.init, source=source))


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
  model_cfg = model_cfg or config.model
  video = config.is_video
  if model is None:
    new = _new_video_model if video else build_classifier
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
    return FinetuneState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                         rng=jax.random.PRNGKey(config.seed + 1))

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


# --- the loop -------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Data:
  train: Any
  val: Any
  num_classes: int
  iterator: data_lib.TrainIterator
  per_epoch: int


def _open_data(config: EvalConfig, image_size: int, batch_sharding) -> _Data:
  """The train and val sources, the resumable train iterator, and the steps per epoch."""
  video = config.is_video
  build = video_data.build_video_source if video else data_lib.build_source
  spec = config.data.spec(short_side=config.video.short_side) if video else config.data.spec()
  train_src, val_src = build(spec, "train"), build(spec, "val")
  num_classes = config.num_classes or train_src.num_classes
  if video:
    # `batch_size` counts clips: batch_size / repeat_aug videos per step, so an epoch (every
    # video once) takes repeat_aug times the steps, as in MAE-ST, whose effective batch and lr
    # also count the repeats.
    repeats = config.video.repeat_aug
    loader = dict(sample_fn=video_sample_fn(config, train_src, image_size), repeats=repeats)
  else:
    repeats = 1
    loader = dict(transform=train_transform_fn(config, image_size))
  it = data_lib.TrainIterator(train_src, config.batch_size, config.seed,
                              mix=mix_fn(config, num_classes), sharding=batch_sharding,
                              threads=config.data.threads, workers=config.data.num_workers,
                              **loader)
  per_epoch = config.steps_per_epoch or max(len(train_src) * repeats // config.batch_size, 1)
  return _Data(train_src, val_src, num_classes, it, per_epoch)


def _initial_model(config: EvalConfig, model_cfg: ModelConfig, num_classes: int,
                   resuming: bool) -> tuple[nnx.Module, Any]:
  """The classifier with its initial weights, and the init report (None when resuming: the
  checkpoint overwrites everything, so the init source is not read)."""
  if config.is_video:
    return build_video_model(_with_source(config, "none") if resuming else config, model_cfg,
                             num_classes)
  model = build_classifier(config, model_cfg, num_classes)
  report = None if resuming else init_lib.init_encoder(
      model, config.init.source, config.init.path, config.init.layout or None)
  return model, report


def finetune(config: EvalConfig | ml_collections.ConfigDict, workdir: str,
             stop_after_steps: int | None = None) -> dict[str, Any]:
  """Fine-tunes (resuming from `workdir`); returns {'state', 'eval' (final metrics), 'init'}.

  `stop_after_steps` ends the run early after a checkpoint, as a preemption would (tests).
  """
  written, config = config, eval_config(config)
  validate(config, jax.device_count())
  video = config.is_video
  model_cfg = resolve_model_config(config)
  image_size = model_cfg.image_size
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  batch_sharding = sharding.batch_sharding(mesh)

  logging.info("=== data")
  data = _open_data(config, image_size, batch_sharding)
  train_src, val_src, num_classes, it = data.train, data.val, data.num_classes, data.iterator
  total, warmup = schedule_steps(config, data.per_epoch)
  logging.info("%d train / %d val examples, %d classes; %d steps/epoch, %d steps, %d warm-up",
               len(train_src), len(val_src), num_classes, data.per_epoch, total, warmup)

  logging.info("=== model and optimizer")
  run = run_lib.open_run(written, workdir)  # saves the config as written with each checkpoint
  model, report = _initial_model(config, model_cfg, num_classes, run.resuming())
  built = build_finetune_step(config, mesh, num_classes=num_classes, model_cfg=model_cfg,
                              model=model, total=total, warmup=warmup)
  state, first_step = run.restore_or_init(
      built.state, lambda: jax.jit(built.init_state, out_shardings=built.state_shardings)(
          nnx.state(model, nnx.Param)), it)
  model = None  # the state holds the (sharded) params now; free the unsharded copy
  if run.lead:
    logging_utils.log_parameter_overview(state.params)

  def run_eval(params):
    if video:
      out = evaluate_video(built.logits_fn, params, val_src, config, image_size, batch_sharding)
      for name, src in (("train", train_src), ("val", val_src)):
        if getattr(src, "counts", None):  # seek reads vs whole-video fallbacks
          logging.info("%s video decoding: %s", name, dict(src.counts))
      return out
    return evaluate(built.eval_fn, params, val_src, config, image_size, batch_sharding)

  result: dict[str, Any] = {}

  def log(step, state, m):
    scalars = {k: float(v) for k, v in jax.device_get(m).items()}
    run.write(step, scalars, f"step {step}/{total} " + " ".join(
        f"{k}={v:.4g}" for k, v in scalars.items()))

  def evaluate_now(step, state, m):
    result.clear()
    result.update(run_eval(state.params))
    scalars = {f"val_{k}": v for k, v in result.items()}
    run.write(step, scalars, f"eval at step {step}: {scalars}")

  logging.info("=== fine-tune from step %d of %d", first_step, total)
  hooks = [run_lib.Every(config.log_every_steps, total, log),
           run_lib.Every(config.eval_every_steps, total, evaluate_now, at_end=True)]
  end = run_lib.train_loop(run, state, first_step, total,
                           lambda s, b: built.fn(s, {k: b[k] for k in ("image", "target", "label")}),
                           it, hooks, it, stop_after_steps=stop_after_steps)
  if end.step == total and not result:
    result = run_eval(end.state.params)
  run.close()
  it.close()
  if run.lead and result:
    (run.workdir / "eval_results.json").write_text(json.dumps(
        {"step": end.step, **result}, indent=2))
  return {"state": end.state, "eval": result, "init": report, "step": end.step}

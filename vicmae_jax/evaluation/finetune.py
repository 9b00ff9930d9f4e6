"""Image and video classification fine-tuning: `finetune(config, workdir)`
(docs/decisions.md#downstream-recipes).

Images: the released recipe. Videos (`config.video.enabled`, MAE-ST recipe): the image encoder
inflated to t = 2 tubelets with separable space-time positions and a dropout before the head
(models/video_classifier.py); in training each visited video is decoded once (only the clip's
span) and gives `video.repeat_aug` independently augmented clips (crop, flip, clip RandAugment,
cube erasing: evaluation/video_augment.py; reading: evaluation/video_data.py); at test
spatial x temporal views are averaged per video.

Same machinery as pretraining: the run skeleton (run_lib: ('data', 'fsdp') mesh, Orbax
checkpoints with the data iterator state, auto-resume, clu writers), a sharded state and a
jitted step with explicit shardings and a donated state (evaluation/finetune_step.py), the
models of evaluation/classifiers.py. Evaluation (resize + centre crop, top-1/top-5) covers the
validation split exactly once at any batch size.

As sturdy as pretraining: bad training inputs are replaced, counted and capped (data/badinput.py);
unreadable validation inputs are left out and listed with their causes in eval_results.json;
a non-finite update is skipped and too many in a row stop the run (run_lib.stop_if_diverged);
the progress line carries examples/s, data wait and ETA (pretraining's Throughput).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from vicmae_jax import config_lib, logging_utils, run_lib, sharding
from vicmae_jax.data import badinput
from vicmae_jax.evaluation import augment, classifiers, finetune_step, metrics, video_augment
from vicmae_jax.evaluation import progress, video_data
from vicmae_jax.evaluation import data as data_lib
from vicmae_jax.evaluation.config import EvalConfig, eval_config


# --- setup helpers --------------------------------------------------------------------------------
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


def evaluate(eval_fn, params, source, config: EvalConfig, image_size: int, batch_sharding
             ) -> dict[str, Any]:
  """Top-1/top-5 (%) over every readable example of `source` exactly once; unreadable ones are
  left out of every count and listed with their causes (`unreadable`)."""
  transform = functools.partial(augment.eval_transform, size=image_size,
                                crop_pct=config.aug.crop_pct)
  skipped = badinput.SkippedInputs("eval val")
  acc = metrics.MetricAccumulator()
  for batch in data_lib.eval_iterator(source, config.eval_batch_size, transform=transform,
                                      sharding=batch_sharding, threads=config.data.threads,
                                      skipped=skipped, name="eval val"):
    acc.add(eval_fn(params, {k: batch[k] for k in ("image", "label", "mask")}))
  skipped.gather()
  acc.expected = len(source) - len(skipped)
  return {**acc.result(), **skipped.summary()}


def bad_input_kwargs(config: EvalConfig) -> dict[str, Any]:
  """`TrainIterator`'s bad-input limits from `config.data` (pretraining's policy and defaults)."""
  d = config.data
  return dict(max_retries=d.bad_input_max_retries, max_fraction=d.bad_input_max_fraction,
              min_examples=d.bad_input_min_examples)


def progress_line(step: int, total: int, scalars: dict[str, float]) -> str:
  """The fine-tuning log line: losses, skipped updates, examples/s, data wait, bad inputs, ETA."""
  bad = sum(scalars.get(f"data/bad_{k}", 0.0) for k in badinput.KINDS if k != "exhausted")
  eta = scalars.get("eta_hours", float("nan"))
  return (f"step {step}/{total} ({100 * step / max(total, 1):.1f}%) loss {scalars['loss']:.4f} "
          f"train_top1 {100 * scalars['train_top1_unmixed_labels']:.1f}% "
          f"lr {scalars['learning_rate']:.2e} skipped {int(scalars['skipped_steps'])} | "
          f"{scalars.get('examples_per_s', 0):.1f} examples/s "
          f"data {100 * scalars.get('data_wait_fraction', 0):.0f}% bad inputs {int(bad)} | "
          f"ETA {eta * 60:.1f} min")


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


def evaluate_video(logits_fn, params, source, config: EvalConfig, image_size: int, batch_sharding
                   ) -> dict[str, Any]:
  """Per-video accuracy over spatial x temporal views, every view of every readable video
  exactly once; unreadable videos are left out of every count and listed with their causes."""
  v = config.video
  expected = v.test_spatial * v.test_temporal
  skipped = badinput.SkippedInputs("video test")
  all_logits, all_ids, labels = [], [], {}
  for batch in video_data.view_batches(source, config.eval_batch_size, sharding=batch_sharding,
                                       size=image_size, spatial=v.test_spatial,
                                       temporal=v.test_temporal, skipped=skipped,
                                       name="video test", **video_kwargs(config)):
    logits = np.asarray(jax.device_get(logits_fn(params, batch["image"])))
    mask = np.asarray(jax.device_get(batch["mask"])) > 0
    ids = np.asarray(jax.device_get(batch["video"]))[mask]
    all_logits.append(logits[mask])
    all_ids.append(ids)
    labels.update(zip(ids.tolist(), np.asarray(jax.device_get(batch["label"]))[mask].tolist()))
  readable = len(source) - len(skipped)  # every process read every video: the list is whole
  if not readable:
    raise badinput.TooManyBadInputs(f"video test: none of the {len(source)} videos can be read")
  ids = np.concatenate(all_ids)
  if len(ids) != readable * expected:
    raise AssertionError(f"evaluated {len(ids)} views, expected {readable} x {expected}")
  out = metrics.aggregate_views(np.concatenate(all_logits), ids, labels,
                                  expected_views=expected)
  out["top1"], out["top5"] = out["video_top1"], out["video_top5"]
  out["num_examples"] = out["num_videos"]
  return {**out, **skipped.summary()}


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
  frame = (image_size, image_size, 3)
  if video:
    # `batch_size` counts clips: batch_size / repeat_aug videos per step, so an epoch (every
    # video once) takes repeat_aug times the steps, as in MAE-ST, whose effective batch and lr
    # also count the repeats.
    repeats = config.video.repeat_aug
    loader = dict(sample_fn=video_sample_fn(config, train_src, image_size), repeats=repeats,
                  example_shape=(config.video.num_frames,) + frame)
  else:
    repeats = 1
    loader = dict(transform=train_transform_fn(config, image_size), example_shape=frame)
  it = data_lib.TrainIterator(train_src, config.batch_size, config.seed,
                              mix=mix_fn(config, num_classes), sharding=batch_sharding,
                              threads=config.data.threads, workers=config.data.num_workers,
                              **bad_input_kwargs(config), **loader)
  per_epoch = config.steps_per_epoch or max(len(train_src) * repeats // config.batch_size, 1)
  return _Data(train_src, val_src, num_classes, it, per_epoch)


def finetune(config: EvalConfig | ml_collections.ConfigDict, workdir: str,
             stop_after_steps: int | None = None) -> dict[str, Any]:
  """Fine-tunes (resuming from `workdir`); returns {'state', 'eval' (final metrics), 'init'}.

  `stop_after_steps` ends the run early after a checkpoint, as a preemption would (tests).
  """
  written, config = config, eval_config(config)
  validate(config, jax.device_count())
  video = config.is_video
  model_cfg = classifiers.resolve_model_config(config)
  image_size = model_cfg.image_size
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  batch_sharding = sharding.batch_sharding(mesh)
  model_cfg = classifiers.for_mesh(model_cfg, mesh)  # model.dtype "auto" resolved once

  logging.info("=== data")
  data = _open_data(config, image_size, batch_sharding)
  train_src, val_src, num_classes, it = data.train, data.val, data.num_classes, data.iterator
  total, warmup = finetune_step.schedule_steps(config, data.per_epoch)
  logging.info("%d train / %d val examples, %d classes; %d steps/epoch, %d steps, %d warm-up",
               len(train_src), len(val_src), num_classes, data.per_epoch, total, warmup)

  logging.info("=== model and optimizer")
  run = run_lib.open_run(written, workdir)  # saves the config as written with each checkpoint
  model, report = classifiers.initial_model(config, model_cfg, num_classes, run.resuming())
  built = finetune_step.build_finetune_step(config, mesh, num_classes=num_classes, model_cfg=model_cfg,
                              model=model, total=total, warmup=warmup)
  state, first_step = run.restore_or_init(
      built.state, lambda: jax.jit(built.init_state, out_shardings=built.state_shardings)(
          nnx.state(model, nnx.Param)), it)
  model = None  # the state holds the (sharded) params now; free the unsharded copy
  if run.lead:
    logging_utils.log_parameter_overview(state.params, "classifier params", workdir=run.workdir)

  def run_eval(params):
    if video:
      out = evaluate_video(built.logits_fn, params, val_src, config, image_size, batch_sharding)
      for name, src in (("train", train_src), ("val", val_src)):
        if getattr(src, "counts", None):  # seek reads vs whole-video fallbacks
          logging.info("%s video decoding: %s", name, dict(src.counts))
      return out
    return evaluate(built.eval_fn, params, val_src, config, image_size, batch_sharding)

  result: dict[str, Any] = {}
  throughput = progress.make_throughput(total, config.batch_size, built.model_flops, mesh)

  def log(step, state, m):
    # Every process: the data counters are summed over processes (a collective).
    scalars = {k: float(v) for k, v in jax.device_get(m).items()}
    scalars.update(progress.throughput_metrics(throughput, step))
    scalars.update(logging_utils.aggregate_over_processes(it.metrics()))
    run.write(step, scalars, progress_line(step, total, scalars))
    run_lib.stop_if_diverged(run, step, state, it, scalars, config.max_consecutive_skipped)

  def evaluate_now(step, state, m):
    result.clear()
    result.update(run_eval(state.params))
    scalars = {f"val_{k}": v for k, v in result.items() if isinstance(v, (int, float))}
    run.write(step, scalars, f"eval at step {step}: {scalars}")

  logging.info("=== fine-tune from step %d of %d", first_step, total)
  hooks = [run_lib.Every(config.log_every_steps, total, log),
           run_lib.Every(config.eval_every_steps, total, evaluate_now, at_end=True)]
  end = run_lib.train_loop(run, state, first_step, total,
                           lambda s, b: built.fn(s, {k: b[k] for k in ("image", "target", "label")}),
                           it, hooks, it, throughput=throughput,
                           stop_after_steps=stop_after_steps)
  if end.step == total and not result:
    result = run_eval(end.state.params)
  run.close()
  it.close()
  if run.lead and result:
    (run.workdir / "eval_results.json").write_text(json.dumps(
        {"step": end.step, **result}, indent=2))
  return {"state": end.state, "eval": result, "init": report, "step": end.step}

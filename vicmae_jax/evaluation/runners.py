"""The frozen-encoder modes of `vicmae_jax.main`: `linprobe`, `knn`, `extract_features`, and the
in-loop `knn_eval` for pretraining.

Each mode builds the encoder (architecture from the init source when it stores one), loads the
weights, extracts cls and mean-pooled features of the train and val splits exactly once, and
writes its metrics to the workdir (TensorBoard + metrics.jsonl + a JSON results file). An
unreadable image is left out of its split and listed with its cause in the results file
(`train_unreadable`, `val_unreadable`); the metrics count the readable examples only.
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
from etils import epath
from flax import nnx

from vicmae_jax import logging_utils, run_lib, sharding, versions
from vicmae_jax.data import badinput
from vicmae_jax.evaluation import augment, progress
from vicmae_jax.evaluation import data as data_lib
from vicmae_jax.evaluation import features as features_lib
from vicmae_jax.evaluation import classifiers, init as init_lib, knn as knn_lib, linear_probe
from vicmae_jax.evaluation.config import EvalConfig, eval_config
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.models.vit import ViTEncoder


def _readouts(spec: str) -> list[str]:
  out = [r.strip() for r in spec.split(",") if r.strip()]
  bad = [r for r in out if r not in ("cls", "mean")]
  if bad:
    raise ValueError(f"readouts must be cls and/or mean, got {bad}")
  return out


def load_encoder(config: EvalConfig | ml_collections.ConfigDict
                 ) -> tuple[ViTEncoder, ModelConfig, init_lib.InitReport]:
  """The initialised encoder of `config.init` (a frozen classifier's encoder)."""
  versions.log_and_compare()  # kNN, extraction and the cached probe open no run (run_lib does it)
  config = eval_config(config)
  model_cfg = classifiers.resolve_model_config(config)
  model = classifiers.build_classifier(config, model_cfg, 1)
  report = init_lib.init_encoder(model, config.init.source, config.init.path,
                                 config.init.layout or None)
  return model.encoder, model.cfg, report


def split_features(config: EvalConfig, encoder: ViTEncoder, image_size: int, split: str,
                   source: data_lib.LabelledSource | None = None,
                   skipped: badinput.SkippedInputs | None = None) -> dict[str, np.ndarray]:
  """Features of the readable examples of `split`; unreadable ones go to `skipped`."""
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  source = source or data_lib.build_source(config.data.spec(), split)
  return features_lib.extract_features(
      encoder, source, batch_size=config.eval_batch_size, image_size=image_size,
      crop_pct=config.aug.crop_pct, sharding=sharding.batch_sharding(mesh),
      threads=config.data.threads, skipped=skipped, name=f"features {split}")


def _unreadable(skipped: dict[str, badinput.SkippedInputs]) -> dict[str, Any]:
  """The results entries of every split's unreadable inputs (`train_num_unreadable`, ...)."""
  out: dict[str, Any] = {}
  for split, s in skipped.items():
    out.update(s.summary(f"{split}_"))
  return out


def _write(workdir: str, name: str, results: dict[str, Any]) -> None:
  if jax.process_index() != 0:
    return
  writer, jsonl = logging_utils.create_writers(workdir)
  scalars = {k: float(v) for k, v in results.items() if isinstance(v, (int, float))}
  writer.write_scalars(0, scalars)
  jsonl.write(0, scalars)
  writer.flush()
  writer.close()
  (epath.Path(workdir) / f"{name}_results.json").write_text(json.dumps(results, indent=2))
  logging.info("%s results: %s", name, results)


def _frozen_features(config: EvalConfig, workdir: str):
  """(train features, val features, number of classes, init report, results entries of the
  unreadable inputs) of the configured encoder."""
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  encoder, cfg, report = load_encoder(config)
  skipped = {s: badinput.SkippedInputs(f"features {s}") for s in ("train", "val")}
  train = split_features(config, encoder, cfg.image_size, "train", skipped=skipped["train"])
  val = split_features(config, encoder, cfg.image_size, "val", skipped=skipped["val"])
  num_classes = config.num_classes or int(max(train["label"].max(), val["label"].max()) + 1)
  return train, val, num_classes, report, _unreadable(skipped)


def _probe_config(config: EvalConfig) -> linear_probe.ProbeConfig:
  lp = config.linprobe
  return linear_probe.ProbeConfig(epochs=lp.epochs, batch_size=lp.batch_size,
                                  base_lr=lp.base_lr, warmup_epochs=lp.warmup_epochs,
                                  weight_decay=lp.weight_decay,
                                  trust_coefficient=lp.trust_coefficient, seed=config.seed)


def linprobe(config: EvalConfig | ml_collections.ConfigDict, workdir: str,
             stop_after_steps: int | None = None) -> dict[str, Any]:
  """Linear probe (MAE recipe head + LARS) on each readout: augmented every epoch
  (`linprobe.augment`, MAE's protocol) or on features cached once."""
  written, config = config, eval_config(config)
  if config.linprobe.augment:
    return _augmented_linprobe(config, written, workdir, stop_after_steps)
  train, val, num_classes, report, unreadable = _frozen_features(config, workdir)
  results: dict[str, Any] = {"init": report.summary(), **unreadable}
  for r in _readouts(config.linprobe.readouts):
    m = linear_probe.probe((train[r], train["label"]), (val[r], val["label"]), num_classes,
                           _probe_config(config))
    results.update({f"linprobe_{r}_{k}": v for k, v in m.items()})
  _write(workdir, "linprobe", results)
  return results


def _augmented_linprobe(config: EvalConfig, written: Any, workdir: str,
                        stop_after_steps: int | None) -> dict[str, Any]:
  """MAE's probe: every step a fresh RandomResizedCrop + flip batch through the frozen encoder,
  one head per readout updated side by side; Orbax checkpoints (heads + data iterator) with
  auto-resume and SIGTERM handling as in pretraining. Validation: centre crop, exactly once.

  `stop_after_steps` ends the run early after a checkpoint, as a preemption would (tests).
  """
  lp = config.linprobe
  readouts = _readouts(lp.readouts)
  encoder, cfg, report = load_encoder(config)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  batch_sharding = sharding.batch_sharding(mesh)
  train_src = data_lib.build_source(config.data.spec(), "train")
  # The largest batch up to the configured one that the split and the devices allow.
  batch = min(lp.batch_size, len(train_src)) // jax.device_count() * jax.device_count()
  if batch == 0:
    raise ValueError(f"{len(train_src)} training examples cannot fill a batch on "
                     f"{jax.device_count()} devices")
  steps_per_epoch = max(len(train_src) // batch, 1)
  probe_cfg = dataclasses.replace(_probe_config(config), batch_size=batch)
  heads = linear_probe.ProbeHeads({r: cfg.width for r in readouts}, train_src.num_classes
                                  if not config.num_classes else config.num_classes,
                                  probe_cfg, steps_per_epoch)
  # Heads live replicated on the mesh; features arrive sharded over it (the BN batch statistics
  # are then a cross-device mean, as in one large batch).
  replicated = sharding.replicated(mesh)
  heads.state = jax.device_put(heads.state, replicated)
  transform = functools.partial(augment.train_transform, size=cfg.image_size, rand_augment_n=0,
                                reprob=0.0, scale=(lp.scale_min, 1.0))
  # Bad inputs replaced and capped as in fine-tuning; no `example_shape`: the integer-label
  # probe has no no-loss placeholder, so an example whose every retry fails stops the input.
  d = config.data
  it = data_lib.TrainIterator(train_src, batch, config.seed, transform=transform,
                              sharding=batch_sharding, threads=d.threads,
                              workers=d.num_workers, max_retries=d.bad_input_max_retries,
                              max_fraction=d.bad_input_max_fraction,
                              min_examples=d.bad_input_min_examples)
  run = run_lib.open_run(written, workdir)  # saves the config as written with each checkpoint
  state, step = run.restore_or_init(sharding.skeleton(heads.state, replicated),
                                    lambda: heads.state, it)
  total = heads.total_steps
  logging.info("augmented linear probe: %d examples, batch %d, %d steps/epoch, steps %d -> %d",
               len(train_src), batch, steps_per_epoch, step, total)

  def step_fn(state, batch):
    heads.state = state
    losses = heads.update(*batch)
    return heads.state, losses

  throughput = progress.make_throughput(total, batch, None, mesh)

  def log(step, state, losses):
    scalars = {f"linprobe_{r}_loss": float(v) for r, v in jax.device_get(losses).items()}
    scalars["learning_rate"] = float(heads.schedule(step - 1))
    rates = progress.throughput_metrics(throughput, step)
    scalars.update(rates)
    scalars.update(logging_utils.aggregate_over_processes(it.metrics()))  # every process
    run.write(step, scalars, f"probe step {step}/{total} " + " ".join(
        f"{k}={scalars[k]:.4g}" for k in scalars if k not in rates and not k.startswith("data/"))
        + f" | {rates['examples_per_s']:.1f} examples/s data "
        f"{100 * rates['data_wait_fraction']:.0f}% | ETA {60 * rates['eta_hours']:.1f} min")

  end = run_lib.train_loop(run, state, step, total, step_fn,
                           features_lib.feature_batches(encoder, it),
                           [run_lib.Every(config.log_every_steps, total, log)], it,
                           throughput=throughput, stop_after_steps=stop_after_steps,
                           name="probe")
  heads.state = end.state
  run.close()
  it.close()
  results: dict[str, Any] = {"init": report.summary(), "step": end.step}
  if end.step == total:
    skipped = badinput.SkippedInputs("features val")
    val = split_features(config, encoder, cfg.image_size, "val", skipped=skipped)
    results.update(_unreadable({"val": skipped}))
    for r in readouts:
      params, stats = jax.device_get(heads.head(r))
      m = linear_probe.evaluate_probe(params, stats, val[r], val["label"])
      results.update({f"linprobe_{r}_{k}": v for k, v in m.items()})
    _write(workdir, "linprobe", results)
  return results


def knn(config: EvalConfig | ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Weighted kNN (k, temperature from config.knn) on each readout."""
  config = eval_config(config)
  train, val, num_classes, report, unreadable = _frozen_features(config, workdir)
  results: dict[str, Any] = {"init": report.summary(), **unreadable}
  for r in _readouts(config.knn.readouts):
    m = knn_lib.knn_classify(train[r], train["label"], val[r], val["label"],
                             num_classes=num_classes, k=config.knn.k,
                             temperature=config.knn.temperature, name=f"knn {r}")
    results.update({f"{r}_{k}": v for k, v in m.items()})
  _write(workdir, "knn", results)
  return results


def extract(config: EvalConfig | ml_collections.ConfigDict, workdir: str) -> dict[str, list[str]]:
  """Writes WORKDIR/features/{split}_{cls,mean,label,index}.npy (+ .array_record if configured)
  and extract_features_results.json (rows and unreadable inputs per split)."""
  config = eval_config(config)
  encoder, cfg, report = load_encoder(config)
  logging.info(report.summary())
  out = {}
  results: dict[str, Any] = {"init": report.summary()}
  for split in [s.strip() for s in config.features.splits.split(",") if s.strip()]:
    skipped = badinput.SkippedInputs(f"features {split}")
    feats = split_features(config, encoder, cfg.image_size, split, skipped=skipped)
    results.update({f"{split}_num_examples": len(feats["index"]),
                    **_unreadable({split: skipped})})
    if jax.process_index() == 0:
      out[split] = features_lib.save_features(str(epath.Path(workdir) / "features"), split, feats,
                                              config.features.array_record)
  _write(workdir, "extract_features", results)
  return out


def knn_eval(encoder_params: Any, model_cfg: ModelConfig, train_split: data_lib.LabelledSource,
             val_split: data_lib.LabelledSource, *, batch_size: int, mesh=None, k: int = 20,
             temperature: float = 0.07, readouts: tuple[str, ...] = ("cls", "mean"),
             crop_pct: float = 0.875, num_classes: int | None = None, probe_epochs: int = 0,
             probe_batch_size: int = 64, probe_base_lr: float = 1.0,
             probe_optimizer: str = "sgd", seed: int = 0) -> dict[str, float]:
  """In-loop kNN of a pretraining encoder: {'knn_cls_top1', 'knn_mean_top1', ...} in percent,
  and with `probe_epochs` > 0 the linear probe on the same features ({'probe_cls_top1', ...}).

  Args:
    encoder_params: the encoder's params, e.g. `state.params['encoder']` of the pretraining
      TrainState (an nnx.State, sharded or not) or the matching pure dict.
    model_cfg: the pretraining ModelConfig (fixed sin-cos positions are rebuilt from it).
    train_split, val_split: labelled sources (`evaluation.data.build_source(spec, split)`);
      build them once, outside the training loop.
    batch_size: global feature-extraction batch, divisible by the device count.
    mesh: the training mesh (batches are sharded over it); None = no explicit sharding.
  """
  abstract = nnx.eval_shape(lambda: ViTEncoder(model_cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  pure = encoder_params if isinstance(encoder_params, dict) else nnx.to_pure_dict(encoder_params)
  nnx.replace_by_pure_dict(state, pure)
  encoder = nnx.merge(graphdef, state)
  batch_sharding = sharding.batch_sharding(mesh) if mesh is not None else None
  # Unreadable images are left out of the bank and the votes (logged with their causes).
  train = features_lib.extract_features(encoder, train_split, batch_size=batch_size,
                                        image_size=model_cfg.image_size, crop_pct=crop_pct,
                                        sharding=batch_sharding, name="in-loop knn train")
  val = features_lib.extract_features(encoder, val_split, batch_size=batch_size,
                                      image_size=model_cfg.image_size, crop_pct=crop_pct,
                                      sharding=batch_sharding, name="in-loop knn val")
  n_cls = num_classes or int(max(train["label"].max(), val["label"].max()) + 1)
  out = {}
  for r in readouts:
    m = knn_lib.knn_classify(train[r], train["label"], val[r], val["label"], num_classes=n_cls,
                             k=k, temperature=temperature, name=f"in-loop knn {r}")
    out.update({f"knn_{r}_top1": m["knn_top1"], f"knn_{r}_top5": m["knn_top5"]})
    if probe_epochs > 0:
      cfg = linear_probe.ProbeConfig(epochs=probe_epochs, batch_size=probe_batch_size,
                                     base_lr=probe_base_lr, optimizer=probe_optimizer,
                                     warmup_epochs=min(10, max(probe_epochs // 9, 1)), seed=seed)
      p = linear_probe.probe((train[r], train["label"]), (val[r], val["label"]), n_cls, cfg)
      out.update({f"probe_{r}_top1": p["top1"], f"probe_{r}_top5": p["top5"]})
  return out



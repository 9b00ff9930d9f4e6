"""Pretraining: `build_train_step` (the jitted step of a config for a mesh, also what
compile_check compiles) and `train_and_evaluate(config, workdir)`.

Order of work (each step is a banner in the log): validate the config, mesh, data, schedule,
optimizer and state (restored or initialised), compile, loop, finish. The loop, checkpoints and
writers are the shared run skeleton (run_lib.py); this module adds pretraining's hooks: the
log line with throughput and MFU, the in-loop kNN probe, reconstruction images, profiling.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from vicmae_jax import (config_lib, data, hardware, logging_utils, optim, run_lib, sharding,
                        visualize)
from vicmae_jax.config_lib import PretrainConfig
from vicmae_jax.data.random_batches import RandomBatchIterator
from vicmae_jax.models import merge_model, per_view
from vicmae_jax.train_state import TrainState, abstract_train_state, init_train_state
from vicmae_jax.train_step import train_step

_STEP_KEYS = ("view1", "view2", "is_video")


def _step_batch(batch: dict) -> dict:
  """The arrays of a pipeline batch that the step takes."""
  return {k: batch[k] for k in _STEP_KEYS}


TrainingDiverged = run_lib.TrainingDiverged


def _make_iterator(config: PretrainConfig, batch_sharding):
  if config.synthetic_data:
    epoch = (config.steps_per_epoch or 1) * config.batch_size
    return RandomBatchIterator(global_batch_size=config.batch_size,
                               image_size=config.model.image_size, seed=config.seed,
                               sharding=batch_sharding, process_index=jax.process_index(),
                               process_count=jax.process_count(), epoch_examples=epoch)
  return data.make_pretrain_iterator(config.input, global_batch_size=config.batch_size,
                                     seed=config.seed, sharding=batch_sharding)


def make_optimizer(config: PretrainConfig, sched: optim.Schedule):
  """(optax transformation, lr schedule) of a pretraining config."""
  o = config.optim
  peak_lr = optim.peak_learning_rate(o.base_lr, config.batch_size)
  lr_fn = optim.learning_rate_schedule(peak_lr, sched.total_steps, sched.warmup_steps, o.min_lr)
  tx = optim.make_optimizer(lr_fn, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                            grad_clip=o.grad_clip)
  return tx, lr_fn


@dataclasses.dataclass(frozen=True)
class CompiledStep:
  """The pretraining step of a config for one mesh, before any array exists.

  `fn` is the jitted step (explicit shardings, donated state, traced for the mesh's platform);
  `state` and `batch` are its arguments as sharded `ShapeDtypeStruct`s, so
  `fn.lower(state, batch).compile()` builds the program for devices that need not be attached.
  """

  fn: Any
  graphdef: Any
  tx: Any
  lr_fn: Any
  state: Any
  state_shardings: Any
  batch: dict[str, jax.ShapeDtypeStruct]


def batch_spec(config: PretrainConfig, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The step's batch as the input pipeline delivers it (data/pipeline.py), sharded on `mesh`."""
  b, size = config.batch_size, config.model.image_size
  shard = sharding.batch_sharding(mesh)
  view = jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32, sharding=shard)
  return {"view1": view, "view2": view,
          "is_video": jax.ShapeDtypeStruct((b,), jnp.int32, sharding=shard)}


def build_train_step(config: PretrainConfig | ml_collections.ConfigDict, sched: optim.Schedule,
                     mesh) -> CompiledStep:
  """Optimizer, state skeleton and jitted step of a validated config: what `train_and_evaluate`
  runs and `compile_check` compiles for a named slice, from this one function. An "auto"
  model dtype is resolved for the mesh's platform (`config_lib.for_mesh`)."""
  config = config_lib.for_mesh(config_lib.as_pretrain_config(config), mesh)
  tx, lr_fn = make_optimizer(config, sched)
  sc = config_lib.step_config(config, sched.total_steps)
  graphdef, state, shardings = abstract_train_state(config.model, tx, mesh,
                                                    config.mesh.fsdp_min_mb)
  batch = batch_spec(config, mesh)
  step = functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=lr_fn, sc=sc)
  fn = jax.jit(hardware.bind(step, mesh),
               in_shardings=(shardings, {k: v.sharding for k, v in batch.items()}),
               out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  return CompiledStep(fn=fn, graphdef=graphdef, tx=tx, lr_fn=lr_fn, state=state,
                      state_shardings=shardings, batch=batch)


def _reconstruction_fn(graphdef, model_cfg, norm_pix: bool, mesh):
  """Jitted: fixed examples -> (original, masked, reconstruction) of view 1, deterministic."""

  @jax.jit
  @functools.partial(hardware.bind, target=mesh)
  def fn(params, target, stats, view1, view2):
    model = merge_model(graphdef, params, target, stats)
    out = model(view1, view2, rng=jax.random.PRNGKey(0), train=False)
    masked, recon = visualize.reconstruct_pixels(per_view(out.pred)[0], view1,
                                                 per_view(out.mask)[0], model_cfg.patch, norm_pix)
    return view1, masked, recon
  return fn


def _fixed_examples(batch: dict, n: int) -> dict[str, jax.Array]:
  """The first `n` local examples of a batch, identical on every process, replicated."""
  local = {k: np.asarray(batch[k].addressable_shards[0].data)[:n] if isinstance(batch[k], jax.Array)
           else np.asarray(batch[k])[:n] for k in ("view1", "view2")}
  return multihost_utils.broadcast_one_to_all(local)


class _Log(run_lib.Hook):
  """Scalars every `log_every_steps`, at the end and whenever the kNN probe ran (with its
  results); stops a diverged run after saving its last good state."""

  def __init__(self, run: run_lib.Run, config: PretrainConfig, total: int, it, throughput,
               knn=None):
    self.run, self.total, self.it, self.throughput, self.knn = run, total, it, throughput, knn
    self.every = config.log_every_steps
    self.knn_every = config.knn_eval.every_steps if knn else 0
    self.max_skipped = config.max_consecutive_skipped

  def after_step(self, step: int, state: TrainState, metrics) -> None:
    scalars = {}
    if self.knn_every and (step % self.knn_every == 0 or step == self.total):
      scalars = self.knn(state)
      if self.run.lead:
        logging.info("step %d readouts: %s", step, ", ".join(f"{k} {v:.1f}" for k, v in scalars.items()))
        pairs = [k for k in scalars if f"random_{k}" in scalars and "top1" in k]
        if pairs:  # the control says what pretraining added
          logging.info("step %d trained vs random encoder: %s", step, ", ".join(
              f"{k} {scalars[k]:.1f} vs {scalars['random_' + k]:.1f}" for k in pairs))
    if not (step % self.every == 0 or step == self.total or scalars):
      return
    scalars.update({k: float(v) for k, v in jax.device_get(metrics).items()})
    scalars.update(self.throughput.metrics(step))
    # A collective: every process calls it at the same (log) step.
    scalars.update(logging_utils.aggregate_over_processes(getattr(self.it, "metrics", dict)()))
    self.run.write(step, scalars, logging_utils.progress_line(step, self.total, scalars))
    run_lib.stop_if_diverged(self.run, step, state, self.it, scalars, self.max_skipped)


def _images_hook(run: run_lib.Run, every: int, total: int, recon_fn, examples) -> run_lib.Hook:
  """Original | masked | reconstruction of fixed examples, to TensorBoard and images/*.png."""
  def draw(step: int, state: TrainState, metrics) -> None:
    original, masked, recon = jax.device_get(
        recon_fn(state.params, state.target, state.batch_stats, examples["view1"],
                 examples["view2"]))
    if run.lead:
      image = visualize.grid(original, masked, recon)
      run.writer.write_images(step, {"reconstruction": image[None]})
      visualize.save_png(image, run.workdir / "images" / f"reconstruction_{step:08d}.png")
  return run_lib.Every(every, total, draw)


def _knn_fn(config: PretrainConfig, mesh):
  """state -> in-loop kNN (and linear-probe) top-1/top-5 (%) of the online encoder's cls and
  mean-pooled features (labelled sources built once; every process takes part); None when off.
  With `knn_eval.random_control`, the same readouts of a freshly initialised encoder (computed
  once, logged beside every readout as `random_*`): what the task gives without pretraining."""
  if not config.knn_eval.every_steps:
    return None
  from vicmae_jax.evaluation import data as eval_data, runners
  kc = config.knn_eval
  spec = dict(kc.data)
  train_split, val_split = eval_data.build_source(spec, "train"), eval_data.build_source(spec, "val")
  readout = functools.partial(runners.knn_eval, train_split=train_split, val_split=val_split,
                              model_cfg=config.model, batch_size=kc.batch_size, mesh=mesh,
                              k=kc.k, temperature=kc.temperature, probe_epochs=kc.probe_epochs,
                              probe_batch_size=kc.probe_batch_size,
                              probe_base_lr=kc.probe_base_lr,
                              probe_optimizer=kc.probe_optimizer, seed=config.seed)
  control: dict[str, float] = {}

  def fn(state: TrainState) -> dict[str, float]:
    out = readout(state.params["encoder"])
    if kc.random_control:
      if not control:
        from flax import nnx

        from vicmae_jax.models.vit import ViTEncoder
        fresh = ViTEncoder(config.model, rngs=nnx.Rngs(config.seed + 1))
        control.update({f"random_{k}": v for k, v in readout(nnx.state(fresh, nnx.Param)).items()})
      out.update(control)
    return out
  return fn


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Pretrains (resuming from `workdir` if it holds checkpoints); returns the final state."""
  logging.info("=== config")
  config_lib.validate(config, jax.device_count(), jax.process_count())
  run = run_lib.open_run(config, workdir)  # saves the config as written with each checkpoint
  cfg = config_lib.pretrain_config(config, str(run.workdir))
  logging.info("model %s: %s", cfg.model.variant, cfg.model)

  logging.info("=== mesh")
  mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
  logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), jax.device_count(),
               jax.process_count())
  logging.info("%s", hardware.dtype_line(cfg.model.dtype, mesh))
  cfg = config_lib.for_mesh(cfg, mesh)  # model.dtype "auto" resolved once, for this mesh

  logging.info("=== data")
  it = _make_iterator(cfg, sharding.batch_sharding(mesh))
  knn = _knn_fn(cfg, mesh)
  sched = config_lib.schedule(cfg, getattr(it, "num_examples", None))
  logging.info("%d examples per epoch -> %d steps/epoch, %d steps, %d warm-up",
               getattr(it, "num_examples", 0), sched.steps_per_epoch, sched.total_steps,
               sched.warmup_steps)

  logging.info("=== optimizer, state and checkpoint")
  built = build_train_step(cfg, sched, mesh)
  state, first_step = run.restore_or_init(
      built.state, lambda: init_train_state(cfg.model, built.tx, cfg.seed, mesh,
                                            built.state_shardings), it)
  if run.lead:
    logging_utils.log_parameter_overview(state.params, workdir=run.workdir)
  logging.info("starting at step %d of %d", first_step, sched.total_steps)

  logging.info("=== compile")
  batch = next(it)
  t0 = time.perf_counter()
  compiled = built.fn.lower(state, _step_batch(batch)).compile()
  flops = logging_utils.compiled_flops(compiled)
  peak, peak_source = logging_utils.device_peak_flops(mesh, cfg.model.dtype)
  logging.info("compiled the train step in %.1f s; %.3g FLOPs per device per step (XLA); "
               "peak %.3g FLOP/s (%s)", time.perf_counter() - t0, flops or float("nan"), peak,
               peak_source)

  logging.info("=== train")
  throughput = logging_utils.Throughput(
      sched.total_steps, cfg.batch_size, flops, peak, jax.device_count(),
      peak_nominal=hardware.chip_of(hardware.devices_of(mesh)[0]) is not None)
  recon_fn = _reconstruction_fn(built.graphdef, cfg.model, cfg.loss.norm_pix, mesh)
  hooks = [run_lib.Profile(run.workdir / "profile", cfg.profile.start_step,
                           cfg.profile.num_steps),
           _Log(run, cfg, sched.total_steps, it, throughput, knn),
           _images_hook(run, cfg.image_every_steps, sched.total_steps, recon_fn,
                        _fixed_examples(batch, cfg.num_image_examples))]
  end = run_lib.train_loop(run, state, first_step, sched.total_steps,
                           lambda s, b: compiled(s, _step_batch(b)), itertools.chain([batch], it),
                           hooks, it, throughput=throughput)

  logging.info("=== finish")
  run.close()
  if hasattr(it, "close"):
    it.close()
  logging.info("%s at step %d; checkpoints in %s/checkpoints",
               "stopped on request" if end.stopped else "done", end.step, run.workdir)
  return end.state

"""Pretraining loop: `train_and_evaluate(config, workdir)`.

Order of work (each step is a banner in the log): validate the config, mesh, data, schedule and
optimizer, sharded state, resume, compile, loop (log, images, checkpoint, preemption), finish.
The only module that talks to clu / TensorBoard.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from vicmae_jax import (checkpointing, config_lib, data, hardware, logging_utils, optim, sharding,
                        visualize)
from vicmae_jax.data.random_batches import RandomBatchIterator
from vicmae_jax.models import merge_model, per_view
from vicmae_jax.train_state import (TrainState, abstract_train_state, init_train_state,
                                    train_step)

_STEP_KEYS = ("view1", "view2", "is_video")


class TrainingDiverged(RuntimeError):
  """Too many consecutive non-finite updates; the last checkpoint holds the last good state."""


def _make_iterator(config, workdir: str, batch_sharding):
  if config.synthetic_data:
    epoch = (config.steps_per_epoch or 1) * config.batch_size
    return RandomBatchIterator(global_batch_size=config.batch_size,
                               image_size=config.model.image_size, seed=config.seed,
                               sharding=batch_sharding, process_index=jax.process_index(),
                               process_count=jax.process_count(), epoch_examples=epoch)
  return data.make_pretrain_iterator(config_lib.input_config(config, workdir),
                                     global_batch_size=config.batch_size, seed=config.seed,
                                     sharding=batch_sharding)


def _knn_splits(config):
  """Labelled (train, val) sources for the in-loop kNN, built once; None when it is off."""
  if not config.knn_eval.every_steps:
    return None
  from vicmae_jax.evaluation import data as eval_data
  spec = config.knn_eval.data.to_dict()
  return eval_data.build_source(spec, "train"), eval_data.build_source(spec, "val")


def _knn_eval(state: TrainState, model_cfg, splits, mesh, kc) -> dict[str, float]:
  """kNN top-1/top-5 (%) of the online encoder's cls and mean-pooled features; every process
  takes part (features are gathered across processes)."""
  from vicmae_jax.evaluation import runners
  return runners.knn_eval(state.params["encoder"], model_cfg, *splits, batch_size=kc.batch_size,
                          mesh=mesh, k=kc.k, temperature=kc.temperature)


def make_optimizer(config: ml_collections.ConfigDict, sched: config_lib.Schedule):
  """(optax transformation, lr schedule) of a pretraining config."""
  peak_lr = optim.peak_learning_rate(config.optim.base_lr, config.batch_size)
  lr_fn = optim.learning_rate_schedule(peak_lr, sched.total_steps, sched.warmup_steps,
                                       config.optim.min_lr)
  tx = optim.make_optimizer(lr_fn, b1=config.optim.b1, b2=config.optim.b2, eps=config.optim.eps,
                            weight_decay=config.optim.weight_decay,
                            grad_clip=config.optim.grad_clip)
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


def batch_spec(config: ml_collections.ConfigDict, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The step's batch as the input pipeline delivers it (data/pipeline.py), sharded on `mesh`."""
  b, size = config.batch_size, config.model.image_size
  shard = sharding.batch_sharding(mesh)
  view = jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32, sharding=shard)
  return {"view1": view, "view2": view,
          "is_video": jax.ShapeDtypeStruct((b,), jnp.int32, sharding=shard)}


def build_train_step(config: ml_collections.ConfigDict, model_cfg, sched: config_lib.Schedule,
                     mesh) -> CompiledStep:
  """Optimizer, state skeleton and jitted step of a validated config: what `train_and_evaluate`
  runs and `compile_check` compiles for a named slice, from this one function."""
  tx, lr_fn = make_optimizer(config, sched)
  sc = config_lib.step_config(config, model_cfg, sched.total_steps)
  graphdef, state, shardings = abstract_train_state(model_cfg, tx, mesh, config.mesh.fsdp_min_mb)
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Pretrains (resuming from `workdir` if it holds checkpoints); returns the final state."""
  workdir = str(workdir)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  lead = jax.process_index() == 0
  checkpointing.quiet_orbax_logs()

  logging.info("=== config")
  model_cfg = config_lib.validate(config, jax.device_count(), jax.process_count())
  logging.info("model %s: %s", model_cfg.variant, model_cfg)

  logging.info("=== mesh")
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  batch_sharding = sharding.batch_sharding(mesh)
  logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), jax.device_count(),
               jax.process_count())

  logging.info("=== data")
  it = _make_iterator(config, workdir, batch_sharding)
  knn_splits = _knn_splits(config)
  sched = config_lib.schedule(config, getattr(it, "num_examples", None))
  logging.info("%d examples per epoch -> %d steps/epoch, %d steps, %d warm-up",
               getattr(it, "num_examples", 0), sched.steps_per_epoch, sched.total_steps,
               sched.warmup_steps)

  logging.info("=== optimizer and state")
  built = build_train_step(config, model_cfg, sched, mesh)
  graphdef = built.graphdef
  state = init_train_state(model_cfg, built.tx, config.seed, mesh, built.state_shardings)
  if lead:
    logging_utils.log_parameter_overview(state.params)

  logging.info("=== checkpoint")
  ckpt = checkpointing.Checkpointer(str(epath.Path(workdir) / "checkpoints"),
                                    every_steps=config.checkpoint.every_steps,
                                    keep=config.checkpoint.keep,
                                    async_save=config.checkpoint.async_save)
  ckpt.install_sigterm_handler()
  restored = ckpt.restore_latest(built.state, it)
  if restored is not None:
    state, _ = restored
  first_step = int(jax.device_get(state.step))
  logging.info("starting at step %d of %d", first_step, sched.total_steps)
  config_dict = config.to_dict()

  logging.info("=== compile")
  batch = next(it)
  t0 = time.perf_counter()
  compiled = built.fn.lower(state, {k: batch[k] for k in _STEP_KEYS}).compile()
  flops = logging_utils.compiled_flops(compiled)
  peak, peak_source = logging_utils.device_peak_flops(mesh, model_cfg.dtype)
  logging.info("compiled the train step in %.1f s; %.3g FLOPs per device per step (XLA); "
               "peak %.3g FLOP/s (%s)", time.perf_counter() - t0, flops or float("nan"), peak,
               peak_source)

  writer, jsonl = logging_utils.create_writers(workdir)
  throughput = logging_utils.Throughput(sched.total_steps, config.batch_size, flops, peak,
                                        jax.device_count())
  recon_fn = _reconstruction_fn(graphdef, model_cfg, config.loss.norm_pix, mesh)
  examples = _fixed_examples(batch, config.num_image_examples)
  profile_dir = str(epath.Path(workdir) / "profile")
  profile_range = range(config.profile.start_step, config.profile.start_step + config.profile.num_steps)

  logging.info("=== train")
  step = first_step
  stopped_early = False
  while step < sched.total_steps:
    if lead and config.profile.num_steps and step == profile_range.start:
      jax.profiler.start_trace(profile_dir)
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      state, metrics = compiled(state, {k: batch[k] for k in _STEP_KEYS})
    throughput.step_done()
    step += 1
    if lead and config.profile.num_steps and step == profile_range.stop:
      jax.profiler.stop_trace()
      logging.info("profile of steps %s written to %s", profile_range, profile_dir)

    knn = {}
    if knn_splits and (step % config.knn_eval.every_steps == 0 or step == sched.total_steps):
      knn = _knn_eval(state, model_cfg, knn_splits, mesh, config.knn_eval)
      if lead:
        logging.info("step %d kNN: %s", step, ", ".join(f"{k} {v:.1f}" for k, v in knn.items()))

    if step % config.log_every_steps == 0 or step == sched.total_steps or knn:
      scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
      scalars.update(knn)
      scalars.update(throughput.metrics(step))
      scalars.update(logging_utils.aggregate_over_processes(getattr(it, "metrics", dict)()))
      if lead:
        writer.write_scalars(step, scalars)
        jsonl.write(step, scalars)
        logging.info(logging_utils.progress_line(step, sched.total_steps, scalars))
      if scalars["consecutive_skipped"] >= config.max_consecutive_skipped:
        # Skipped updates leave params untouched, so this checkpoint is the last good state.
        ckpt.save(step, state, it, config_dict, force=True)
        ckpt.wait()
        raise TrainingDiverged(
            f"{int(scalars['consecutive_skipped'])} consecutive updates had a non-finite loss or "
            f"gradient (step {step}, {int(scalars['skipped_steps'])} skipped in all). The last "
            f"good state is saved in {workdir}/checkpoints; lower optim.base_lr, set "
            f"optim.grad_clip, or use float32 before resuming.")

    if config.image_every_steps and step % config.image_every_steps == 0:
      original, masked, recon = jax.device_get(
          recon_fn(state.params, state.target, state.batch_stats, examples["view1"],
                   examples["view2"]))
      if lead:
        image = visualize.grid(original, masked, recon)
        writer.write_images(step, {"reconstruction": image[None]})
        visualize.save_png(image, epath.Path(workdir) / "images" / f"reconstruction_{step:08d}.png")

    ckpt.save(step, state, it, config_dict)
    if step < sched.total_steps and ckpt.should_stop(step, sync_every=config.log_every_steps):
      stopped_early = True
      break
    if step < sched.total_steps:
      t0 = time.perf_counter()
      batch = next(it)
      throughput.add_data_wait(time.perf_counter() - t0)

  logging.info("=== finish")
  ckpt.save(step, state, it, config_dict, force=True)
  ckpt.close()
  writer.flush()
  writer.close()
  if hasattr(it, "close"):
    it.close()
  logging.info("%s at step %d; checkpoints in %s/checkpoints",
               "stopped on request" if stopped_early else "done", step, workdir)
  return state

"""Entry point: `python -m vicmae_jax.main --config=configs/<name>.py[:arg] --workdir=DIR`.

Overrides go through `--config.key=value` on a locked config, so a mistyped key fails at once.
Multi-process runs (TPU pods, SLURM, an explicit coordinator) start `jax.distributed` before
anything touches a device; a single process starts plainly.
"""
from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from vicmae_jax import paths

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, logs and images go here (local or gs://).")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "auto: initialise jax.distributed on TPU pods, SLURM jobs with several tasks, or "
                  "when a coordinator is given; on: always; off: never.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (explicit multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.mark_flags_as_required(["config", "workdir"])


def _cluster_detected() -> bool:
  """A multi-process launcher that jax.distributed.initialize() can read is present."""
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
    return True
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  # Cloud TPU VMs of more than one host list their workers here.
  return len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def maybe_initialize_distributed() -> None:
  import jax
  explicit = FLAGS.coordinator_address is not None
  if FLAGS.distributed == "off" or (FLAGS.distributed == "auto" and not explicit
                                    and not _cluster_detected()):
    return
  if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
    # CPU processes exchange data through gloo (multi-host code paths on any machine).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if explicit:
    kwargs = dict(coordinator_address=FLAGS.coordinator_address,
                  num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  jax.distributed.initialize(**kwargs)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a `--config.key=value` naming no key of the config said plainly
  (ml_collections raises it as an AttributeError whose message is a repr)."""
  paths.import_configs_beside(argv)
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError) as e:
    detail: object = e
    while isinstance(detail, BaseException) and detail.args:  # AttributeError(KeyError(msg))
      detail = detail.args[0]
    sys.exit(f"FATAL: a --config.* override names a key the config does not have: {detail}")
  except flags.Error as e:
    sys.exit(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help on flags.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  maybe_initialize_distributed()
  import jax
  logging.info("process %d of %d; %d local devices, %d devices in all (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].device_kind)
  from vicmae_jax.run_lib import RUN_ENDING_ERRORS
  try:
    _run_mode(FLAGS.config, paths.resolve(FLAGS.workdir))  # relative to the start directory
  except RUN_ENDING_ERRORS as e:
    # An expected end (bad data, divergence, a busy workdir): the message says what happened
    # and what to do; a traceback would only bury it.
    logging.error("%s: %s", type(e).__name__, e)
    sys.exit(1)


def _run_mode(config, workdir: str) -> None:
  if config.mode == "pretrain":
    from vicmae_jax import train
    train.train_and_evaluate(config, workdir)
  elif config.mode == "finetune":
    from vicmae_jax.evaluation import finetune
    finetune.finetune(config, workdir)
  elif config.mode in ("linprobe", "knn", "extract_features"):
    from vicmae_jax.evaluation import runners
    {"linprobe": runners.linprobe, "knn": runners.knn,
     "extract_features": runners.extract}[config.mode](config, workdir)
  else:
    raise app.UsageError(f"Unknown config.mode {config.mode!r}.")


if __name__ == "__main__":
  # TensorFlow (under clu / tfds) must not claim GPU memory that JAX needs.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")
  except Exception:
    pass
  app.run(main, flags_parser=parse_flags)

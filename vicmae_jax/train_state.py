"""The pretraining state: what it holds, its sharded skeleton, and its sharded initialisation.

The update of this state is `train_step.py`.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from vicmae_jax import hardware, sharding
from vicmae_jax.models import ModelConfig, ViCMAE, split_model


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

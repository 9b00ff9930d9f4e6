"""The pretraining state: its skeleton is exactly what initialisation makes, sharded alike."""
import jax
import pytest

from vicmae_jax import ema, optim, sharding
from vicmae_jax.models import model_config
from vicmae_jax.train_state import abstract_train_state, init_train_state

CFG = dict(image_size=16, projector_hidden=32, projector_out=16, predictor_hidden=32)


@pytest.mark.parametrize("mode", ["ema_target", "shared_projector"])
def test_skeleton_matches_the_initialised_state(mode):
  cfg = model_config("test", contrastive_mode=mode, **CFG)
  tx = optim.make_optimizer(optim.learning_rate_schedule(1e-3, 10, 1))
  mesh = sharding.make_mesh(data=4, fsdp=2)
  _, skeleton, shardings = abstract_train_state(cfg, tx, mesh, fsdp_min_mb=0.0)
  state = init_train_state(cfg, tx, 0, mesh, shardings)
  flat_skel, tree_skel = jax.tree.flatten(skeleton)
  flat_state, tree_state = jax.tree.flatten(state)
  assert tree_skel == tree_state
  for s, x in zip(flat_skel, flat_state):
    assert (s.shape, s.dtype) == (x.shape, x.dtype)
    assert x.sharding == s.sharding
  # Large kernels are split over the fsdp axis, as the partition rules say.
  assert any("fsdp" in str(x.sharding.spec) for x in jax.tree.leaves(state.params))
  has_target = bool(jax.tree.leaves(state.target))
  assert has_target == cfg.has_target_branch


def test_without_a_target_branch_the_ema_update_is_the_identity():
  cfg = model_config("test", contrastive_mode="shared_projector", **CFG)
  tx = optim.make_optimizer(optim.learning_rate_schedule(1e-3, 10, 1))
  mesh = sharding.make_mesh(data=8, fsdp=1)
  _, _, shardings = abstract_train_state(cfg, tx, mesh)
  state = init_train_state(cfg, tx, 0, mesh, shardings)
  assert ema.update_target(state.target, state.params, 0.5) is state.target

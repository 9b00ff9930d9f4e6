"""The one place for sharding decisions: the device mesh and the partition rules.

Mesh axes are ('data', 'fsdp'). The batch is split over both axes; parameters above a size
threshold are split over 'fsdp' along their largest divisible dimension (ZeRO-3 style), smaller
ones are replicated. Axes are `Auto` so XLA's partitioner propagates shardings through the model.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """`config.mesh`: devices on each axis (-1: the rest) and the FSDP size threshold."""

  data: int = -1
  fsdp: int = 1
  fsdp_min_mb: float = 4.0   # parameters smaller than this stay replicated


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp') mesh over `devices` (default: all); -1 means "the rest of the devices"."""
  devices = list(devices if devices is not None else jax.devices())
  n = len(devices)
  if data == -1 and fsdp == -1:
    raise ValueError("At most one of mesh data/fsdp may be -1.")
  if data == -1:
    data = n // fsdp
  if fsdp == -1:
    fsdp = n // data
  if data * fsdp != n:
    raise ValueError(f"Mesh data={data} x fsdp={fsdp} does not use the {n} devices.")
  axis_types = (AxisType.Auto, AxisType.Auto)
  slices = len({getattr(d, "slice_index", 0) for d in devices})
  if slices > 1:
    # Multislice: only the data axis crosses the data-centre network (one gradient all-reduce
    # per step); FSDP groups and the rest of the data axis stay on each slice's ICI.
    if data % slices:
      raise ValueError(f"Mesh data={data} is not divisible by the {slices} slices.")
    grid = mesh_utils.create_hybrid_device_mesh((data // slices, fsdp), (slices, 1), devices)
    return Mesh(grid, MESH_AXES, axis_types=axis_types)
  return jax.make_mesh((data, fsdp), MESH_AXES, axis_types=axis_types, devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every mesh axis."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_spec(shape: tuple[int, ...], fsdp_size: int, min_size_mb: float = 4.0) -> P:
  """FSDP rule: shard the largest dimension divisible by the fsdp axis if the tensor is large."""
  if fsdp_size <= 1 or math.prod(shape) * 4 / 2**20 < min_size_mb:
    return P()
  for dim in np.argsort(shape)[::-1]:
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def skeleton(tree, shardings):
  """Sharded `ShapeDtypeStruct`s of `tree` (abstract or concrete; `shardings` a matching tree or
  one sharding for every leaf): a restore target or AOT-compile argument, nothing allocated."""
  if not isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                        shardings)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings), tree)


def to_global(batch: dict, sharding) -> dict:
  """Per-process numpy rows -> global jax.Arrays whose leading (batch) axis follows `sharding`
  (None: the batch as it is, for unsharded use). Every input path ends here."""
  if sharding is None:
    return batch
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def local_rows(global_batch: int) -> slice:
  """The rows of a global batch that this process loads (equal shares, in process order)."""
  per = global_batch // jax.process_count()
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def tree_shardings(tree, mesh: Mesh, min_size_mb: float = 4.0):
  """NamedShardings for every array leaf of `tree` (abstract or concrete) by `param_spec`."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(
      lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp, min_size_mb)), tree)

"""TPU slices by the names users type (`v5p-128`, `v5e-256`, `v4-64`, `v6e-64`) as compile-only
devices: the mesh a step is compiled for when the slice is not attached.

Naming follows Cloud TPU: v4 and v5p count TensorCores (two per chip, one JAX device per chip as
megacore), v5e and v6e count chips. `libtpu` describes the slice (`jax.experimental.topologies`),
so any CPU machine with the `tpu` extra installed can compile for it.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re

import jax

# family -> (libtpu's generation name, TensorCores per chip in the slice name, torus dims)
FAMILIES = {"v4": ("v4", 2, 3), "v5p": ("v5p", 2, 3), "v5e": ("v5e", 1, 2), "v6e": ("v6e", 1, 2)}
# Chip grids of the standard slice shapes (as `gcloud` creates them), by chip count.
_GRIDS_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4),
             128: (4, 4, 8), 256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16),
             2048: (8, 16, 16), 4096: (16, 16, 16)}
_GRIDS_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16),
             256: (16, 16)}
CHIPS_PER_HOST = 4  # every multi-host slice of these families has 4 chips per host VM


class TopologyError(ValueError):
  """A slice name libtpu cannot describe, or no libtpu to describe it."""


@dataclasses.dataclass(frozen=True)
class Slice:
  family: str              # v4, v5p, v5e, v6e
  grid: tuple[int, ...]    # chips along each torus dimension
  num_slices: int = 1      # multislice: identical slices joined over the data-centre network

  @property
  def chips(self) -> int:
    return math.prod(self.grid) * self.num_slices

  @property
  def name(self) -> str:
    per_name = FAMILIES[self.family][1]
    base = f"{self.family}-{math.prod(self.grid) * per_name}"
    return base if self.num_slices == 1 else f"{self.num_slices}x {base}"

  @property
  def topology_name(self) -> str:
    return f"{FAMILIES[self.family][0]}:" + "x".join(map(str, self.grid))

  @property
  def wrap(self) -> tuple[bool, bool, bool]:
    """Torus wrap-around links: full 3-D tori from 4x4x4, 2-D dimensions of 16 chips."""
    if len(self.grid) == 3:
      full = all(d >= 4 for d in self.grid)
      return (full, full, full)
    return tuple(d == 16 for d in self.grid) + (False,)


def parse_slice(name: str, num_slices: int = 1) -> Slice:
  """'v5p-128' | 'v5e-256' | 'v4-64' | 'v6e-8' | 'v5p:4x4x8' (explicit chip grid) -> Slice."""
  text = name.strip().lower()
  explicit = re.fullmatch(r"(v4|v5p|v5e|v6e):(\d+(?:x\d+){1,2})", text)
  if explicit:
    family, grid = explicit[1], tuple(int(d) for d in explicit[2].split("x"))
    if len(grid) != FAMILIES[family][2]:
      raise TopologyError(f"{name!r}: {family} slices have {FAMILIES[family][2]}-D chip grids.")
    return Slice(family, grid, num_slices)
  named = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", text)
  if not named:
    raise TopologyError(
        f"Unknown TPU slice {name!r}: use a Cloud TPU name such as v4-64, v5p-128, v5e-256, "
        f"v6e-64, or an explicit chip grid such as v5p:4x4x8.")
  family = "v5e" if named[1] == "v5litepod" else named[1]
  _, per_chip, dims = FAMILIES[family]
  count = int(named[2])
  if count % per_chip:
    raise TopologyError(f"{name!r}: {family} names count TensorCores, {per_chip} per chip.")
  grids = _GRIDS_3D if dims == 3 else _GRIDS_2D
  chips = count // per_chip
  if chips not in grids:
    raise TopologyError(f"{name!r}: no standard {family} shape has {chips} chips; give the grid "
                        f"explicitly ({family}:AxB{'xC' if dims == 3 else ''}).")
  return Slice(family, grids[chips], num_slices)


def devices(s: Slice) -> list[jax.Device]:
  """Compile-only devices of the slice (one per chip), described by libtpu."""
  # Compile-only use opens no chip, so several processes (parallel tests, a check beside a run)
  # may load libtpu at once; without this libtpu's lockfile admits one process per machine.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies
  kwargs = dict(chips_per_host_bounds=(2, 2, 1), num_slices=s.num_slices, wrap=s.wrap)
  if s.family in ("v4", "v5p"):
    kwargs["chip_config_name"] = "megacore"
  try:
    topo = topologies.get_topology_desc(platform="tpu", topology_name=s.topology_name, **kwargs)
  except Exception as e:  # noqa: BLE001 - libtpu raises several types; all mean "cannot describe"
    hint = ("; install the TPU compiler with pip install -e '.[tpu]'"
            if "libtpu" in str(e).lower() or isinstance(e, (ImportError, RuntimeError)) else "")
    raise TopologyError(f"libtpu cannot describe {s.name} ({s.topology_name}): {e}{hint}") from e
  return list(topo.devices)

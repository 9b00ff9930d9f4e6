"""What a step is built for: the target platform and the facts of its chips.

The one place that says which platform a program is built for; the per-platform choices
themselves sit where they apply (`models/linear.cpu_layout_vjps`, `models/attention.py`,
`ViCMAE._heads` in `models/vicmae.py`). Model code asks `target_platform()` (or `is_cpu()`)
which backend the program being traced will run on; the trainers and `compile_check` set it from
the devices of the mesh the step is compiled for (`building_for(mesh)`), so a TPU program
compiled from a CPU process gets the TPU choices. Outside any such scope (a model called
directly, a notebook) the process's default backend is the answer, which is right whenever the
program runs where it is traced.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from typing import Callable, Iterator, Sequence

import jax
from jax.sharding import Mesh

PLATFORMS = ("cpu", "gpu", "tpu")


@dataclasses.dataclass(frozen=True)
class Chip:
  """Datasheet figures of one JAX device (one chip; v4 and v5p as megacore)."""

  name: str
  peak_bf16_flops: float   # dense bf16 FLOP/s
  hbm_bytes: float
  hbm_bytes_per_s: float


# Keyed by substrings of `device.device_kind`, most specific first ("TPU v5 lite" before "TPU v5").
# Sources: Cloud TPU system-architecture pages and NVIDIA datasheets (dense, no sparsity).
CHIPS: tuple[tuple[str, Chip], ...] = (
    ("TPU v6 lite", Chip("TPU v6e", 918e12, 32 * 2**30, 1.638e12)),
    ("TPU v5 lite", Chip("TPU v5e", 197e12, 16 * 2**30, 8.19e11)),
    ("TPU v5e", Chip("TPU v5e", 197e12, 16 * 2**30, 8.19e11)),
    ("TPU v5p", Chip("TPU v5p", 459e12, 95e9, 2.765e12)),
    ("TPU v5", Chip("TPU v5p", 459e12, 95e9, 2.765e12)),
    ("TPU v4", Chip("TPU v4", 275e12, 32 * 2**30, 1.2e12)),
    ("TPU v3", Chip("TPU v3", 123e12, 16 * 2**30, 9.0e11)),
    ("H200", Chip("H200", 989e12, 141e9, 4.8e12)),
    ("H100", Chip("H100 SXM", 989e12, 80e9, 3.35e12)),
    ("A100", Chip("A100", 312e12, 80e9, 2.0e12)),
    ("V100", Chip("V100", 125e12, 16e9, 9.0e11)),
)


def chip_of(device: jax.Device) -> Chip | None:
  """The datasheet entry of `device`, or None (CPUs, unknown accelerators)."""
  kind = getattr(device, "device_kind", "").lower()
  for key, chip in CHIPS:
    if key.lower() in kind:
      return chip
  return None


def devices_of(target: Mesh | Sequence[jax.Device]) -> list[jax.Device]:
  return list(target.devices.flat) if isinstance(target, Mesh) else list(target)


def platform_of(target: Mesh | Sequence[jax.Device]) -> str:
  """'cpu', 'gpu' or 'tpu': the platform of the devices a step is compiled for."""
  platforms = {d.platform for d in devices_of(target)}
  if len(platforms) != 1:
    raise ValueError(f"A step's devices must share one platform, got {sorted(platforms)}.")
  platform = platforms.pop()
  return "gpu" if platform in ("cuda", "rocm") else platform


_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("vicmae_target", default=None)


def target_platform() -> str:
  """The platform of the program being traced: the innermost `building_for`, else the default."""
  platform = _TARGET.get()
  return platform if platform is not None else platform_of(jax.devices()[:1])


@contextlib.contextmanager
def building_for(target: Mesh | Sequence[jax.Device] | str) -> Iterator[str]:
  """Traces inside this scope make the choices of `target`'s platform (a mesh, devices or name)."""
  platform = target if isinstance(target, str) else platform_of(target)
  if platform not in PLATFORMS:
    raise ValueError(f"Unknown platform {platform!r}; expected one of {PLATFORMS}.")
  token = _TARGET.set(platform)
  try:
    yield platform
  finally:
    _TARGET.reset(token)


def bind(fn: Callable, target: Mesh | Sequence[jax.Device] | str) -> Callable:
  """`fn` whose every trace runs under `building_for(target)`: wrap a step before `jax.jit`, so
  re-traces (new shapes, AOT lowering) make the same choices as the first."""
  platform = target if isinstance(target, str) else platform_of(target)

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with building_for(platform):
      return fn(*args, **kwargs)
  return wrapped


def is_cpu() -> bool:
  """Whether the program being traced targets XLA:CPU (its GEMM-layout VJPs, fp32 heads)."""
  return target_platform() == "cpu"

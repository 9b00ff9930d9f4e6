"""What a step is built for: the target platform, the choices made for it, the facts of its chips.

The one place that says which platform a program is built for, and the platform-level choices
that follow from it: the compute dtype that `model.dtype="auto"` stands for (`resolve_dtype`) and
which hand-written backward passes a program uses (`cpu_layout_vjps`, `layernorm_vjp`); the code
that acts on them sits where it applies (`models/linear.py`, `models/attention.py`,
`models/layernorm.py`, `ViCMAE._heads` in `models/vicmae.py`). Model code asks `target_platform()`
(or `is_cpu()`) which backend the program being traced will run on; the trainers and
`compile_check` set it from the devices of the mesh the step is compiled for
(`building_for(mesh)`), so a TPU program compiled from a CPU process gets the TPU choices.
Outside any such scope (a model called directly, a notebook) the process's default backend is
the answer, which is right whenever the program runs where it is traced.
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


# --- choices made per platform ------------------------------------------------------------------
# What `model.dtype="auto"` computes in: bf16 activations and GEMMs with fp32 params on
# accelerators (the released code's mixed precision, docs/decisions.md), float32 on CPU, whose
# test and demo runs are fp32 and whose bf16 GEMMs need AVX512-BF16 / AMX to pay.
AUTO_DTYPES = {"cpu": "float32", "gpu": "bfloat16", "tpu": "bfloat16"}
DTYPES = ("float32", "bfloat16", "float16")


def resolve_dtype(dtype: str, platform: str) -> str:
  """The compute dtype `dtype` stands for in a program built for `platform`: "auto" is
  `AUTO_DTYPES[platform]`, an explicit dtype is itself on every platform."""
  if dtype != "auto":
    if dtype not in DTYPES:
      raise ValueError(f"dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}.")
    return dtype
  if platform not in AUTO_DTYPES:
    raise ValueError(f"Unknown platform {platform!r}; expected one of {PLATFORMS}.")
  return AUTO_DTYPES[platform]


def describe(target: Mesh | Sequence[jax.Device]) -> str:
  """'mesh of 8 tpu devices' (a mesh) or '1 cpu device' (devices): for log lines."""
  n, platform = len(devices_of(target)), platform_of(target)
  what = f"{platform} device{'s' if n != 1 else ''}"
  return f"mesh of {n} {what}" if isinstance(target, Mesh) else f"{n} {what}"


def dtype_line(dtype: str, target: Mesh | Sequence[jax.Device]) -> str:
  """The log line of a run's numerics: the compute dtype the config's `dtype` resolves to on
  `target` and where it came from; params are float32 whatever it is."""
  resolved = resolve_dtype(dtype, platform_of(target))
  source = f"auto: {describe(target)}" if dtype == "auto" else "set in the config"
  return f"compute dtype {resolved} ({source}); params float32"


def cpu_layout_vjps() -> bool:
  """Whether the program being traced uses the Dense and attention backward passes laid out for
  XLA:CPU's GEMMs (`models/linear.py`, `models/attention.py`): CPU only. GPU and TPU compilers
  fold transposes into their GEMM calls, so autodiff is already right there."""
  return is_cpu()


# Platforms whose programs use LayerNorm's closed-form backward pass (`models/layernorm.py`).
# CPU: autodiff broadcasts the scale into a full-size temporary per norm (~270 ms of a 6 s fp32
# ViT-S step). TPU: cross-compiled for v5p (bf16, 128 images per chip, gradients of params and
# input), the compiler's roofline ranks it ahead of autodiff on every ViT block measured, by
# 1-2% (L/16 encoder block 3.86 vs 3.95 ms; docs/scaling.md, section 5). GPU: unmeasured, so
# the standard path, autodiff.
LAYERNORM_VJP_PLATFORMS = ("cpu", "tpu")


def layernorm_vjp() -> bool:
  """Whether the program being traced uses LayerNorm's closed-form backward pass."""
  return target_platform() in LAYERNORM_VJP_PLATFORMS

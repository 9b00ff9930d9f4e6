"""The one hardware decision point: the platform a step is built for comes from its mesh."""
import jax
import pytest

from vicmae_jax import hardware, sharding


def test_platform_follows_the_mesh_not_the_process():
  mesh = sharding.make_mesh(devices=jax.devices()[:2])
  assert hardware.platform_of(mesh) == "cpu"
  # Outside any scope: the process's backend; inside: whatever the scope says.
  assert hardware.target_platform() == "cpu"
  with hardware.building_for("tpu"):
    assert hardware.target_platform() == "tpu" and not hardware.is_cpu()
    with hardware.building_for(mesh):
      assert hardware.is_cpu()
    assert hardware.target_platform() == "tpu"
  assert hardware.target_platform() == "cpu"


def test_bind_applies_the_platform_to_every_trace():
  seen = []

  def fn(x):
    seen.append(hardware.target_platform())
    return x + 1

  f = jax.jit(hardware.bind(fn, "gpu"))
  f(1.0)
  f(jax.numpy.ones(3))  # a new shape: a second trace, same platform
  assert seen == ["gpu", "gpu"]
  assert hardware.target_platform() == "cpu"


def test_unknown_platform_is_refused():
  with pytest.raises(ValueError, match="Unknown platform"):
    with hardware.building_for("npu"):
      pass


class _Dev:
  def __init__(self, kind, platform="tpu"):
    self.device_kind, self.platform = kind, platform


@pytest.mark.parametrize("kind, name, peak", [
    ("TPU v5 lite", "TPU v5e", 197e12), ("TPU v5", "TPU v5p", 459e12),
    ("TPU v6 lite", "TPU v6e", 918e12), ("TPU v4", "TPU v4", 275e12),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989e12)])
def test_chip_table_matches_device_kinds(kind, name, peak):
  chip = hardware.chip_of(_Dev(kind))
  assert chip.name == name and chip.peak_bf16_flops == peak and chip.hbm_bytes > 1e10


def test_cpu_has_no_datasheet_and_gpu_platforms_normalise():
  assert hardware.chip_of(jax.devices()[0]) is None
  assert hardware.platform_of([_Dev("NVIDIA H100", "cuda")]) == "gpu"
  with pytest.raises(ValueError, match="one platform"):
    hardware.platform_of([_Dev("TPU v4"), _Dev("x", "cpu")])


@pytest.mark.parametrize("dtype, platform, want", [
    ("auto", "cpu", "float32"), ("auto", "tpu", "bfloat16"), ("auto", "gpu", "bfloat16"),
    # An explicit dtype wins on every platform.
    ("float32", "tpu", "float32"), ("float32", "gpu", "float32"),
    ("bfloat16", "cpu", "bfloat16"), ("float16", "gpu", "float16")])
def test_auto_dtype_resolves_per_platform_and_explicit_values_win(dtype, platform, want):
  assert hardware.resolve_dtype(dtype, platform) == want


def test_bad_dtype_or_platform_is_refused():
  with pytest.raises(ValueError, match="dtype must be auto"):
    hardware.resolve_dtype("int8", "tpu")
  with pytest.raises(ValueError, match="Unknown platform"):
    hardware.resolve_dtype("auto", "npu")


def test_dtype_line_says_the_dtype_and_where_it_came_from():
  mesh = sharding.make_mesh(devices=jax.devices()[:8])
  tpus = [_Dev("TPU v5 lite")] * 4
  assert hardware.dtype_line("auto", mesh) == (
      "compute dtype float32 (auto: mesh of 8 cpu devices); params float32")
  assert hardware.dtype_line("auto", tpus) == (
      "compute dtype bfloat16 (auto: 4 tpu devices); params float32")
  assert hardware.dtype_line("float32", tpus) == (
      "compute dtype float32 (set in the config); params float32")


@pytest.mark.parametrize("platform, layout_vjps, layernorm_vjp", [
    ("cpu", True, True),
    # TPU: the closed-form LayerNorm backward is ahead in the compiler's roofline (v5p, bf16
    # blocks; docs/scaling.md section 5); the Dense and attention ones are CPU-only.
    ("tpu", False, True),
    ("gpu", False, False)])   # unmeasured: autodiff, the standard path
def test_hand_written_backward_passes_per_platform(platform, layout_vjps, layernorm_vjp):
  with hardware.building_for(platform):
    assert hardware.cpu_layout_vjps() is layout_vjps
    assert hardware.layernorm_vjp() is layernorm_vjp

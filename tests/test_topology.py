"""TPU slice names as users type them, and the compile-only devices libtpu describes for them."""
import pytest

from vicmae_jax import topology


@pytest.mark.parametrize("name, grid, chips", [
    ("v5p-8", (2, 2, 1), 4), ("v5p-128", (4, 4, 4), 64), ("v4-64", (2, 4, 4), 32),
    ("v4-128", (4, 4, 4), 64), ("v5e-8", (2, 4), 8), ("v5e-256", (16, 16), 256),
    ("v6e-64", (8, 8), 64), ("v5litepod-16", (4, 4), 16), ("v5p:4x4x8", (4, 4, 8), 128)])
def test_slice_names(name, grid, chips):
  s = topology.parse_slice(name)
  assert s.grid == grid and s.chips == chips


def test_multislice_and_wrap():
  s = topology.parse_slice("v5e-256", num_slices=4)
  assert s.chips == 1024 and s.name == "4x v5e-256" and s.wrap == (True, True, False)
  assert topology.parse_slice("v5p-128").wrap == (True, True, True)
  assert topology.parse_slice("v5p-64").wrap == (False, False, False)


@pytest.mark.parametrize("name, match", [
    ("v5p-7", "TensorCores"), ("v5e-48", "no standard"), ("tpu7-8", "Unknown TPU slice"),
    ("v5e:2x2x2", "2-D")])
def test_bad_names_say_what_to_type(name, match):
  with pytest.raises(topology.TopologyError, match=match):
    topology.parse_slice(name)


def test_libtpu_describes_the_slice():
  pytest.importorskip("libtpu")
  devices = topology.devices(topology.parse_slice("v5p-16"))
  assert len(devices) == 8  # 8 chips, one megacore device each
  assert {d.platform for d in devices} == {"tpu"} and devices[0].device_kind == "TPU v5"
  assert len({d.process_index for d in devices}) == 2  # 4 chips per host

"""Test-wide setup: 8 fake CPU devices and parsed absl flags.

Both must happen before jax (or grain) is imported anywhere, which is why they live at the top of
the root conftest rather than in a fixture.
"""
import os

# Every test sees 8 host devices so sharded code paths run for real on a CPU-only machine.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# TensorFlow (pulled in by clu / tfds) must not grab accelerators or spam the log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

# grain 0.2.18's mp_prefetch reads absl flags; outside absl.app.run they must be marked parsed.
flags.FLAGS.mark_as_parsed()


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def gcs():
  """A localhost GCS emulator (one per test process) with every gs:// client pointed at it."""
  import gcs_emulator  # tests/ is on sys.path (its conftest.py puts it there)
  emulator = gcs_emulator.Emulator()
  saved = {k: os.environ.get(k) for k in emulator.env}
  os.environ.update(emulator.env)
  try:
    yield emulator
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    emulator.stop()

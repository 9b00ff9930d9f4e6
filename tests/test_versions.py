"""vicmae_jax.versions: the version line at start and the cross-process comparison."""
from __future__ import annotations

import logging
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from vicmae_jax import versions

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh(monkeypatch):
  """log_and_compare as on a process's first call (it remembers its result)."""
  monkeypatch.setattr(versions, "_compared", None)


def test_stack_versions_read_from_metadata():
  import jax
  import numpy as np
  v = versions.stack_versions()
  assert next(iter(v)) == "python" and v["python"] == ".".join(map(str, sys.version_info[:3]))
  assert v["jax"] == jax.__version__ and v["numpy"] == np.__version__ and "vicmae_jax" in v
  assert set(v) - {"python"} <= set(versions.PACKAGES)   # absent packages are left out


def test_differences_name_packages_and_processes():
  a = {"python": "3.11.7", "jax": "0.10.2", "libtpu": "0.0.42.1"}
  b = {"python": "3.11.7", "jax": "0.10.1"}   # older jax, no libtpu
  assert versions.differences([a, a]) == {}
  diffs = versions.differences([a, a, a, b, a])
  assert diffs == {"jax": {"0.10.2": [0, 1, 2, 4], "0.10.1": [3]},
                   "libtpu": {"0.0.42.1": [0, 1, 2, 4], versions.NOT_INSTALLED: [3]}}
  assert versions.describe(diffs) == (
      "jax: 0.10.2 on processes 0-2, 4, 0.10.1 on process 3; "
      "libtpu: 0.0.42.1 on processes 0-2, 4, not installed on process 3")


def test_log_line_once_per_process(fresh, caplog):
  with caplog.at_level(logging.INFO):
    assert versions.log_and_compare() == {}
    assert versions.log_and_compare() == {}   # remembered: no second line, no collective
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("versions: ")]
  assert len(lines) == 1
  assert "python=" in lines[0] and f"jax={versions.stack_versions()['jax']}" in lines[0]


class _Called(Exception):
  pass


def _boom():
  raise _Called


def test_runs_compare_versions_first(monkeypatch, tmp_path):
  """Training and fine-tuning (open_run) and kNN / extraction (load_encoder) call it first."""
  from vicmae_jax import run_lib
  from vicmae_jax.evaluation import runners
  monkeypatch.setattr(versions, "log_and_compare", _boom)
  with pytest.raises(_Called):
    run_lib.open_run(None, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  with pytest.raises(_Called):
    runners.load_encoder(None)


# Two processes on localhost forming one jax.distributed job (gloo), as launch/local/run.sh does.
# Process 1 then pretends to have another jax: the warning must name it and both processes.
WORKER = r"""
import logging, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                           process_id=int(sys.argv[2]))
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stdout)
from vicmae_jax import versions
assert versions.log_and_compare() == {}
versions._compared = None
real = versions.stack_versions
versions.stack_versions = lambda: {**real(), **({"jax": "9.9.9"} if jax.process_index() else {})}
diffs = versions.log_and_compare()
assert diffs["jax"] == {real()["jax"]: [0], "9.9.9": [1]}, diffs
print("worker done", flush=True)
"""


def test_two_processes_gather_and_warn(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  procs = [subprocess.Popen([sys.executable, "-c", WORKER, f"localhost:{port}", str(i)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=120)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0 and "worker done" in out, out
    assert "(same on all 2 processes)" in out
    assert "WARNING package versions differ between the 2 processes" in out
    assert "jax: " in out and "on process 0, 9.9.9 on process 1" in out

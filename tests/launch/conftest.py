"""Shared fixtures for the launch-script tests: fake gcloud/srun/uv/python that record their argv."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FAKES = pathlib.Path(__file__).resolve().parent / "fakes"


class Fakes:
  """Runs scripts with the fakes first on PATH and reads back what they recorded."""

  def __init__(self, tmp_path: pathlib.Path):
    self.calls_file = tmp_path / "calls.jsonl"
    self.env = dict(os.environ)
    # The scripts' own environment, not pytest's: no inherited device-count flags.
    for key in ("XLA_FLAGS", "JAX_PLATFORMS", "XLA_PYTHON_CLIENT_MEM_FRACTION", "NCCL_DEBUG",
                "JAX_LOCAL_DEVICE_IDS") + tuple(k for k in os.environ if k.startswith(("TPU_", "SLURM_"))):
      self.env.pop(key, None)
    self.env["PATH"] = f"{FAKES}{os.pathsep}{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    self.env["FAKE_CALLS"] = str(self.calls_file)
    self.env["USER"] = "tester"

  def run(self, args: list[str], *, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", *args], cwd=REPO, env={**self.env, **env}, capture_output=True,
                          text=True, timeout=60)
    if check and proc.returncode:
      raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                           f"stderr:\n{proc.stderr}")
    return proc

  def calls(self, prog: str | None = None) -> list[dict]:
    if not self.calls_file.exists():
      return []
    rows = [json.loads(line) for line in self.calls_file.read_text().splitlines()]
    return [r for r in rows if prog is None or r["prog"] == prog]


@pytest.fixture
def fakes(tmp_path) -> Fakes:
  return Fakes(tmp_path)

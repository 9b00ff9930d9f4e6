"""The locks in launch/constraints/ and the install commands that use them (CI, TPU, SLURM docs)."""
from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO
from test_tpu_scripts import bash_argv

LOCKS = REPO / "launch/constraints"
PIN = re.compile(r"[a-z0-9][a-z0-9.-]*==[0-9][^\s+;]*")   # canonical name, no local label


def pins(name: str) -> dict[str, str]:
  lines = (LOCKS / name).read_text().splitlines()
  body = [l for l in lines if l and not l.startswith("#")]
  assert all(PIN.fullmatch(l) for l in body), [l for l in body if not PIN.fullmatch(l)]
  out = dict(l.split("==") for l in body)
  assert len(out) == len(body), f"{name}: a package pinned twice"
  return out


def setup_requirements() -> dict[str, list[str]]:
  """setup.py's INSTALL_REQUIRES and EXTRAS, read without running it."""
  tree = ast.parse((REPO / "setup.py").read_text())
  found = {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
           for t in node.targets if isinstance(t, ast.Name) and t.id in ("INSTALL_REQUIRES", "EXTRAS")}
  return {"": found["INSTALL_REQUIRES"], **found["EXTRAS"]}


@pytest.mark.parametrize("name", ["cpu.txt", "tpu.txt", "gpu.txt"])
def test_lock_is_headed_and_pins_the_tested_stack(name):
  text = (LOCKS / name).read_text()
  assert text.startswith("# Lock") and "launch/constraints/update.sh" in text.split("\n\n")[0]
  p = pins(name)
  assert p["jax"] == p["jaxlib"] == "0.10.2" and p["flax"] == "0.12.8"
  assert not {"pyflakes", "vicmae-jax", "pip", "setuptools", "wheel"} & set(p)
  assert pins("cpu.txt").items() <= p.items()   # TPU and GPU locks extend the CPU one


def test_key_pins():
  cpu, tpu, gpu = pins("cpu.txt"), pins("tpu.txt"), pins("gpu.txt")
  assert cpu["torch"] == "2.13.0"   # the CPU build installs as 2.13.0+cpu; the pin must match both
  assert cpu["gcsfs"] == "2026.10.1" and cpu["gcp-storage-emulator"] == "2026.7.19"
  assert tpu["libtpu"] == "0.0.42.1"
  assert gpu["jax-cuda12-plugin"] == gpu["jax-cuda12-pjrt"] == "0.10.2"
  assert {"nvidia-cudnn-cu12", "nvidia-nccl-cu12", "nvidia-cublas-cu12"} <= set(gpu)
  assert not any(k.startswith("nvidia-") for k in tpu)


@pytest.mark.parametrize("lock,extras", [("cpu.txt", ["", "test", "parity", "tpu"]),
                                         ("tpu.txt", ["", "tpu"]), ("gpu.txt", ["", "gpu"])])
def test_lock_covers_setup_py(lock, extras):
  """Every requirement setup.py declares is pinned, at a version its specifier allows: a new
  dependency added without regenerating the locks (launch/constraints/update.sh) fails here."""
  p = pins(lock)
  declared = setup_requirements()
  for extra in extras:
    for line in declared[extra]:
      req = Requirement(line)
      name = canonicalize_name(req.name)
      assert name in p, f"{lock} does not pin {name} ({extra or 'core'} requirement)"
      assert req.specifier.contains(p[name], prereleases=True), (lock, line, p[name])


def test_pins_py_freezes_only_what_the_extras_need():
  def run(root):
    return subprocess.run([sys.executable, str(LOCKS / "pins.py"), root], capture_output=True,
                          text=True, check=True).stdout.split()
  full = run("vicmae_jax[test,parity,tpu]")
  names = {l.split("==")[0] for l in full}
  assert all(PIN.fullmatch(l) for l in full) and "torch==2.13.0" in full
  assert {"jax", "pytest", "libtpu", "transformers"} <= names
  assert not {"vicmae-jax", "pip", "setuptools", "pyflakes"} & names
  assert "torch" not in {l.split("==")[0] for l in run("vicmae_jax[test]")}


def test_ci_and_readme_install_with_the_cpu_lock():
  ci = (REPO / ".ci/run").read_text()
  # CI adds the beam extra (the DirectRunner tests); the README's commands do not need it.
  assert 'pip install --quiet -e ".[test,parity,tpu,beam]" -c launch/constraints/cpu.txt' in ci
  readme = (REPO / "README.md").read_text()
  assert 'pip install -e ".[test,parity,tpu]" -c launch/constraints/cpu.txt' in readme


def doc_commands(doc: str, script: str) -> list[tuple[dict[str, str], list[str]]]:
  """(leading VAR=value settings, argv) of each command in DOC's bash blocks that runs SCRIPT,
  continuation lines joined; a `&& ...` after it is left out."""
  text = (REPO / doc).read_text()
  out = []
  for block in re.findall(r"```bash\n(.*?)```", text, re.S):
    for line in block.replace("\\\n", " ").splitlines():
      argv = shlex.split(line, comments=True)
      env = {}
      while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):
        key, value = argv.pop(0).split("=", 1)
        env[key] = value
      if argv and argv[0] == script:
        out.append((env, argv[:argv.index("&&")] if "&&" in argv else argv))
  return out


@pytest.mark.parametrize("doc", ["README.md", "docs/tpu.md"])
def test_documented_tpu_command_installs_with_the_lock(fakes, doc):
  env, argv = doc_commands(doc, "launch/tpu/up.sh")[0]
  out = fakes.run([argv[0], "--dry-run", *argv[1:]], **env).stdout
  installs = [bash_argv(l)[-1] for l in out.splitlines() if "uv\\ pip\\ install" in l]
  assert len(installs) == 1 and installs[0].endswith(
      "-e '.[tpu]' -c launch/constraints/tpu.txt"), installs


def test_tpu_setup_constraints_flag(fakes):
  out = fakes.run(["launch/tpu/setup.sh", "--dry-run", "--constraints", "none"]).stdout
  assert "uv\\ pip\\ install" in out and "constraints" not in out
  bad = fakes.run(["launch/tpu/setup.sh", "--dry-run", "--constraints", "nope.txt"], check=False)
  assert bad.returncode == 2 and "no lock nope.txt" in bad.stderr


@pytest.mark.parametrize("doc", ["README.md", "docs/gpu.md"])
def test_documented_gpu_install_uses_the_lock(fakes, doc):
  commands = doc_commands(doc, "launch/gpu/install.sh")
  assert commands, f"{doc} shows no launch/gpu/install.sh command"
  for env, argv in commands:
    out = fakes.run(argv, DRY_RUN="1", **env).stdout.splitlines()
    pip = [shlex.split(l) for l in out if " -m pip install -e " in l]
    assert len(pip) == 1 and pip[0][1:] == ["-m", "pip", "install", "-e", ".[gpu]",
                                            "-c", "launch/constraints/gpu.txt"], out
  assert fakes.calls() == []


def test_gpu_install_options(fakes):
  out = fakes.run(["launch/gpu/install.sh"], DRY_RUN="1", VENV="/shared/my venv",
                  EXTRAS="gpu,test", CONSTRAINTS="none").stdout.splitlines()
  assert shlex.split(out[0]) == ["python3.11", "-m", "venv", "/shared/my venv"]
  assert shlex.split(out[2]) == ["/shared/my venv/bin/python", "-m", "pip", "install", "-e",
                                 ".[gpu,test]"]

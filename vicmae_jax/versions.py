"""Versions of the software stack a run depends on: logged at start, compared across processes.

A multi-host run whose workers installed different versions (a worker set up before a lock
changed, a stray `pip install`) can compile different programs per host and hang or diverge
without a clear error. The locks in launch/constraints/ prevent that; this module detects it.
Versions come from installed-package metadata, so nothing heavy is imported to read them.
"""
from __future__ import annotations

import json
import logging
import platform
from importlib import metadata
from typing import Mapping, Sequence

import numpy as np

# The packages whose versions change numerics, compiled programs or checkpoint formats. Absent
# ones (the TPU runtime on a GPU node, tensorflow vs tensorflow-cpu) are left out of the line.
PACKAGES = ("jax", "jaxlib", "libtpu", "jax-cuda12-plugin", "jax-cuda12-pjrt", "flax", "optax",
            "orbax-checkpoint", "grain", "array-record", "tensorflow", "tensorflow-cpu",
            "tensorflow-datasets", "clu", "av", "numpy", "etils", "gcsfs", "vicmae_jax")
NOT_INSTALLED = "not installed"
# Bytes each process contributes to the gather: a fixed size keeps it one collective.
_BUFFER_BYTES = 4096

_compared: dict[str, dict[str, list[int]]] | None = None  # the result of the first call


def stack_versions() -> dict[str, str]:
  """{package: version} of this process: 'python' first, then the installed PACKAGES."""
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  return out


def version_line(versions: Mapping[str, str]) -> str:
  return "versions: " + " ".join(f"{k}={v}" for k, v in versions.items())


def differences(per_process: Sequence[Mapping[str, str]]) -> dict[str, dict[str, list[int]]]:
  """{package: {version: [process indices]}} for each package not at one version everywhere;
  a package missing on some processes counts as the version 'not installed' there."""
  names = sorted({k for v in per_process for k in v})
  out: dict[str, dict[str, list[int]]] = {}
  for name in names:
    by_version: dict[str, list[int]] = {}
    for i, versions in enumerate(per_process):
      by_version.setdefault(versions.get(name, NOT_INSTALLED), []).append(i)
    if len(by_version) > 1:
      out[name] = by_version
  return out


def _ranges(indices: Sequence[int]) -> str:
  """[0, 1, 2, 5] -> '0-2, 5': readable for the hundreds of hosts of a large slice."""
  runs: list[list[int]] = []
  for i in indices:
    if runs and i == runs[-1][1] + 1:
      runs[-1][1] = i
    else:
      runs.append([i, i])
  return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def describe(diffs: Mapping[str, Mapping[str, Sequence[int]]]) -> str:
  """'jax: 0.10.2 on processes 0-2, 0.10.1 on process 3; ...' for the output of `differences`."""
  return "; ".join(
      f"{name}: " + ", ".join(
          f"{version} on process{'es' if len(procs) > 1 else ''} {_ranges(procs)}"
          for version, procs in by_version.items())
      for name, by_version in diffs.items())


def gather(versions: Mapping[str, str]) -> list[dict[str, str]]:
  """Every process's versions, in process order. A collective: every process must call it."""
  import jax  # here, so that reading versions imports nothing heavy
  if jax.process_count() == 1:
    return [dict(versions)]
  from jax.experimental import multihost_utils
  encoded = json.dumps(dict(versions)).encode()
  if len(encoded) > _BUFFER_BYTES:
    raise ValueError(f"{len(encoded)} bytes of versions exceed the {_BUFFER_BYTES}-byte buffer")
  buffer = np.zeros(_BUFFER_BYTES, np.uint8)
  buffer[:len(encoded)] = np.frombuffer(encoded, np.uint8)
  rows = np.asarray(multihost_utils.process_allgather(buffer))  # [processes, bytes]
  return [json.loads(bytes(row).rstrip(b"\0")) for row in rows]


def log_and_compare() -> dict[str, dict[str, list[int]]]:
  """Logs this process's versions and, in a multi-process run, warns naming each package that
  differs between processes and which processes have which version; returns those differences.

  A collective on its first call (every process must make it); later calls in the same process
  return the first result without logging again: versions cannot change under a running process.
  """
  global _compared
  if _compared is not None:
    return _compared
  mine = stack_versions()
  every = gather(mine)
  _compared = differences(every)
  n = len(every)
  if n == 1:
    logging.info("%s", version_line(mine))
  elif not _compared:
    logging.info("%s (same on all %d processes)", version_line(mine), n)
  else:
    import jax
    logging.info("%s (process %d of %d)", version_line(mine), jax.process_index(), n)
    logging.warning("package versions differ between the %d processes (reinstall every worker "
                    "with the lock in launch/constraints/): %s", n, describe(_compared))
  return _compared

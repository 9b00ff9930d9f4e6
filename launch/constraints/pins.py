"""Prints `name==version`, one a line and sorted, for every installed distribution that the given
requirements need: the pip-freeze of a tested environment, limited to what the project uses.

  python launch/constraints/pins.py 'vicmae_jax[test,parity,tpu]' > pins.txt

Walks the requirement graph over the installed distributions (extras and environment markers
honoured), so tools a developer installed by hand (pyflakes, ...) stay out. The roots themselves
are left out when they are the project (installed editable). Local version labels are dropped
(`torch==2.13.0+cpu` -> `torch==2.13.0`): a constraints file must name versions every index has.
"""
from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# pip freeze leaves these out too: the installer's own tools, present in every venv.
INSTALLER_TOOLS = {"pip", "setuptools", "wheel"}


def closure(roots: list[str]) -> dict[str, metadata.Distribution]:
  """The installed distributions the root requirements need, by canonical name."""
  found: dict[str, metadata.Distribution] = {}
  extras_seen: dict[str, set[str]] = {}
  todo = [Requirement(r) for r in roots]
  while todo:
    req = todo.pop()
    name = canonicalize_name(req.name)
    extras = set(req.extras)
    if name in extras_seen and extras <= extras_seen[name]:
      continue
    extras_seen[name] = extras_seen.get(name, set()) | extras
    try:
      dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
      sys.exit(f"pins.py: {req.name} is required but not installed; install the stack first")
    found[name] = dist
    for line in dist.requires or []:
      dep = Requirement(line)
      # A dependency counts when its marker holds here with no extra or with an asked-for one.
      if dep.marker is None or any(dep.marker.evaluate({"extra": e})
                                   for e in extras_seen[name] | {""}):
        todo.append(dep)
  return found


def main(roots: list[str]) -> None:
  root_names = {canonicalize_name(Requirement(r).name) for r in roots}
  project = {n for n in root_names if n.replace("-", "_") == "vicmae_jax"}
  dists = closure(roots)
  for name in sorted(set(dists) - INSTALLER_TOOLS - project):
    print(f"{name}=={Version(dists[name].version).public}")


if __name__ == "__main__":
  if len(sys.argv) < 2:
    sys.exit(__doc__)
  main(sys.argv[1:])

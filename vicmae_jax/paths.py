"""Paths a user gives, resolved once where they enter the program.

A relative path means "relative to where the command was started"; resolved at the edge it
keeps that meaning in every library underneath (Orbax refuses relative checkpoint paths), in
worker processes and in the config saved with each checkpoint, so a resume from another
directory reads the same data. URLs (gs://, s3://, any `scheme://`) are passed on as given.
"""
from __future__ import annotations

import os
import re
import sys

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str | os.PathLike) -> bool:
  return bool(_URL.match(os.fspath(path)))


def resolve(path: str | os.PathLike | None) -> str:
  """`~` expanded and made absolute against the current directory; URLs, '' and None
  unchanged ('' and None mean "not set" in configs)."""
  if path is None or os.fspath(path) == "":
    return "" if path is None else os.fspath(path)
  text = os.fspath(path)
  if is_url(text):
    return text
  return os.path.abspath(os.path.expanduser(text))


def umask() -> int:
  """The process's file-creation mask, read without changing it (Linux), else set and reset."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def resolve_list(paths: str) -> str:
  """A comma-separated list of paths (or globs), each resolved."""
  return ",".join(resolve(p.strip()) for p in paths.split(",") if p.strip())


# Source kinds whose `path`, `train` and `val` name files or folders (not TFDS split names).
FILE_KINDS = ("kinetics_csv", "video_csv", "ssv2", "mit", "video_folder", "image_folder",
               "image_csv", "frames", "demo", "study")


def resolve_source(spec: dict) -> dict:
  """A data source spec (pretraining's `input.sources[i]`, evaluation's `data`) with its file
  paths resolved: `path` (a comma list or globs for frames), `root`, `labels`, the per-split
  `train` / `val` of file kinds, and `data_dir` of any kind."""
  out = dict(spec)
  keys = ("root", "labels", "train", "val") if spec.get("kind") in FILE_KINDS else ()
  for key in keys:
    if isinstance(out.get(key), str):
      out[key] = resolve(out[key])
  if spec.get("kind") in FILE_KINDS and isinstance(out.get("path"), str):
    out["path"] = resolve_list(out["path"]) if "," in out["path"] else resolve(out["path"])
  if isinstance(out.get("data_dir"), str):
    out["data_dir"] = resolve(out["data_dir"])
  return out


def import_configs_beside(argv: list[str]) -> None:
  """Config files import their siblings as `configs.*`; from any working directory, the folder
  holding a config file's `configs/` package is made importable (the user gave its path). Every
  command taking `--config=FILE` calls this before parsing its flags."""
  for arg in argv:
    if arg.startswith("--config="):
      folder = os.path.dirname(os.path.abspath(arg[len("--config="):].split(":")[0]))
      if os.path.isfile(os.path.join(folder, "__init__.py")):
        root = os.path.dirname(folder)
        if root not in sys.path:
          sys.path.insert(0, root)

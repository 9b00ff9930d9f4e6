"""One file-system layer for every path the program reads or writes: local or object storage.

Local paths go to the operating system directly (the hot paths keep native file I/O). URLs
(gs://, s3://, any scheme `etils.epath` knows) go through `etils.epath`, the library Orbax and
TFDS use too. This module points epath at fsspec (gcsfs for gs://) unless the user set
`EPATH_USE_TF` themselves: one client then serves data, checkpoints and TFDS, the same one the
tests run against a localhost GCS emulator. (TensorFlow's own GCS client, epath's default when
TensorFlow is installed, has a fixed endpoint and cannot be pointed at an emulator.)

Two readers bring their own clients: array_record (shards of pre-extracted frames; C++,
google-cloud-cpp) and tensorstore (Orbax's array data). Both read the same URLs.
"""
from __future__ import annotations

import builtins
import glob as glob_lib
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

from vicmae_jax import paths

# epath decides its backend once per process (cached), at the first URL it meets: this module is
# imported by the package's __init__, before any.
os.environ.setdefault("EPATH_USE_TF", "false")

import fsspec.config  # noqa: E402
from etils import epath  # noqa: E402  (after the backend choice above)

# fsspec clients cache folder listings forever by default. Other writers (another host, Orbax's
# tensorstore, array_record) never invalidate that cache, so a file they add would stay invisible
# to `exists` in this process (tests/test_fs.py): every question goes to the bucket instead.
for _scheme in ("gs", "gcs", "s3"):
  fsspec.config.conf.setdefault(_scheme, {}).setdefault("use_listings_cache", False)

is_url = paths.is_url
_WILDCARD = re.compile(r"[*?\[]")


def path(p: str | os.PathLike) -> epath.Path:
  return epath.Path(p)


def exists(p: str) -> bool:
  return os.path.exists(p) if not is_url(p) else epath.Path(p).exists()


def isdir(p: str) -> bool:
  return os.path.isdir(p) if not is_url(p) else epath.Path(p).is_dir()


def isfile(p: str) -> bool:
  if not is_url(p):
    return os.path.isfile(p)
  q = epath.Path(p)
  return q.exists() and not q.is_dir()


def size(p: str) -> int:
  return os.path.getsize(p) if not is_url(p) else int(epath.Path(p).stat().length)


def open(p: str, mode: str = "rb", **kwargs: Any) -> IO:  # noqa: A001 - the file system's open
  """A file object; for URLs a seekable reader that fetches byte ranges on demand."""
  if not is_url(p):
    return builtins.open(p, mode, **kwargs)
  return epath.Path(p).open(mode)


def read_bytes(p: str) -> bytes:
  with open(p, "rb") as f:
    return f.read()


def read_text(p: str) -> str:
  return read_bytes(p).decode("utf-8")


def write_text(p: str, text: str) -> None:
  with open(p, "w") as f:
    f.write(text)


def makedirs(p: str) -> None:
  if is_url(p):
    epath.Path(p).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(p, exist_ok=True)


def _mod(p: str):
  return posixpath if is_url(p) else os.path


def join(base: str, *parts: str) -> str:
  return _mod(base).join(base, *parts)


def dirname(p: str) -> str:
  return _mod(p).dirname(p)


def basename(p: str) -> str:
  return _mod(p).basename(p)


def isabs(p: str) -> bool:
  return is_url(p) or os.path.isabs(p)


def _split_url(p: str) -> tuple[str, str]:
  scheme, rest = p.split("://", 1)
  return scheme + "://", rest


def normpath(p: str) -> str:
  """Lexically normalised (`..` and `.` resolved); local paths also made absolute."""
  if not is_url(p):
    return os.path.normpath(os.path.abspath(p))
  prefix, rest = _split_url(p)
  return prefix + posixpath.normpath("/" + rest).lstrip("/")


def is_within(p: str, root: str) -> bool:
  """Whether `p` stays inside `root` once both are normalised (lexically)."""
  a, b = normpath(p), normpath(root).rstrip("/")
  if is_url(a) != is_url(b):
    return False
  return a == b or a.startswith(b + ("/" if is_url(b) else os.sep))


def relpath(p: str, root: str) -> str:
  return os.path.relpath(p, root) if not is_url(p) else posixpath.relpath(
      _split_url(p)[1], _split_url(root)[1].rstrip("/") or "/")


def listdir(p: str) -> list[str]:
  """Names of the entries of a folder."""
  if not is_url(p):
    return os.listdir(p)
  return [q.name for q in epath.Path(p).iterdir()]


def walk(root: str, *, followlinks: bool = True) -> Iterator[tuple[str, list[str], list[str]]]:
  """os.walk for any path: (folder, subfolder names, file names), folders as full paths.

  Callers may prune the subfolder list in place (as with os.walk)."""
  if not is_url(root):
    yield from os.walk(root, followlinks=followlinks)
    return
  prefix = _split_url(root)[0]
  for folder, dirnames, filenames in epath.Path(root).walk():
    text = os.fspath(folder)
    # epath's fsspec walk yields bucket paths without their scheme: put it back.
    yield (text if is_url(text) else prefix + text.lstrip("/")), dirnames, filenames


def glob(pattern: str) -> list[str]:
  """Sorted matches of a pattern (`*`, `?`, `[..]` in any component; `**` not needed here)."""
  if not is_url(pattern):
    return sorted(glob_lib.glob(pattern))
  prefix, rest = _split_url(pattern)
  parts = rest.split("/")
  first = next((i for i, part in enumerate(parts) if _WILDCARD.search(part)), None)
  if first is None:
    return [pattern] if exists(pattern) else []
  base = prefix + "/".join(parts[:first])
  if not first or not exists(base):
    return []
  return sorted(os.fspath(q) for q in epath.Path(base).glob("/".join(parts[first:])))


def existing(files: Iterable[str]) -> set[str]:
  """The subset of `files` that exist: one listing per folder for URLs (a million HEAD requests
  for a Kinetics index would take hours), one stat per file locally."""
  files = list(files)
  local = {f for f in files if not is_url(f) and os.path.isfile(f)}
  folders: dict[str, set[str]] = {}
  for f in files:
    if is_url(f):
      folders.setdefault(dirname(f), set()).add(f)
  for folder, wanted in folders.items():
    try:
      names = set(listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
      continue
    local |= {f for f in wanted if basename(f) in names}
  return local


def copy_file(src: str, dst: str) -> None:
  """Copies one file between any two paths (upload, download or local copy)."""
  with open(src, "rb") as fin, open(dst, "wb") as fout:
    shutil.copyfileobj(fin, fout, 8 << 20)


def replace(src: str, dst: str) -> None:
  """Renames `src` over `dst` (object stores: a streamed copy, then a delete; the new object
  appears whole. Server-side rewrites are not used: not every GCS API implementation has them)."""
  if not is_url(src) and not is_url(dst):
    os.replace(src, dst)
  else:
    copy_file(src, dst)
    epath.Path(src).unlink()


def local_staging(suffix: str = "") -> str:
  """A fresh local temporary file name, for writers that only write local files."""
  fd, name = tempfile.mkstemp(suffix=suffix, prefix="vicmae_")
  os.close(fd)
  return name

"""Input worker processes that never outlive their trainer, and what a dead trainer left behind.

Grain's `mp_prefetch` workers are separate processes. When the trainer is killed (kill -9, the
OOM killer) nothing tells them: they linger (hundreds of MB each) and keep multiprocessing's
resource tracker alive, so the shared-memory batches in /dev/shm are never unlinked.

- `worker_init`: Grain's `worker_init_fn`; a daemon thread in each worker exits the worker once
  its parent is gone (the worker is re-parented). A parent-death signal would also fire when the
  parent *thread* that started the worker ends, which Grain's threads do.
- `remove_orphaned_shared_memory`: run at start; unlinks this user's `psm_*` segments in
  /dev/shm that no live process has open or mapped and that are older than a few minutes (a live
  job's segments live for milliseconds between a worker and its consumer), and logs what it freed.
"""
from __future__ import annotations

import logging
import os
import threading
import time

SHM_DIR = "/dev/shm"
_PREFIX = "psm_"          # multiprocessing.shared_memory's default names (Grain uses them)


def _watch_parent(parent: int, poll_s: float) -> None:
  while True:
    time.sleep(poll_s)
    if os.getppid() != parent:
      os._exit(0)  # the trainer is gone: nothing will read this worker's batches


def worker_init(worker_index: int, num_workers: int, *, parent: int,
                poll_s: float = 1.0) -> None:
  """Grain `worker_init_fn` (bind `parent`, the trainer's pid, where the workers are started: a
  worker that starts after its trainer died must not take its new parent for the trainer): the
  worker exits within `poll_s` of the trainer's death."""
  del worker_index, num_workers
  if os.getppid() != parent:
    os._exit(0)
  threading.Thread(target=_watch_parent, args=(parent, poll_s), daemon=True,
                   name="parent_watchdog").start()


def _referenced_shm() -> set[str]:
  """Names of /dev/shm entries some process has open or mapped (those we can see)."""
  names: set[str] = set()
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith(SHM_DIR + "/"):
          names.add(os.path.basename(target))
      with open(f"/proc/{pid}/maps") as f:
        for line in f:
          if SHM_DIR + "/" in line:
            names.add(os.path.basename(line.split()[-1]))
    except OSError:  # the process ended, or is not ours to read
      continue
  return names


def remove_orphaned_shared_memory(min_age_s: float = 600.0) -> tuple[int, int]:
  """Unlinks orphaned shared-memory batches of earlier, killed runs; returns (count, bytes)."""
  if not os.path.isdir(SHM_DIR) or not os.path.isdir("/proc"):
    return 0, 0
  now, uid = time.time(), os.getuid()
  candidates = []
  for name in os.listdir(SHM_DIR):
    if not name.startswith(_PREFIX):
      continue
    try:
      st = os.stat(os.path.join(SHM_DIR, name))
    except OSError:
      continue
    if st.st_uid == uid and now - st.st_mtime > min_age_s:
      candidates.append((name, st.st_size))
  if not candidates:
    return 0, 0
  referenced = _referenced_shm()
  count = size = 0
  for name, nbytes in candidates:
    if name in referenced:
      continue
    try:
      os.unlink(os.path.join(SHM_DIR, name))
    except OSError:
      continue
    count, size = count + 1, size + nbytes
  if count:
    logging.warning("removed %d shared-memory batches (%.1f MB) that killed runs left in %s",
                    count, size / 2**20, SHM_DIR)
  return count, size

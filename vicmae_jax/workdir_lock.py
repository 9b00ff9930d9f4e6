"""One run per workdir: a lock that a second copy of the same command cannot take.

A held `fcntl` lock on WORKDIR/run.lock: the kernel releases it when the process ends however it
ends (kill -9 included), so a dead run never leaves a stale lock, and the file names the holder
(host, pid, start time) for the message. Multi-host runs take it on process 0 only. Object-store
workdirs (gs://) have no such lock; there a warning says the run is unguarded.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import logging
import os
import socket

from vicmae_jax import paths

LOCK_NAME = "run.lock"


class WorkdirBusy(RuntimeError):
  """Another live process holds the workdir."""


class WorkdirLock:
  """Held from `acquire()` until `release()` or the end of the process."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    if paths.is_url(self.workdir):
      logging.warning("workdir %s is not on a local file system: no lock guards it against a "
                      "second run started with the same workdir", self.workdir)
      return self
    path = os.path.join(self.workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
      os.close(fd)
      if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise WorkdirBusy(
            f"workdir {self.workdir} is in use by a running job ({holder}). Wait for it or stop "
            f"it (a stopped run resumes with the same command), or pass another --workdir.") from None
      raise
    os.ftruncate(fd, 0)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

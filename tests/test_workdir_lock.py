"""workdir_lock: a second run is refused while the first lives, never after it died."""
import os
import signal
import subprocess
import sys

import pytest

from vicmae_jax import workdir_lock

_HOLD = """
import sys, time
from vicmae_jax import workdir_lock
workdir_lock.WorkdirLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_refused_while_held_free_after_kill_9(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lock.WorkdirBusy, match=rf"in use by a running job \(pid {holder.pid} on"):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The kernel dropped the dead holder's lock: no stale lock file blocks the next run.
  lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert f"pid {os.getpid()}" in (tmp_path / workdir_lock.LOCK_NAME).read_text()
  lock.release()


def test_remote_workdirs_are_unguarded_and_say_so(caplog):
  workdir_lock.WorkdirLock("gs://bucket/run").acquire().release()
  assert "no lock guards it" in caplog.text

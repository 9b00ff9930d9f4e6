"""Input workers die with their trainer; shared memory a killed run left is freed at the next start."""
import os
import signal
import subprocess
import sys
import time

import pytest

from vicmae_jax.data import workers

_TRAINER = """
import sys
from vicmae_jax import data
cfg = data.demo_config(sys.argv[1], image_size=16)
cfg['num_workers'] = 2
it = data.make_pretrain_iterator(cfg, global_batch_size=2, seed=0)
next(it)
print('running', flush=True)
while True:
  next(it)
"""


def _children(pid: int) -> set[int]:
  """Every live descendant of `pid` (workers, multiprocessing's resource tracker)."""
  parents = {}
  for p in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{p}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
      if fields[0] != 'Z':
        parents[int(p)] = int(fields[1])
    except OSError:
      continue
  out, frontier = set(), {pid}
  while frontier:
    frontier = {c for c, p in parents.items() if p in frontier} - out
    out |= frontier
  return out


def _alive(pids):
  return {p for p in pids if os.path.exists(f'/proc/{p}') and
          open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z'}


@pytest.mark.skipif(not os.path.isdir('/proc'), reason='needs /proc')
def test_workers_exit_when_the_trainer_is_killed(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  trainer = subprocess.Popen([sys.executable, '-c', _TRAINER, str(tmp_path)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    assert trainer.stdout.readline().strip() == 'running'
    kids = _children(trainer.pid)
    assert len(kids) >= 2, kids  # two workers (and the resource tracker)
  finally:
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
  deadline = time.time() + 30
  while _alive(kids) and time.time() < deadline:
    time.sleep(0.2)
  assert not _alive(kids), f'still running after the trainer was killed: {_alive(kids)}'


def test_a_clean_run_leaves_nothing_behind(tmp_path):
  """Batches held past their step (bookkeeping) are copies, and closing lets Grain's iterators go
  before the interpreter exits: no 'leaked shared_memory objects', no shutdown tracebacks."""
  # As the trainer uses it: batches become jax.Arrays (kept here past the iterator's close).
  script = ('import jax\n'
            'from vicmae_jax import data\n'
            f'cfg = data.demo_config({str(tmp_path)!r}, image_size=16)\n'
            'cfg["num_workers"] = 2\n'
            'sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])\n'
            'it = data.make_pretrain_iterator(cfg, global_batch_size=2, seed=0, sharding=sharding)\n'
            'batches = [next(it) for _ in range(4)]\n'
            'it.close()\n'
            'print("done")\n')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env,
                       timeout=300)
  assert out.returncode == 0 and 'done' in out.stdout, out.stderr[-3000:]
  assert 'leaked shared_memory' not in out.stderr and 'Exception ignored' not in out.stderr, \
      out.stderr[-3000:]


@pytest.mark.skipif(not os.path.isdir(workers.SHM_DIR), reason='no /dev/shm')
def test_orphaned_shared_memory_is_removed_and_live_is_kept():
  stale = os.path.join(workers.SHM_DIR, f'psm_vicmae_test_stale_{os.getpid()}')
  held = os.path.join(workers.SHM_DIR, f'psm_vicmae_test_held_{os.getpid()}')
  young = os.path.join(workers.SHM_DIR, f'psm_vicmae_test_young_{os.getpid()}')
  for path in (stale, held, young):
    with open(path, 'wb') as f:
      f.write(b'x' * 4096)
  old = time.time() - 3600
  os.utime(stale, (old, old))
  os.utime(held, (old, old))
  fd = os.open(held, os.O_RDONLY)   # a live process still has this one open
  try:
    count, size = workers.remove_orphaned_shared_memory(min_age_s=600)
    assert not os.path.exists(stale) and os.path.exists(held) and os.path.exists(young)
    assert count >= 1 and size >= 4096
  finally:
    os.close(fd)
    for path in (stale, held, young):
      if os.path.exists(path):
        os.unlink(path)

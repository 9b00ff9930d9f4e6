"""Where a sweep's members run: local processes, a SLURM array job, or Cloud TPU slices."""
from __future__ import annotations

import concurrent.futures
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from vicmae_jax import fs, logging_utils
from vicmae_jax.sweep.members import Member

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))



def run_local(members: Sequence[Member], config_file: str, root: str, *, parallel: int = 1,
              python: str = sys.executable, extra_env: dict[str, str] | None = None,
              log: Callable[[str], None] = print) -> dict[str, int]:
  """Runs each member as `python -m vicmae_jax.main ...`, `parallel` at a time; returns
  {name: exit code}. A failing member is reported and the others still run; its output is in
  WORKDIR/NAME/sweep.log (an interrupted member resumes from its checkpoint next time)."""
  env = {**os.environ, **(extra_env or {})}
  codes: dict[str, int] = {}
  lock, start, done = threading.Lock(), time.monotonic(), [0]

  def one(member: Member) -> None:
    workdir = member.workdir(root)
    fs.makedirs(workdir)
    local_log = (os.path.join(workdir, 'sweep.log') if not fs.is_url(workdir)
                 else fs.local_staging('.log'))
    cmd = [python, '-m', 'vicmae_jax.main', *member.main_args(config_file, workdir)]
    with lock:
      log(f'sweep: start {member.name}: {shlex.join(cmd[1:])}')
    t0 = time.monotonic()
    with open(local_log, 'a') as f:
      f.write(f'$ {shlex.join(cmd)}\n')
      f.flush()
      rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd()).returncode
    if fs.is_url(workdir):
      fs.copy_file(local_log, fs.join(workdir, 'sweep.log'))
      os.remove(local_log)
    with lock:
      codes[member.name] = rc
      done[0] += 1
      elapsed = time.monotonic() - start
      left = len(members) - done[0]
      eta = logging_utils.duration(elapsed / done[0] * left) if left else '0m00s'
      status = 'done' if rc == 0 else f'FAILED (exit {rc}; see {fs.join(workdir, "sweep.log")})'
      log(f'sweep: [{done[0]}/{len(members)}] {member.name} {status} in '
          f'{logging_utils.duration(time.monotonic() - t0)}; {left} to go, ETA {eta}')

  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    list(pool.map(one, members))
  return codes


def _ranges(indices: Sequence[int]) -> str:
  """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8' (SLURM's --array syntax)."""
  out, i = [], 0
  idx = sorted(indices)
  while i < len(idx):
    j = i
    while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
      j += 1
    out.append(str(idx[i]) if i == j else f'{idx[i]}-{idx[j]}')
    i = j + 1
  return ','.join(out)


def slurm_script(members: Sequence[Member], config: str, root: str, *, parallel: int = 0,
                 job_name: str = 'vicmae-sweep', time_limit: str = '04:00:00',
                 partition: str = '', gpus: int = 1, cpus: int = 8, python: str = 'python',
                 repo: str = REPO) -> str:
  """An sbatch array script with one task per member given (by its index in the sweep); each
  task runs `python -m vicmae_jax.sweep --member=INDEX`, which skips a finished member and
  resumes an interrupted one, so resubmitting the same script finishes a sweep."""
  if not members:
    raise ValueError('no members to submit')
  array = _ranges([m.index for m in members]) + (f'%{parallel}' if parallel > 0 else '')
  q = shlex.quote
  lines = [
      '#!/usr/bin/env bash',
      '# A sweep as a SLURM array job, written by `python -m vicmae_jax.sweep --launcher slurm`.',
      f'# Members: {", ".join(m.name for m in members[:5])}' + (' ...' if len(members) > 5 else ''),
      f'#SBATCH --job-name={job_name}',
      f'#SBATCH --array={array}',
      f'#SBATCH --time={time_limit}',
      f'#SBATCH --cpus-per-task={cpus}',
      '#SBATCH --ntasks=1',
  ]
  if gpus > 0:
    lines.append(f'#SBATCH --gpus-per-task={gpus}')
  if partition:
    lines.append(f'#SBATCH --partition={partition}')
  if not fs.is_url(root):
    lines.append(f'#SBATCH --output={root}/slurm-%A_%a.out')
  lines += [
      '#   SIGTERM 5 minutes before the limit: the trainer checkpoints and exits; resubmit to go on.',
      '#SBATCH --signal=TERM@300',
      'set -euo pipefail',
      f'cd {q(repo)}',
      f'exec {q(python)} -m vicmae_jax.sweep --config={q(config)} --workdir={q(root)} '
      '--member="${SLURM_ARRAY_TASK_ID}"',
  ]
  return '\n'.join(lines) + '\n'


def submit_slurm(script_path: str) -> str:
  """sbatch SCRIPT; returns sbatch's answer (the job id line)."""
  out = subprocess.run(['sbatch', script_path], capture_output=True, text=True, check=True)
  return out.stdout.strip()


def tpu_commands(members: Sequence[Member], config_file: str, root: str,
                 tpu_flags: Sequence[str] = ()) -> list[str]:
  """One `launch/tpu/run.sh` command per member, running `vicmae_jax.main` with the member's
  arguments on every worker of a slice, in the background. A slice runs one job at a time: give
  members their own slices (`--name`), or start the next once `launch/tpu/status.sh` shows the
  last one finished. The sweep sees a member as finished from its workdir (metrics at the last
  step), so `--launcher tpu` again lists only what is left, and the summary works as locally."""
  q = shlex.quote
  flags = ''.join(q(f) + ' ' for f in tpu_flags)
  return [f'launch/tpu/run.sh {flags}-- ' + ' '.join(q(a) for a in
                                                 m.main_args(config_file, m.workdir(root)))
          for m in members]

"""launch/local/run.sh: N processes forming one jax.distributed job on this machine.

The first tests use the fake python (fast); the last one trains a real 2-process x 4-device job
on the demo config, kills it with SIGKILL after a checkpoint is committed, re-runs the same
command and checks that it resumed and finished.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

from conftest import FAKES, REPO

RUN = "launch/local/run.sh"


def test_dry_run_commands(fakes):
  out = fakes.run([RUN, "2", "--", "--workdir=/tmp/a b"], DRY_RUN="1", PORT="23456").stdout
  lines = out.splitlines()
  assert len(lines) == 2
  for i, line in enumerate(lines):
    assert "XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu" in line
    assert line.rstrip().endswith(f"--workdir=/tmp/a\\ b --coordinator_address=localhost:23456 "
                                  f"--num_processes=2 --process_id={i}")


def test_processes_get_their_own_environment_and_prefixed_logs(fakes):
  proc = fakes.run([RUN, "3", "--", "--workdir=/tmp/a b"], PYTHON=str(FAKES / "python"),
                   PORT="23457", DEVICES_PER_PROCESS="2", XLA_FLAGS="--from_the_caller")
  calls = sorted(fakes.calls("python"), key=lambda c: c["argv"][-1])
  assert [c["argv"] for c in calls] == [
      ["-m", "vicmae_jax.main", "--workdir=/tmp/a b", "--coordinator_address=localhost:23457",
       "--num_processes=3", f"--process_id={i}"] for i in range(3)]
  assert all(c["env"]["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2" and
             c["env"]["JAX_PLATFORMS"] == "cpu" for c in calls)
  for i in range(3):
    assert f"[{i}] fake python, process {i}" in proc.stdout


def test_one_failure_stops_the_job(fakes):
  t0 = time.time()
  proc = fakes.run([RUN, "2"], check=False, PYTHON=str(FAKES / "python"), PORT="23458",
                   FAKE_FAIL_PROCESS_ID="1", FAKE_SLEEP="60")
  assert proc.returncode == 3, proc.stderr
  assert time.time() - t0 < 30   # process 0 was killed, not waited for
  assert "exited with status 3; stopping the others" in proc.stderr


def test_bad_process_count(fakes):
  assert fakes.run([RUN, "two"], check=False).returncode == 2


# --- a real 2-process job: train, checkpoint, SIGKILL, resume ------------------------------------

TOTAL_STEPS = 12
TINY = [
    f"--config=configs/demo.py:data=clips,steps={TOTAL_STEPS},batch=16,image_size=32",
    "--config.model.depth=1", "--config.model.width=32", "--config.model.heads=2",
    "--config.model.mlp_dim=64", "--config.model.decoder_width=16",
    "--config.model.decoder_depth=1", "--config.model.decoder_heads=2",
    "--config.model.projector_hidden=32", "--config.model.projector_out=16",
    "--config.model.predictor_hidden=32", "--config.checkpoint.every_steps=2",
    "--config.log_every_steps=1", "--config.image_every_steps=0",
]


def _committed_steps(ckpt_dir: pathlib.Path) -> list[int]:
  if not ckpt_dir.exists():
    return []
  return sorted(int(p.name) for p in ckpt_dir.iterdir()
                if p.name.isdigit() and (p / "commit_success.txt").exists())


def _metric_steps(workdir: pathlib.Path) -> list[int]:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(l)["step"] for l in path.read_text().splitlines() if l.strip()]


def test_two_process_job_is_killed_and_resumes(tmp_path):
  workdir = tmp_path / "work dir"   # a space, to prove the quoting end to end
  # Both processes would otherwise write the demo media into the same files at once.
  subprocess.run([sys.executable, "-c", "import sys; from vicmae_jax.data import synthetic; "
                  "synthetic.write_demo_data(sys.argv[1])", str(workdir / "demo_data")],
                 cwd=REPO, check=True, env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env.update(PYTHON=sys.executable,
             # The resumed job reuses the first job's compiled step (about half of its runtime).
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"))
  cmd = ["bash", RUN, "2", "--", *TINY, f"--workdir={workdir}"]
  ckpt_dir = workdir / "checkpoints"

  log1 = tmp_path / "run1.log"
  with log1.open("w") as out:
    # Own session: SIGKILL to the group takes down run.sh, both trainers and the log prefixers,
    # like a machine that loses power.
    job = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                           start_new_session=True)
    deadline = time.time() + 240
    while not _committed_steps(ckpt_dir):
      assert job.poll() is None, f"job ended before a checkpoint:\n{log1.read_text()[-4000:]}"
      assert time.time() < deadline, f"no checkpoint in time:\n{log1.read_text()[-4000:]}"
      time.sleep(0.1)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
  killed_at = max(_committed_steps(ckpt_dir))
  assert max(_metric_steps(workdir)) < TOTAL_STEPS, "the first job finished before the kill"

  log2 = tmp_path / "run2.log"
  with log2.open("w") as out:
    rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                        timeout=300).returncode
  text = log2.read_text()
  assert rc == 0, text[-4000:]
  restored = {int(m) for m in re.findall(r"\[(?:0|1)\] .*restored step (\d+)", text)}
  assert len(restored) == 1 and restored.pop() >= killed_at, text[-4000:]
  assert "[0] " in text and "[1] " in text
  steps = _metric_steps(workdir)
  assert steps[-1] == TOTAL_STEPS
  # The second job continued after the checkpoint instead of starting over.
  started = re.search(r"\[0\] .*starting at step (\d+) of (\d+)", text)
  assert started and int(started[1]) >= killed_at and int(started[2]) == TOTAL_STEPS
  assert steps.count(1) == 1 and max(_committed_steps(ckpt_dir)) == TOTAL_STEPS

"""Kill -9 and SIGTERM in the middle of a real run; the same command resumes it exactly.

Runs `python -m vicmae_jax.main` as a user would. The resumed run must reproduce the
uninterrupted run's per-step losses bit for bit: model state, optimizer, EMA target, BatchNorm
statistics, RNG and the data iterator all come back from the checkpoint.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 24


def _command(workdir: Path, media: Path) -> list[str]:
  return [sys.executable, "-m", "vicmae_jax.main",
          f"--config=configs/demo.py:data=clips,steps={STEPS},batch=8,image_size=32,media={media}",
          f"--workdir={workdir}", "--config.model.depth=1", "--config.model.width=32",
          "--config.model.mlp_dim=64", "--config.model.decoder_depth=1",
          "--config.model.decoder_width=32", "--config.model.projector_hidden=64",
          "--config.model.predictor_hidden=64", "--config.checkpoint.every_steps=4",
          "--config.log_every_steps=1", "--config.image_every_steps=0"]


def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(ROOT)
  return env


def _losses(workdir: Path) -> dict[int, float]:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return {}
  out = {}
  for line in path.read_text().splitlines():
    row = json.loads(line)
    out[row["step"]] = row["loss"]  # a re-run step overwrites: the last value counts
  return out


def _committed(workdir: Path) -> list[int]:
  ckpts = workdir / "checkpoints"
  if not ckpts.exists():
    return []
  return sorted(int(p.name) for p in ckpts.iterdir()
                if p.name.isdigit() and (p / "commit_success.txt").exists())


def _run_until(workdir, media, sig, min_checkpoint, log):
  """Starts the command and sends `sig` once checkpoint `min_checkpoint` is committed."""
  proc = subprocess.Popen(_command(workdir, media), cwd=ROOT, env=_env(), stdout=log,
                          stderr=subprocess.STDOUT)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if any(s >= min_checkpoint for s in _committed(workdir)) and max(_losses(workdir), default=0) > min_checkpoint:
      proc.send_signal(sig)
      break
    time.sleep(0.05)
  return proc.wait(timeout=300)


def test_kill_and_sigterm_then_resume_reproduce_the_uninterrupted_losses(tmp_path):
  media = tmp_path / "media"
  with open(tmp_path / "log.txt", "w") as log:
    ref = tmp_path / "reference"
    assert subprocess.run(_command(ref, media), cwd=ROOT, env=_env(), stdout=log,
                          stderr=subprocess.STDOUT, timeout=400).returncode == 0
    run = tmp_path / "interrupted"
    # kill -9 after the checkpoint at step 4: no chance to save anything more.
    assert _run_until(run, media, signal.SIGKILL, 4, log) == -signal.SIGKILL
    killed_at = max(_losses(run))
    assert killed_at < STEPS
    # SIGTERM after a later checkpoint: saves the current step and exits cleanly.
    assert _run_until(run, media, signal.SIGTERM, 12, log) == 0
    stopped = _committed(run)
    # Resume once more and finish.
    assert subprocess.run(_command(run, media), cwd=ROOT, env=_env(), stdout=log,
                          stderr=subprocess.STDOUT, timeout=400).returncode == 0
  text = (tmp_path / "log.txt").read_text()
  assert text.count("restored step") >= 2 and "stopped on request" in text
  assert max(stopped) >= 12
  reference, resumed = _losses(ref), _losses(run)
  assert sorted(reference) == sorted(resumed) == list(range(1, STEPS + 1))
  assert resumed == reference  # exact, every step
  # The steps the killed run logged past its checkpoint were run again: one row per step.
  rows = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
  assert rows == sorted(set(rows))


def test_relative_workdir_one_run_at_a_time_and_ctrl_c(tmp_path):
  """As a user types it: relative --workdir and media, started from another directory; the same
  command a second time is refused while the first runs; Ctrl-C saves and exits 0; the same
  command then finishes the run."""
  cwd = tmp_path / "home"
  cwd.mkdir()
  def command(steps):  # long enough that the first run still runs when the second starts
    return [c.replace(str(tmp_path / "run"), "run").replace(str(tmp_path / "media"), "media")
            .replace("configs/demo.py", str(ROOT / "configs" / "demo.py"))
            .replace(f"steps={STEPS},", f"steps={steps},")
            for c in _command(tmp_path / "run", tmp_path / "media")]
  workdir = cwd / "run"
  with open(tmp_path / "log.txt", "w") as log:
    first = subprocess.Popen(command(100_000), cwd=cwd, env=_env(), stdout=log,
                             stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and not any(s >= 4 for s in _committed(workdir)):
      assert first.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
      time.sleep(0.05)
    second = subprocess.run(command(100_000), cwd=cwd, env=_env(), capture_output=True,
                            text=True, timeout=300)
    assert first.poll() is None
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=300) == 0
    stopped_at = max(_committed(workdir))
    assert subprocess.run(command(stopped_at + 2), cwd=cwd, env=_env(), stdout=log,
                          stderr=subprocess.STDOUT, timeout=400).returncode == 0
  assert second.returncode == 1
  assert f"WorkdirBusy: workdir {workdir} is in use by a running job (pid {first.pid}" in second.stderr
  assert "Traceback" not in second.stderr
  text = (tmp_path / "log.txt").read_text()
  assert "SIGINT received: will save a checkpoint" in text and "stopped on request" in text
  assert max(_committed(workdir)) == stopped_at + 2
  assert sorted(_losses(workdir)) == list(range(1, stopped_at + 3))

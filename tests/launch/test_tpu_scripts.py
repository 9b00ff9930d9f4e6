"""launch/tpu/*: the gcloud commands they issue, on all workers, with quoting that survives spaces.

The fake gcloud records argv exactly; with FAKE_HOME set it also plays the worker: `tpu-vm scp`
copies into that folder and `tpu-vm ssh --command` runs the command there with bash, so the
remote command lines are executed, not just compared as text.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import time

import pytest

ZONE = "europe-west4-a"
NAME = "vicmae-test"
COMMON = ["--name", NAME, "--zone", ZONE]
# Arguments that break naive quoting: spaces, a quote, a dollar sign, a glob.
MAIN_ARGS = ["--config=configs/demo.py:data=clips,steps=3", "--workdir=gs://my bucket/runs/a run",
             "--config.note=it's $HOME and *"]


def bash_argv(line: str) -> list[str]:
  """Parses a printed command the way bash would (it may use $'...' quoting, which shlex lacks)."""
  out = subprocess.run(["bash", "-c", "gcloud() { printf '%s\\0' gcloud \"$@\"; }; " + line],
                       capture_output=True, text=True, check=True).stdout
  return out.split("\0")[:-1]


def ssh_commands(calls):
  return [next(a.split("=", 1)[1] for a in c["argv"] if a.startswith("--command="))
          for c in calls if c["argv"][2:4] == ["tpu-vm", "ssh"]]


def test_create_queued_spot(fakes):
  fakes.run(["launch/tpu/create.sh", *COMMON, "--accelerator-type", "v5p-128", "--spot",
             "--project", "my-proj", "--", "--network=my net"])
  (call,) = fakes.calls("gcloud")
  assert call["argv"] == [
      "compute", "tpus", "queued-resources", "create", NAME, f"--node-id={NAME}", f"--zone={ZONE}",
      "--accelerator-type=v5p-128", "--runtime-version=tpu-ubuntu2204-base", "--spot",
      "--network=my net", "--project=my-proj"]


def test_create_plain_tpu_vm_from_env(fakes):
  fakes.run(["launch/tpu/create.sh"], TPU_QUEUED="0", TPU_NAME=NAME, TPU_ZONE=ZONE,
            TPU_ACCELERATOR_TYPE="v6e-64", TPU_RUNTIME_VERSION="v2-alpha-tpuv6e")
  (call,) = fakes.calls("gcloud")
  assert call["argv"] == ["compute", "tpus", "tpu-vm", "create", NAME, f"--zone={ZONE}",
                          "--accelerator-type=v6e-64", "--version=v2-alpha-tpuv6e"]


def test_create_wait_polls_until_active(fakes, tmp_path):
  fakes.run(["launch/tpu/create.sh", *COMMON, "--wait"], FAKE_STATE_FILE=str(tmp_path / "state"),
            TPU_WAIT_INTERVAL_S="0")
  verbs = [c["argv"][3] for c in fakes.calls("gcloud")]
  assert verbs == ["create", "describe"]


def test_dry_run_prints_and_calls_nothing(fakes):
  out = fakes.run(["launch/tpu/up.sh", *COMMON, "--dry-run", "--spot", "--", *MAIN_ARGS]).stdout
  assert fakes.calls() == []
  lines = [l for l in out.splitlines() if l.startswith("gcloud ")]
  # The printed commands are valid shell: they parse back into the intended argv.
  argvs = [bash_argv(l) for l in lines]
  assert argvs[0][:5] == ["gcloud", "compute", "tpus", "queued-resources", "describe"]
  assert argvs[1][3:5] == ["queued-resources", "create"] and "--spot" in argvs[1]
  assert ["tpu-vm", "scp"] == argvs[2][3:5] and "--worker=all" in argvs[2]
  for argv in argvs[3:]:
    assert argv[3:5] == ["tpu-vm", "ssh"] and "--worker=all" in argv
  run_cmd = argvs[-1][-1]
  assert "vicmae_jax.main" in run_cmd and "nohup" in run_cmd
  assert "--workdir=gs://my\\ bucket/runs/a\\ run" in run_cmd


def test_setup_and_run_on_simulated_worker(fakes, tmp_path):
  """setup.sh ships this checkout and builds the venv; run.sh starts main with exact argv."""
  home = tmp_path / "worker home"
  home.mkdir()
  env = dict(FAKE_HOME=str(home))
  fakes.run(["launch/tpu/setup.sh", *COMMON], **env)
  gcloud = fakes.calls("gcloud")
  assert [c["argv"][2:4] for c in gcloud] == [["tpu-vm", "scp"]] + [["tpu-vm", "ssh"]] * 3
  assert all("--worker=all" in c["argv"] and f"--zone={ZONE}" in c["argv"] for c in gcloud)
  assert (home / "vicmae_jax" / "vicmae_jax" / "main.py").exists()   # the tarball was unpacked
  assert (home / "vicmae_jax" / "launch" / "tpu" / "run.sh").exists()
  (venv_call, install_call) = fakes.calls("uv")
  assert venv_call["argv"] == ["venv", "--allow-existing", "--python", "3.11",
                               str(home / "venv-vicmae")]
  assert install_call["argv"] == ["pip", "install", "--python",
                                  str(home / "venv-vicmae" / "bin" / "python"), "-e", ".[tpu]",
                                  "-c", "launch/constraints/tpu.txt"]
  # The lock travelled with the code and the relative path resolves where uv runs.
  assert (pathlib.Path(install_call["cwd"]) / "launch/constraints/tpu.txt").is_file()
  assert fakes.calls("python")[-1]["argv"][0] == "-c"   # the import check ran on the "worker"

  fakes.run(["launch/tpu/run.sh", *COMMON, "--env", "MY_SETTING=a b", "--", *MAIN_ARGS], **env)
  run_ssh = fakes.calls("gcloud")[-1]
  assert run_ssh["argv"][2:4] == ["tpu-vm", "ssh"] and "--worker=all" in run_ssh["argv"]
  deadline = time.time() + 10
  while len(fakes.calls("python")) < 2 and time.time() < deadline:
    time.sleep(0.1)   # main runs in the background on the worker
  train = fakes.calls("python")[-1]
  assert train["argv"] == ["-m", "vicmae_jax.main", "--distributed=on", *MAIN_ARGS]
  assert train["cwd"] == str(home / "vicmae_jax")
  assert train["env"]["MY_SETTING"] == "a b" and train["env"]["PYTHONUNBUFFERED"] == "1"
  log = (home / "vicmae_run.log").read_text()
  assert "starting vicmae_jax.main" in log and "fake python" in log
  assert (home / "vicmae_run.log.pid").read_text().strip().isdigit()


def test_run_refuses_a_second_job_and_stop_sends_sigterm(fakes, tmp_path):
  home = tmp_path / "home"
  (home / "vicmae_jax").mkdir(parents=True)
  (home / "venv-vicmae" / "bin").mkdir(parents=True)
  os.symlink(os.path.realpath(fakes.env["PATH"].split(os.pathsep)[0] + "/python"),
             home / "venv-vicmae" / "bin" / "python")
  env = dict(FAKE_HOME=str(home), FAKE_SLEEP="30")
  fakes.run(["launch/tpu/run.sh", *COMMON, "--", *MAIN_ARGS], **env)
  second = fakes.run(["launch/tpu/run.sh", *COMMON, "--", *MAIN_ARGS], check=False, **env)
  assert second.returncode != 0 and "a run is still going" in second.stderr
  pid = int((home / "vicmae_run.log.pid").read_text())
  out = fakes.run(["launch/tpu/stop.sh", *COMMON], **env).stdout
  assert f"sent SIGTERM to pid {pid}" in out
  deadline = time.time() + 10
  while time.time() < deadline:
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      break
    time.sleep(0.1)
  else:
    pytest.fail("the fake training process did not stop on SIGTERM")


def test_run_requires_workdir(fakes):
  proc = fakes.run(["launch/tpu/run.sh", *COMMON, "--", "--config=configs/demo.py"], check=False)
  assert proc.returncode == 2 and "--workdir" in proc.stderr and fakes.calls() == []


def test_up_recreates_a_preempted_slice_then_runs(fakes, tmp_path):
  """After a spot preemption the same up.sh command deletes, recreates, sets up and runs again."""
  state = tmp_path / "state"
  state.write_text("SUSPENDED\n")
  home = tmp_path / "home"
  home.mkdir()
  fakes.run(["launch/tpu/up.sh", *COMMON, "--spot", "--", *MAIN_ARGS], FAKE_STATE_FILE=str(state),
            FAKE_HOME=str(home), TPU_WAIT_INTERVAL_S="0")
  steps = [c["argv"][2:4] for c in fakes.calls("gcloud")]
  assert steps[:4] == [["queued-resources", "describe"], ["queued-resources", "delete"],
                       ["queued-resources", "create"], ["queued-resources", "describe"]]
  assert steps[4:] == [["tpu-vm", "scp"]] + [["tpu-vm", "ssh"]] * 4
  create = fakes.calls("gcloud")[2]["argv"]
  assert "--spot" in create and f"--node-id={NAME}" in create
  delete = fakes.calls("gcloud")[1]["argv"]
  assert "--force" in delete and "--quiet" in delete
  # Same command again on the now ACTIVE slice: no create, straight to setup and run.
  fakes.calls_file.unlink()
  fakes.run(["launch/tpu/up.sh", *COMMON, "--spot", "--", *MAIN_ARGS], FAKE_STATE_FILE=str(state),
            TPU_WAIT_INTERVAL_S="0")
  verbs = [c["argv"][3] for c in fakes.calls("gcloud")]
  assert "create" not in verbs and "delete" not in verbs and verbs[-1] == "ssh"


@pytest.mark.parametrize("script,extra,expect", [
    ("logs.sh", [], ("--worker=0", "tail -n 100 -F")),
    ("logs.sh", ["--worker", "all", "--lines", "5", "--no-follow"], ("--worker=all", "tail -n 5 ")),
    ("status.sh", [], ("--worker=all", "kill -0")),
    ("stop.sh", [], ("--worker=all", "kill -TERM")),
])
def test_worker_commands(fakes, tmp_path, script, extra, expect):
  state = tmp_path / "state"
  state.write_text("ACTIVE\n")
  fakes.run([f"launch/tpu/{script}", *COMMON, *extra], FAKE_STATE_FILE=str(state))
  call = fakes.calls("gcloud")[-1]["argv"]
  worker, snippet = expect
  assert call[:6] == ["compute", "tpus", "tpu-vm", "ssh", NAME, f"--zone={ZONE}"]
  assert worker in call and snippet in ssh_commands([fakes.calls("gcloud")[-1]])[0]


def test_status_of_missing_slice_asks_no_worker(fakes):
  out = fakes.run(["launch/tpu/status.sh", *COMMON]).stdout
  assert "MISSING" in out and [c["argv"][3] for c in fakes.calls("gcloud")] == ["describe"]


def test_delete(fakes):
  fakes.run(["launch/tpu/delete.sh", *COMMON])
  fakes.run(["launch/tpu/delete.sh", *COMMON, "--no-queued"])
  a, b = (c["argv"] for c in fakes.calls("gcloud"))
  assert a == ["compute", "tpus", "queued-resources", "delete", NAME, f"--zone={ZONE}", "--force",
               "--quiet"]
  assert b == ["compute", "tpus", "tpu-vm", "delete", NAME, f"--zone={ZONE}", "--quiet"]


def test_setup_from_git_url(fakes):
  out = fakes.run(["launch/tpu/setup.sh", *COMMON, "--dry-run", "--repo-url",
                   "https://example.com/me/vicmae jax.git", "--branch", "exp"]).stdout
  first = bash_argv(out.splitlines()[0])
  command = first[-1].split("=", 1)[1]
  assert "git clone --depth 1 --branch exp https://example.com/me/vicmae\\ jax.git" in command
  assert "scp" not in out

#!/usr/bin/env python3
"""Stand-in for gcloud, srun, uv, curl and python in the launch-script tests.

Every call appends one JSON line {"prog", "argv", "env", "cwd"} to $FAKE_CALLS, so tests see the
exact argv (spaces, quotes and all). The program is chosen by the name it is called under (each
fake is a symlink to this file). Optional behaviour, driven by environment variables:
  gcloud  FAKE_STATE_FILE: describe prints its content (missing file: "NOT_FOUND", exit 1),
          create writes ACTIVE, delete removes it.
          FAKE_HOME: `tpu-vm scp SRC NAME:DEST` copies SRC to $FAKE_HOME/DEST and
          `tpu-vm ssh --command=CMD` runs CMD with bash in $FAKE_HOME (a simulated worker).
  uv      `uv venv ... PATH` creates PATH/bin/python as another fake python.
  python  exits 3 when its --process_id equals FAKE_FAIL_PROCESS_ID; sleeps FAKE_SLEEP seconds.
"""
import json
import os
import shutil
import subprocess
import sys
import time

ENV_KEYS = ("XLA_FLAGS", "JAX_PLATFORMS", "XLA_PYTHON_CLIENT_MEM_FRACTION", "NCCL_DEBUG",
            "JAX_LOCAL_DEVICE_IDS", "PYTHONUNBUFFERED", "HOME", "MY_SETTING")


def record(prog, argv):
  with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(dict(prog=prog, argv=argv, cwd=os.getcwd(),
                            env={k: os.environ.get(k) for k in ENV_KEYS})) + "\n")


def gcloud(argv):
  state_file = os.environ.get("FAKE_STATE_FILE")
  home = os.environ.get("FAKE_HOME")
  verb = argv[3] if len(argv) > 3 else ""  # compute tpus GROUP VERB ...
  if verb == "describe":
    if state_file and os.path.exists(state_file):
      print(open(state_file).read().strip())
      return 0
    print("ERROR: NOT_FOUND", file=sys.stderr)
    return 1
  if verb == "create" and state_file:
    open(state_file, "w").write("ACTIVE\n")
  if verb == "delete" and state_file and os.path.exists(state_file):
    os.remove(state_file)
  if verb == "scp" and home:
    shutil.copy(argv[4], os.path.join(home, argv[5].split(":", 1)[1]))
  if verb == "ssh" and home:
    command = next(a.split("=", 1)[1] for a in argv if a.startswith("--command="))
    env = dict(os.environ, HOME=home)
    return subprocess.run(["bash", "-c", command], cwd=home, env=env).returncode
  return 0


def uv(argv):
  if argv and argv[0] == "venv":
    bindir = os.path.join(argv[-1], "bin")
    os.makedirs(bindir, exist_ok=True)
    target = os.path.join(bindir, "python")
    if not os.path.exists(target):
      os.symlink(os.path.join(os.path.dirname(os.path.realpath(__file__)), "python"), target)
  return 0


def python(argv):
  pid = next((a.split("=", 1)[1] for a in argv if a.startswith("--process_id=")), None)
  print(f"fake python, process {pid}", flush=True)
  if pid is not None and pid == os.environ.get("FAKE_FAIL_PROCESS_ID"):
    return 3
  time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
  return 0


def main():
  prog = os.path.basename(sys.argv[0])
  argv = sys.argv[1:]
  record(prog, argv)
  return {"gcloud": gcloud, "uv": uv, "python": python}.get(prog, lambda a: 0)(argv)


if __name__ == "__main__":
  sys.exit(main())

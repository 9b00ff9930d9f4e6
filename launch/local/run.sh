#!/usr/bin/env bash
# Start N processes on this machine that form one jax.distributed job over CPU collectives (gloo),
# so multi-host code paths (per-host data shards, global arrays, every process saving its part of a
# checkpoint, agreeing on preemption) run anywhere, without a pod or a cluster.
#
#   launch/local/run.sh N [-- MAIN_ARGS...]
#   launch/local/run.sh 2 -- --config=configs/demo.py:data=clips,steps=20 --workdir=/tmp/vicmae_2proc
#
# Environment (defaults in brackets):
#   DEVICES_PER_PROCESS [4]   fake CPU devices per process (--xla_force_host_platform_device_count)
#   PORT                [a free one]  coordinator port on localhost
#   PYTHON              [python]      interpreter with vicmae_jax installed
#   DRY_RUN             [0]           1: print the N commands instead of running them
# Each process's output is prefixed with "[i] ". If one process fails, the others are killed and
# the script exits with that process's status; SIGINT/SIGTERM are forwarded to every process (the
# trainer turns SIGTERM into a checkpoint and a clean exit).
set -euo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then usage; exit 2; fi
num_processes="$1"; shift
if ! [[ "$num_processes" =~ ^[1-9][0-9]*$ ]]; then
  echo "run.sh: N must be a positive integer, got '$num_processes'" >&2; exit 2
fi
if [[ $# -gt 0 && "$1" == "--" ]]; then shift; fi
main_args=("$@")

devices="${DEVICES_PER_PROCESS:-4}"
python="${PYTHON:-python}"
dry_run="${DRY_RUN:-0}"

free_port() {
  # Bind port 0 and let the kernel choose; the tiny race before process 0 binds it is acceptable.
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port="${PORT:-}"
if [[ -z "$port" ]]; then
  if [[ "$dry_run" == 1 ]]; then port=12345; else port="$(free_port)"; fi
fi

# Every process gets its own environment: the caller's XLA_FLAGS (e.g. pytest's 8 devices) must not
# leak in, and JAX must not look for an accelerator.
xla_flags="--xla_force_host_platform_device_count=${devices}"

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
# shellcheck disable=SC2329  # called from the traps below
forward() {
  echo "run.sh: received $1, forwarding SIGTERM to ${#pids[@]} processes" >&2
  cleanup
}
trap 'forward INT' INT
trap 'forward TERM' TERM

for ((i = 0; i < num_processes; i++)); do
  cmd=(env "XLA_FLAGS=${xla_flags}" JAX_PLATFORMS=cpu PYTHONUNBUFFERED=1
       "$python" -m vicmae_jax.main "${main_args[@]}"
       "--coordinator_address=localhost:${port}" "--num_processes=${num_processes}"
       "--process_id=${i}")
  if [[ "$dry_run" == 1 ]]; then
    printf '%q ' "${cmd[@]}"; echo
    continue
  fi
  # Process substitution keeps $! the trainer's pid (a pipe would give sed's).
  "${cmd[@]}" > >(sed -u "s/^/[${i}] /") 2>&1 &
  pids+=("$!")
done
[[ "$dry_run" == 1 ]] && exit 0
echo "run.sh: ${num_processes} processes (pids ${pids[*]}), coordinator localhost:${port}," \
     "${devices} CPU devices each" >&2

# Wait for the processes in the order they finish; the first failure takes the job down, as a
# multi-host job cannot continue with a member missing (the others would hang in a collective).
status=0
remaining=${#pids[@]}
left=()
while ((remaining > 0)); do
  finished=""
  if wait -n -p finished "${pids[@]}"; then rc=0; else rc=$?; fi
  if [[ -z "${finished:-}" ]]; then
    continue  # woken by a trapped signal; keep waiting for the children to exit
  fi
  remaining=$((remaining - 1))
  left=()
  for pid in "${pids[@]}"; do [[ "$pid" == "$finished" ]] || left+=("$pid"); done
  pids=("${left[@]}")
  if ((rc != 0 && status == 0)); then
    status=$rc
    echo "run.sh: process with pid ${finished} exited with status ${rc}; stopping the others" >&2
    cleanup
  fi
done
wait  # let the log prefixers drain
exit "$status"

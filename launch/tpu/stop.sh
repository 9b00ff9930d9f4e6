#!/usr/bin/env bash
# Ask the run on every worker to stop: SIGTERM makes the trainer save a checkpoint at the current
# step (all workers agree on the step) and exit cleanly. Re-run run.sh to continue.
#
#   launch/tpu/stop.sh [common flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_flags "$@"
[[ ${#REST_ARGS[@]} -eq 0 ]] || die "unknown argument '${REST_ARGS[0]}'"

pidfile="$(remote_path "${TPU_LOG}.pid")"
tpu_ssh all "if [ -f ${pidfile} ] && kill -0 \"\$(cat ${pidfile})\" 2>/dev/null; then kill -TERM \"\$(cat ${pidfile})\"; echo \"\$(hostname): sent SIGTERM to pid \$(cat ${pidfile})\"; else echo \"\$(hostname): no run going\"; fi"

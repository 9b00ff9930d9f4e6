#!/usr/bin/env bash
# Show the training log of one worker (default 0, the one that logs metrics) or of all of them,
# each line prefixed with the worker's hostname.
#
#   launch/tpu/logs.sh [common flags] [--worker N|all] [--lines N] [--no-follow]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_flags "$@"

worker=0
lines=100
follow=1
for ((i = 0; i < ${#REST_ARGS[@]}; i++)); do
  arg="${REST_ARGS[i]}"
  case "$arg" in
    --worker) worker="${REST_ARGS[i+1]:?--worker needs N or all}"; i=$((i + 1)) ;;
    --worker=*) worker="${arg#--worker=}" ;;
    --lines) lines="${REST_ARGS[i+1]:?--lines needs a number}"; i=$((i + 1)) ;;
    --lines=*) lines="${arg#--lines=}" ;;
    --no-follow) follow=0 ;;
    *) die "unknown argument '$arg'" ;;
  esac
done
[[ "$worker" == all || "$worker" =~ ^[0-9]+$ ]] || die "--worker must be a number or 'all'"
[[ "$lines" =~ ^[0-9]+$ ]] || die "--lines must be a number"

log="$(remote_path "$TPU_LOG")"
tail_flags="-n ${lines}"
# -F keeps following across a restart that recreates the file; Ctrl-C ends only the local ssh.
if [[ "$follow" == 1 ]]; then tail_flags+=" -F"; fi
tpu_ssh "$worker" "tail ${tail_flags} ${log} | sed -u \"s/^/[\$(hostname)] /\""

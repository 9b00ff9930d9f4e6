#!/usr/bin/env bash
# Where the slice and the run stand: the slice's state from gcloud, then on each worker whether
# the training process is alive and the last line of its log.
#
#   launch/tpu/status.sh [common flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_flags "$@"
[[ ${#REST_ARGS[@]} -eq 0 ]] || die "unknown argument '${REST_ARGS[0]}'"

query_slice_state
echo "slice ${TPU_NAME} (${TPU_ACCELERATOR_TYPE}, ${TPU_ZONE}): ${SLICE_STATE}"
if [[ "$TPU_DRY_RUN" != 1 && "$SLICE_STATE" != ACTIVE && "$SLICE_STATE" != READY ]]; then
  exit 0  # no workers to ask
fi
log="$(remote_path "$TPU_LOG")"
pidfile="$(remote_path "${TPU_LOG}.pid")"
tpu_ssh all "if [ -f ${pidfile} ] && kill -0 \"\$(cat ${pidfile})\" 2>/dev/null; then s=\"running (pid \$(cat ${pidfile}))\"; else s='not running'; fi; echo \"\$(hostname): \$s | \$(tail -n 1 ${log} 2>/dev/null)\""

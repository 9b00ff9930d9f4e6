#!/usr/bin/env bash
# Delete the slice (queued resource and its TPU VMs). The workdir on gs:// is not touched.
#
#   launch/tpu/delete.sh [common flags] [-- extra gcloud delete flags, e.g. --async]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_flags "$@"
extra=()
if [[ ${#REST_ARGS[@]} -gt 0 ]]; then
  [[ "${REST_ARGS[0]}" == "--" ]] || die "unknown argument '${REST_ARGS[0]}' (gcloud flags go after --)"
  extra=("${REST_ARGS[@]:1}")
fi

if [[ "$TPU_QUEUED" == 1 ]]; then
  # --force also deletes the TPU VM the queued resource created (otherwise gcloud refuses).
  gcloud_tpus queued-resources delete "$TPU_NAME" "--zone=${TPU_ZONE}" --force --quiet "${extra[@]}"
else
  gcloud_tpus tpu-vm delete "$TPU_NAME" "--zone=${TPU_ZONE}" --quiet "${extra[@]}"
fi

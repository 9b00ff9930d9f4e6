#!/usr/bin/env bash
# Create the TPU slice: a queued resource (default; waits for capacity instead of failing, and is
# the only way to get large or spot slices) or a plain TPU VM (--no-queued).
#
#   launch/tpu/create.sh [common flags] [--wait] [-- extra gcloud create flags]
#   launch/tpu/create.sh --name my-v4 --zone us-central2-b --accelerator-type v4-32 --spot --wait
#
# Extra flags after `--` go to gcloud unchanged (e.g. --network=..., --reserved,
# --service-account=...). Common flags and their environment variables: launch/tpu/common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_flags "$@"

wait_for_it=0
extra=()
for ((i = 0; i < ${#REST_ARGS[@]}; i++)); do
  arg="${REST_ARGS[i]}"
  case "$arg" in
    --wait) wait_for_it=1 ;;
    --) extra+=("${REST_ARGS[@]:i+1}"); break ;;
    *) die "unknown argument '$arg' (gcloud flags go after --)" ;;
  esac
done

if [[ "$TPU_QUEUED" == 1 ]]; then
  # The queued resource and the TPU node share one name, so every other script needs only --name.
  cmd=(queued-resources create "$TPU_NAME" "--node-id=${TPU_NAME}" "--zone=${TPU_ZONE}"
       "--accelerator-type=${TPU_ACCELERATOR_TYPE}" "--runtime-version=${TPU_RUNTIME_VERSION}")
else
  cmd=(tpu-vm create "$TPU_NAME" "--zone=${TPU_ZONE}"
       "--accelerator-type=${TPU_ACCELERATOR_TYPE}" "--version=${TPU_RUNTIME_VERSION}")
fi
if [[ "$TPU_SPOT" == 1 ]]; then cmd+=(--spot); fi
gcloud_tpus "${cmd[@]}" "${extra[@]}"

if [[ "$wait_for_it" == 1 ]]; then wait_until_ready; fi

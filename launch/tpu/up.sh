#!/usr/bin/env bash
# One idempotent command for a whole run: make sure the slice exists and is ready (recreating it
# if spot capacity was preempted), install the code, start training. After a preemption, run the
# very same command again: the run resumes from the newest checkpoint in the gs:// workdir.
#
#   launch/tpu/up.sh [common flags] [--env KEY=VALUE]... -- MAIN_ARGS...
#   TPU_SPOT=1 launch/tpu/up.sh -- --config=configs/vitl_k400.py:frames,data_root=gs://b/data \
#       --workdir=gs://b/runs/vitl
#
# Slice states: ACTIVE/READY -> reuse; SUSPENDED/FAILED/PREEMPTED -> delete and create again;
# MISSING -> create; anything else (queued, provisioning) -> wait.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "${here}/common.sh"
parse_common_flags "$@"
# The sub-scripts read the same settings; exporting them keeps any flags given here.
export TPU_NAME TPU_ZONE TPU_PROJECT TPU_ACCELERATOR_TYPE TPU_RUNTIME_VERSION TPU_SPOT TPU_QUEUED \
  TPU_REPO_URL TPU_REPO_BRANCH TPU_REMOTE_DIR TPU_REMOTE_VENV TPU_PYTHON TPU_CONSTRAINTS TPU_LOG \
  TPU_DRY_RUN

query_slice_state
case "$SLICE_STATE" in
  ACTIVE|READY) echo "# slice ${TPU_NAME} is ${SLICE_STATE}: reusing it" ;;
  SUSPENDING|SUSPENDED|FAILED|PREEMPTED|TERMINATED|STOPPED)
    echo "# slice ${TPU_NAME} is ${SLICE_STATE} (preempted?): recreating it"
    "${here}/delete.sh"
    "${here}/create.sh" ;;
  MISSING)
    echo "# slice ${TPU_NAME} does not exist: creating it"
    "${here}/create.sh" ;;
  *) echo "# slice ${TPU_NAME} is ${SLICE_STATE}: waiting for it" ;;
esac
wait_until_ready
"${here}/setup.sh"
"${here}/run.sh" "${REST_ARGS[@]}"

#!/usr/bin/env bash
# One machine with N GPUs: a single process drives all of them (JAX sees every local GPU), so no
# jax.distributed, no coordinator and no srun are needed.
#
#   launch/gpu/single_node.sh --config=configs/vitl_k400.py:frames,data_root=/data \
#       --workdir=/data/runs/vitl_k400
#   CUDA_VISIBLE_DEVICES=0,1,2,3 launch/gpu/single_node.sh ...   # a subset of the GPUs
#
# Arguments go to `python -m vicmae_jax.main` unchanged; run from the repository root. Settings
# (memory fraction, XLA and NCCL flags) and why: launch/gpu/env.sh. Re-running the same command
# resumes from the newest checkpoint; SIGTERM (`kill PID`) saves one first and exits.
# PYTHON picks the interpreter (default: python); DRY_RUN=1 prints the command instead.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "${here}/env.sh"

cmd=("${PYTHON:-python}" -m vicmae_jax.main --distributed=off "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${cmd[@]}" | sed 's/ $//'; echo
  exit 0
fi
exec "${cmd[@]}"

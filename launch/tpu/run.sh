#!/usr/bin/env bash
# Start training on every worker of the slice at once, in the background (nohup + log file), so the
# ssh session can end. Multi-host JAX needs the same command on all workers (a missing worker makes
# the others hang at start-up), hence --worker=all.
#
#   launch/tpu/run.sh [common flags] [--env KEY=VALUE]... -- MAIN_ARGS...
#   launch/tpu/run.sh -- --config=configs/vitl_k400.py:frames,data_root=gs://my-bucket/data \
#       --workdir=gs://my-bucket/runs/vitl_k400
#
# MAIN_ARGS go to `python -m vicmae_jax.main` unchanged (quoted for the remote shell). The workdir
# must be on gs:// for a multi-host slice: every worker writes its share of each checkpoint there.
# Re-running the same command (e.g. after a spot preemption and `up.sh`) resumes from the newest
# checkpoint in WORKDIR/checkpoints: vicmae_jax.main always auto-resumes.
# A worker that still runs a job refuses to start a second one (see stop.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_flags "$@"

env_args=()
main_args=()
for ((i = 0; i < ${#REST_ARGS[@]}; i++)); do
  arg="${REST_ARGS[i]}"
  case "$arg" in
    --env) env_args+=("${REST_ARGS[i+1]:?--env needs KEY=VALUE}"); i=$((i + 1)) ;;
    --env=*) env_args+=("${arg#--env=}") ;;
    --) main_args+=("${REST_ARGS[@]:i+1}"); break ;;
    *) die "unknown argument '$arg' (arguments for vicmae_jax.main go after --)" ;;
  esac
done

workdir=""
for arg in "${main_args[@]}"; do
  case "$arg" in --workdir=*) workdir="${arg#--workdir=}" ;; esac
done
[[ -n "$workdir" ]] || die "pass --workdir=gs://BUCKET/PATH after --"
if [[ "$workdir" != gs://* ]]; then
  echo "run.sh: warning: workdir '$workdir' is not on gs://; on a multi-host slice every worker" \
       "needs to see the same checkpoint directory" >&2
fi

dir="$(remote_path "$TPU_REMOTE_DIR")"
python="$(remote_path "$TPU_REMOTE_VENV")/bin/python"
log="$(remote_path "$TPU_LOG")"
pidfile="$(remote_path "${TPU_LOG}.pid")"

# --distributed=on: plain ssh sessions on TPU VMs do not export TPU_WORKER_HOSTNAMES, so main.py's
# auto-detection cannot be relied on; jax.distributed.initialize() finds the workers itself
# (also on a single-host slice, where it is a no-op job of one process).
# The venv's python by path, so no activation has to survive the quoting.
train_line="$(quote_args env PYTHONUNBUFFERED=1 "${env_args[@]}") ${python} -m vicmae_jax.main"
train_line+=" $(quote_args --distributed=on "${main_args[@]}")"

remote="cd ${dir} || exit 1
if [ -f ${pidfile} ] && kill -0 \"\$(cat ${pidfile})\" 2>/dev/null; then
  echo \"\$(hostname): a run is still going (pid \$(cat ${pidfile})); stop it first (launch/tpu/stop.sh)\" >&2
  exit 1
fi
echo \"=== \$(date -u +%FT%TZ) \$(hostname): starting vicmae_jax.main\" >> ${log}
setsid nohup ${train_line} >> ${log} 2>&1 < /dev/null &
echo \$! > ${pidfile}
echo \"\$(hostname): started pid \$!; log in ~/$(printf '%q' "$TPU_LOG")\""
tpu_ssh all "$remote"

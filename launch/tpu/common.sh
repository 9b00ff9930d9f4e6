# shellcheck shell=bash
# Shared settings and helpers for the Cloud TPU scripts in this folder; sourced, never run.
#
# Every setting comes from an environment variable with a default below and can be overridden by a
# flag on any script (flags win). The same settings must be used for every command of one slice,
# so export them once in your shell (or keep them in a file you `source`).
#
#   flag                    variable              default
#   --name NAME             TPU_NAME              vicmae-$USER
#   --zone ZONE             TPU_ZONE              us-central2-b
#   --project PROJECT       TPU_PROJECT           (gcloud's configured project)
#   --accelerator-type T    TPU_ACCELERATOR_TYPE  v4-32
#   --runtime-version V     TPU_RUNTIME_VERSION   tpu-ubuntu2204-base (v5e: v2-alpha-tpuv5-lite,
#                                                 v6e: v2-alpha-tpuv6e)
#   --spot / --no-spot      TPU_SPOT              0 (1: spot capacity, preemptible, much cheaper)
#   --queued / --no-queued  TPU_QUEUED            1 (queued resources; 0: plain `tpu-vm create`)
#   --repo-url URL          TPU_REPO_URL          (empty: copy this checkout as a tarball)
#   --branch BRANCH         TPU_REPO_BRANCH       main (with --repo-url)
#   --remote-dir DIR        TPU_REMOTE_DIR        vicmae_jax  (code on each worker, relative to ~)
#   --remote-venv DIR       TPU_REMOTE_VENV       venv-vicmae (virtualenv on each worker)
#   --python VERSION        TPU_PYTHON            3.11 (installed by uv on each worker)
#   --constraints FILE      TPU_CONSTRAINTS       launch/constraints/tpu.txt (the lock setup.sh
#                                                 installs with, relative to the repository;
#                                                 none: unpinned, e.g. to try newer versions)
#   --log FILE              TPU_LOG               vicmae_run.log (on each worker, relative to ~)
#   --dry-run               TPU_DRY_RUN           0 (1: print every command instead of running it)
#
# Remote paths are relative to the worker's home directory on purpose: ssh starts there, so no
# `~` has to survive quoting.

TPU_NAME="${TPU_NAME:-vicmae-${USER:-user}}"
TPU_ZONE="${TPU_ZONE:-us-central2-b}"
TPU_PROJECT="${TPU_PROJECT:-}"
TPU_ACCELERATOR_TYPE="${TPU_ACCELERATOR_TYPE:-v4-32}"
TPU_RUNTIME_VERSION="${TPU_RUNTIME_VERSION:-tpu-ubuntu2204-base}"
TPU_SPOT="${TPU_SPOT:-0}"
TPU_QUEUED="${TPU_QUEUED:-1}"
TPU_REPO_URL="${TPU_REPO_URL:-}"
TPU_REPO_BRANCH="${TPU_REPO_BRANCH:-main}"
TPU_REMOTE_DIR="${TPU_REMOTE_DIR:-vicmae_jax}"
TPU_REMOTE_VENV="${TPU_REMOTE_VENV:-venv-vicmae}"
TPU_PYTHON="${TPU_PYTHON:-3.11}"
TPU_CONSTRAINTS="${TPU_CONSTRAINTS:-launch/constraints/tpu.txt}"
TPU_LOG="${TPU_LOG:-vicmae_run.log}"
TPU_DRY_RUN="${TPU_DRY_RUN:-0}"

LAUNCH_TPU_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC2034  # used by setup.sh
REPO_ROOT="$(cd "${LAUNCH_TPU_DIR}/../.." && pwd)"

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# Parses the common flags; whatever is not a common flag is left in REST_ARGS (in order) for the
# calling script. Everything after `--` goes to REST_ARGS untouched.
REST_ARGS=()
parse_common_flags() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name) TPU_NAME="${2:?--name needs a value}"; shift 2 ;;
      --zone) TPU_ZONE="${2:?--zone needs a value}"; shift 2 ;;
      --project) TPU_PROJECT="${2:?--project needs a value}"; shift 2 ;;
      --accelerator-type) TPU_ACCELERATOR_TYPE="${2:?--accelerator-type needs a value}"; shift 2 ;;
      --runtime-version) TPU_RUNTIME_VERSION="${2:?--runtime-version needs a value}"; shift 2 ;;
      --spot) TPU_SPOT=1; shift ;;
      --no-spot) TPU_SPOT=0; shift ;;
      --queued) TPU_QUEUED=1; shift ;;
      --no-queued) TPU_QUEUED=0; shift ;;
      --repo-url) TPU_REPO_URL="${2:?--repo-url needs a value}"; shift 2 ;;
      --branch) TPU_REPO_BRANCH="${2:?--branch needs a value}"; shift 2 ;;
      --remote-dir) TPU_REMOTE_DIR="${2:?--remote-dir needs a value}"; shift 2 ;;
      --remote-venv) TPU_REMOTE_VENV="${2:?--remote-venv needs a value}"; shift 2 ;;
      --python) TPU_PYTHON="${2:?--python needs a value}"; shift 2 ;;
      --constraints) TPU_CONSTRAINTS="${2:?--constraints needs a value}"; shift 2 ;;
      --log) TPU_LOG="${2:?--log needs a value}"; shift 2 ;;
      --dry-run) TPU_DRY_RUN=1; shift ;;
      --) shift; REST_ARGS+=("--" "$@"); break ;;
      *) REST_ARGS+=("$1"); shift ;;
    esac
  done
}

# Runs a command, or with --dry-run prints it (shell-quoted, so it can be pasted back).
run() {
  if [[ "$TPU_DRY_RUN" == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

# `gcloud compute tpus <group>` with the project flag when one is set.
gcloud_tpus() {
  local cmd=(gcloud compute tpus "$@")
  if [[ -n "$TPU_PROJECT" ]]; then cmd+=("--project=${TPU_PROJECT}"); fi
  run "${cmd[@]}"
}

# Runs one shell command line on the given workers ("all" or an index) of the slice.
# The caller builds the line with `quote_args`, so arguments with spaces survive the remote shell.
tpu_ssh() {
  local worker="$1" command="$2"
  gcloud_tpus tpu-vm ssh "$TPU_NAME" "--zone=${TPU_ZONE}" "--worker=${worker}" \
    "--command=${command}"
}

# Shell-quotes each argument and joins them with spaces: a line the worker's bash parses back
# into exactly these arguments (paths with spaces, quotes or `$` included).
quote_args() {
  local out="" arg
  for arg in "$@"; do out+="$(printf '%q' "$arg") "; done
  printf '%s' "${out% }"
}

# Current state of the slice in SLICE_STATE: the queued resource's state (ACCEPTED, PROVISIONING,
# WAITING_FOR_RESOURCES, ACTIVE, SUSPENDING, SUSPENDED, FAILED, ...) or the TPU VM's (CREATING,
# READY, PREEMPTED, ...); MISSING when gcloud finds nothing. With --dry-run the query is printed
# and the slice counts as MISSING.
SLICE_STATE=""
query_slice_state() {
  local cmd
  if [[ "$TPU_QUEUED" == 1 ]]; then
    cmd=(gcloud compute tpus queued-resources describe "$TPU_NAME" "--zone=${TPU_ZONE}"
         "--format=value(state.state)")
  else
    cmd=(gcloud compute tpus tpu-vm describe "$TPU_NAME" "--zone=${TPU_ZONE}"
         "--format=value(state)")
  fi
  if [[ -n "$TPU_PROJECT" ]]; then cmd+=("--project=${TPU_PROJECT}"); fi
  if [[ "$TPU_DRY_RUN" == 1 ]]; then
    run "${cmd[@]}"
    SLICE_STATE=MISSING
    return
  fi
  SLICE_STATE="$("${cmd[@]}" 2>/dev/null)" || SLICE_STATE=MISSING
  if [[ -z "$SLICE_STATE" ]]; then SLICE_STATE=MISSING; fi
}

# Polls until the slice can take ssh (ACTIVE / READY); fails on a terminal state. Spot and large
# slices can wait in the queue for hours, so the timeout is generous and adjustable.
wait_until_ready() {
  local timeout="${TPU_WAIT_TIMEOUT_S:-86400}" interval="${TPU_WAIT_INTERVAL_S:-30}" waited=0
  if [[ "$TPU_DRY_RUN" == 1 ]]; then
    echo "# (dry run) would poll the slice state every ${interval}s until ACTIVE/READY"
    return
  fi
  while true; do
    query_slice_state
    case "$SLICE_STATE" in
      ACTIVE|READY) echo "slice ${TPU_NAME}: ${SLICE_STATE}" >&2; return 0 ;;
      FAILED|SUSPENDED|PREEMPTED|TERMINATED|MISSING)
        echo "slice ${TPU_NAME}: ${SLICE_STATE}; not waiting (re-run up.sh to recreate it)" >&2
        return 1 ;;
    esac
    if ((waited >= timeout)); then
      echo "slice ${TPU_NAME}: still ${SLICE_STATE} after ${waited}s; giving up" >&2; return 1
    fi
    echo "slice ${TPU_NAME}: ${SLICE_STATE}; waiting ${interval}s" >&2
    sleep "$interval"; waited=$((waited + interval))
  done
}

# Worker-side paths: "$HOME"/<quoted relative path>, expanded by the worker's shell.
# shellcheck disable=SC2016  # $HOME is for the worker's shell to expand
remote_path() { printf '"$HOME"/%s' "$(printf '%q' "$1")"; }

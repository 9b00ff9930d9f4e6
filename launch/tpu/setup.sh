#!/usr/bin/env bash
# Put the code on every worker and install it into a per-worker virtualenv (`pip install -e .[tpu]`)
# at the versions of the TPU lock (launch/constraints/tpu.txt), so every worker runs the same stack.
#
#   launch/tpu/setup.sh [common flags]
#
# How the code gets there:
#   default           this checkout (tracked and untracked-but-not-ignored files, i.e. your local
#                     edits too) is packed into a tarball, copied with `tpu-vm scp --worker=all`
#                     and unpacked into ~/$TPU_REMOTE_DIR on each worker;
#   --repo-url URL    each worker runs `git clone --branch $TPU_REPO_BRANCH URL` (or fetches and
#                     resets an existing clone), e.g. for a pushed commit everyone should run.
# Python: uv installs Python $TPU_PYTHON (TPU images ship 3.10; the package needs >= 3.11) and
# creates ~/$TPU_REMOTE_VENV. Safe to re-run: it refreshes the code and reinstalls.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common_flags "$@"
[[ ${#REST_ARGS[@]} -eq 0 ]] || die "unknown argument '${REST_ARGS[0]}'"

dir="$(remote_path "$TPU_REMOTE_DIR")"
venv="$(remote_path "$TPU_REMOTE_VENV")"

# 1. Code.
if [[ -n "$TPU_REPO_URL" ]]; then
  url="$(printf '%q' "$TPU_REPO_URL")"
  branch="$(printf '%q' "$TPU_REPO_BRANCH")"
  tpu_ssh all "set -e; if [ -d ${dir}/.git ]; then git -C ${dir} fetch --depth 1 origin ${branch}; git -C ${dir} reset --hard FETCH_HEAD; else git clone --depth 1 --branch ${branch} ${url} ${dir}; fi"
else
  tarball_name="vicmae_jax_src.tar.gz"
  if [[ "$TPU_DRY_RUN" == 1 ]]; then
    tarball="/tmp/${tarball_name}"
    echo "# (dry run) would pack $(printf '%q' "$REPO_ROOT") into ${tarball}"
  else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    tarball="${tmp}/${tarball_name}"
    # git decides what belongs to the source (no venvs, workdirs or build outputs).
    git -C "$REPO_ROOT" ls-files -z --cached --others --exclude-standard \
      | tar -C "$REPO_ROOT" --null -T - -czf "$tarball"
  fi
  gcloud_tpus tpu-vm scp "$tarball" "${TPU_NAME}:${tarball_name}" "--zone=${TPU_ZONE}" --worker=all
  # A fresh directory each time, so files deleted locally disappear on the workers too.
  tpu_ssh all "set -e; rm -rf ${dir}; mkdir -p ${dir}; tar -xzf ${tarball_name} -C ${dir}; rm -f ${tarball_name}"
fi

# 2. Python, virtualenv and the package (the TPU extra brings libtpu), pinned by the lock: workers
# installed at different times would otherwise resolve different versions.
python_version="$(printf '%q' "$TPU_PYTHON")"
constraints=""
if [[ "$TPU_CONSTRAINTS" != none ]]; then
  [[ -f "${REPO_ROOT}/${TPU_CONSTRAINTS}" ]] || die "no lock ${TPU_CONSTRAINTS} in ${REPO_ROOT}"
  constraints=" -c $(printf '%q' "$TPU_CONSTRAINTS")"
fi
tpu_ssh all "set -e; export PATH=\"\$HOME/.local/bin:\$PATH\"; command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh; uv venv --allow-existing --python ${python_version} ${venv}; cd ${dir}; uv pip install --python ${venv}/bin/python -e '.[tpu]'${constraints}"

# 3. Check that every worker imports the package and print its versions (the TPU runtime itself
# is checked by run.sh; the trainer compares the workers' versions again at start).
tpu_ssh all "${venv}/bin/python -c 'import jax; from vicmae_jax import versions as v; print(v.version_line(v.stack_versions()))'"

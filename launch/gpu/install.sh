#!/usr/bin/env bash
# Creates the virtualenv for GPU runs and installs the package with CUDA 12 jax into it, at the
# versions of the GPU lock (launch/constraints/gpu.txt): nodes set up at different times then
# still run the same stack (the trainer warns at start when processes differ).
#
#   launch/gpu/install.sh                                # ./.venv with python3.11
#   VENV=/shared/venvs/vicmae launch/gpu/install.sh      # one venv on a filesystem every node sees
#
# Run from the repository root, once per venv. Environment (defaults in brackets):
#   VENV [.venv]   PYTHON [python3.11]   EXTRAS [gpu] (e.g. gpu,test)
#   CONSTRAINTS [launch/constraints/gpu.txt]; none: unpinned, e.g. to try newer versions
#   DRY_RUN [0]    1: print the commands instead of running them
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
venv="${VENV:-.venv}"
python="${PYTHON:-python3.11}"
extras="${EXTRAS:-gpu}"
constraints="${CONSTRAINTS:-launch/constraints/gpu.txt}"

run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

install=("${venv}/bin/python" -m pip install -e ".[${extras}]")
if [[ "$constraints" != none ]]; then
  [[ -f "$constraints" ]] || { echo "install.sh: no lock ${constraints}" >&2; exit 2; }
  install+=(-c "$constraints")
fi
run "$python" -m venv "$venv"
run "${venv}/bin/python" -m pip install --upgrade pip
run "${install[@]}"
# The version line every process of a run logs at start.
run "${venv}/bin/python" -c \
  'from vicmae_jax import versions as v; print(v.version_line(v.stack_versions()))'

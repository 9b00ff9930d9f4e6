"""launch/gpu/*: srun invocation, SLURM process layouts and the documented XLA/NCCL environment."""
from __future__ import annotations

import re

from conftest import REPO

MAIN_ARGS = ["--config=configs/demo.py:data=clips,steps=3", "--workdir=/shared/my runs/vicmae",
             "--config.note=it's $HOME"]
SLURM = dict(SLURM_JOB_ID="4242", SLURM_NNODES="2", SLURM_NTASKS="16",
             SLURM_SUBMIT_DIR=str(REPO))


def test_sbatch_runs_one_srun_with_exact_args(fakes):
  fakes.run(["launch/gpu/train.sbatch", *MAIN_ARGS], SLURM_NTASKS_PER_NODE="8", **SLURM)
  (call,) = fakes.calls("srun")
  assert call["argv"] == ["--kill-on-bad-exit=1", "--gpu-bind=none", "python", "-m",
                          "vicmae_jax.main", *MAIN_ARGS]
  env = call["env"]
  assert "--xla_gpu_enable_latency_hiding_scheduler=true" in env["XLA_FLAGS"]
  assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.90" and env["NCCL_DEBUG"] == "WARN"
  assert env["JAX_LOCAL_DEVICE_IDS"] is None   # per GPU: JAX takes the GPU SLURM_LOCALID


def test_sbatch_one_process_per_node_sees_all_gpus(fakes):
  fakes.run(["launch/gpu/train.sbatch", *MAIN_ARGS], SLURM_NTASKS_PER_NODE="1",
            SLURM_GPUS_ON_NODE="4", **SLURM)
  assert fakes.calls("srun")[0]["env"]["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3"


def test_site_settings_win(fakes):
  fakes.run(["launch/gpu/train.sbatch", *MAIN_ARGS], XLA_FLAGS="--xla_dump_to=/tmp/x",
            VICMAE_EXTRA_XLA_FLAGS="--xla_gpu_enable_triton_gemm=false",
            XLA_PYTHON_CLIENT_MEM_FRACTION="0.8", **SLURM)
  env = fakes.calls("srun")[0]["env"]
  assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_gpu_enable_triton_gemm=false"
  assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.8"


def test_sbatch_dry_run(fakes):
  out = fakes.run(["launch/gpu/train.sbatch", *MAIN_ARGS], DRY_RUN="1", **SLURM).stdout
  assert out.startswith("srun --kill-on-bad-exit=1") and "/shared/my\\ runs/vicmae" in out
  assert fakes.calls() == []


def test_sbatch_header_is_well_formed():
  """sbatch stops reading #SBATCH lines at the first command, so all must come before it."""
  lines = (REPO / "launch/gpu/train.sbatch").read_text().splitlines()
  first_cmd = next(i for i, l in enumerate(lines) if l.strip() and not l.startswith("#"))
  sbatch = [i for i, l in enumerate(lines) if l.startswith("#SBATCH")]
  assert sbatch and max(sbatch) < first_cmd
  for i in sbatch:
    assert re.fullmatch(r"#SBATCH --[a-z-]+(=\S+)?", lines[i]), lines[i]
  options = {lines[i].split("=")[0] for i in sbatch}
  assert {"#SBATCH --nodes", "#SBATCH --ntasks-per-node", "#SBATCH --gpus-per-node",
          "#SBATCH --signal"} <= options


def test_single_node_one_process_all_gpus(fakes):
  fake_python = str(REPO / "tests/launch/fakes/python")
  fakes.run(["launch/gpu/single_node.sh", *MAIN_ARGS], PYTHON=fake_python)
  (call,) = fakes.calls("python")
  assert call["argv"] == ["-m", "vicmae_jax.main", "--distributed=off", *MAIN_ARGS]
  assert "--xla_gpu_enable_latency_hiding_scheduler=true" in call["env"]["XLA_FLAGS"]
  assert fakes.calls("srun") == []

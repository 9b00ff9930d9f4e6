# shellcheck shell=bash
# XLA / NCCL / JAX settings for GPU runs, shared by train.sbatch and single_node.sh; sourced.
# Each is a default: a value already in the environment wins, so a site can override any of them.

# JAX preallocates this fraction of each GPU's memory at start-up (default 0.75). 0.90 leaves room
# for bigger per-GPU batches while keeping ~8 GB of an 80 GB H100 for cuDNN/cuBLAS workspaces and
# NCCL buffers, which live outside JAX's pool.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"

# XLA flags (checked against jaxlib 0.10.2; an unknown flag aborts start-up, so keep this list short):
#  --xla_gpu_enable_latency_hiding_scheduler: schedules the gradient all-reduce (and FSDP
#      all-gathers) to overlap with the backward pass instead of running after it; the main lever
#      for multi-node scaling.
#  --xla_gpu_all_reduce_combine_threshold_bytes=128 MiB: merges the many small per-parameter
#      all-reduces into few large ones (ViT-L grads are ~1.2 GB fp32), fewer NCCL launches.
#  --xla_gpu_enable_highest_priority_async_stream: gives the collective stream priority so the
#      overlapped communication is not starved by compute kernels.
# Append your own with VICMAE_EXTRA_XLA_FLAGS (e.g. --xla_gpu_enable_triton_gemm=false when
# profiling shows Triton GEMMs slower than cuBLAS for your shapes).
if [[ -z "${XLA_FLAGS:-}" ]]; then
  XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true"
  XLA_FLAGS+=" --xla_gpu_all_reduce_combine_threshold_bytes=134217728"
  XLA_FLAGS+=" --xla_gpu_enable_highest_priority_async_stream=true"
fi
XLA_FLAGS+="${VICMAE_EXTRA_XLA_FLAGS:+ ${VICMAE_EXTRA_XLA_FLAGS}}"
export XLA_FLAGS

# NCCL: WARN prints errors and the reason for a hang without flooding the log; set INFO to see the
# chosen transport (NVLink / InfiniBand / sockets) when a multi-node run is slower than expected.
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
# Site-specific (left unset here; set them in your environment when needed):
#   NCCL_SOCKET_IFNAME=ib0 or eth0  the interface NCCL's bootstrap uses when nodes have several
#   NCCL_IB_HCA=mlx5                which InfiniBand adapters to use
#   JAX_COORDINATOR_PORT=PORT       jax.distributed's port on the first node (default derived
#                                   from the SLURM job id, in 61440-65535)

# TensorFlow (imported by clu / tfds for the input pipeline) must stay on the CPU and stay quiet.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Log lines reach the SLURM output file as they are written.
export PYTHONUNBUFFERED=1

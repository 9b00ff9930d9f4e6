"""Full pretraining step: images/s and FLOPs utilisation, JAX vs a PyTorch reference (goals A1,
A2 in docs/decisions.md#benchmark-conventions-and-goals).

JAX side: the real `train_step.train_step` (forward, backward, AdamW, EMA target, skip-on-NaN
guard), built by `create_train_state` on a 1-device mesh, donated state, AOT compiled. PyTorch
side: `bench/torch_vicmae.py` (Hugging Face ViTMAE + heads + EMA target, 2 threads; fp32, or
`torch.autocast` for `--dtype bfloat16`), which
`tests/test_bench_reference.py` proves computes the same loss. Steps of the two alternate, so both
see the same machine load; the XLA fp32 matmul peak is measured right before and after each mode.

  python bench/train_step.py                      # ViT-S/16, 224 px, 8 pairs, both modes, CPU
  python bench/train_step.py --quick
  python bench/train_step.py --dtype bfloat16     # CPU: both sides in mixed precision (bf16 GEMMs)
  python bench/train_step.py --variant B/16 --pairs 256 --dtype bfloat16   # H100: MFU vs bf16 peak

On an accelerator the PyTorch side is skipped (torch is a CPU build here) and MFU is reported
against the chip's dense bf16 datasheet peak.
"""
from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench.common import BENCH_PEAK_SIZES  # noqa: E402
from vicmae_jax import flops, hardware, logging_utils, optim, sharding  # noqa: E402
from vicmae_jax.models import model_config  # noqa: E402
from vicmae_jax.models.config import ModelConfig  # noqa: E402
from vicmae_jax.train_state import create_train_state  # noqa: E402
from vicmae_jax.train_step import StepConfig, train_step  # noqa: E402

# Long enough that warm-up and the timed steps stay in the schedule's warm-up/cosine range.
TOTAL_STEPS = 10_000


def bf16_peak() -> tuple[float | None, str]:
  """Dense bf16 datasheet peak of the first device, or None on CPU / unknown chips."""
  device = jax.devices()[0]
  chip = hardware.chip_of(device)
  return (chip.peak_bf16_flops if chip else None), device.device_kind


class JaxStep:
  """The production train step, compiled ahead of time; `__call__` runs one donated update."""

  def __init__(self, cfg: ModelConfig, pairs: int, seed: int = 0):
    mesh = sharding.make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
    schedule = optim.learning_rate_schedule(1.5e-4, TOTAL_STEPS, 100)
    tx = optim.make_optimizer(schedule)
    graphdef, self.state, state_shardings = create_train_state(cfg, tx, seed, mesh)
    sc = StepConfig(patch=cfg.patch, contrastive_mode=cfg.contrastive_mode, total_steps=TOTAL_STEPS)
    batch_sharding = sharding.batch_sharding(mesh)
    shape = (pairs, cfg.image_size, cfg.image_size, 3)
    self.batch = {
        k: jax.device_put(jax.random.normal(jax.random.key(i), shape, cfg.dtype), batch_sharding)
        for i, k in enumerate(("view1", "view2"))}
    step = functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule, sc=sc)
    fn = jax.jit(hardware.bind(step, mesh),
                 in_shardings=(state_shardings, {k: batch_sharding for k in self.batch}),
                 out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)
    t0 = time.perf_counter()
    self.compiled = fn.lower(self.state, self.batch).compile()
    self.compile_seconds = time.perf_counter() - t0
    self.flops = logging_utils.compiled_flops(self.compiled)

  def __call__(self) -> None:
    self.state, metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready(metrics["loss"])


class TorchStep:
  """The PyTorch reference step on fixed random views."""

  def __init__(self, cfg: ModelConfig, pairs: int, seed: int = 0):
    import torch  # only the CPU comparison needs it

    from bench import torch_vicmae
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    # Our bf16 (fp32 params, bf16 activations and matmuls) is torch's autocast.
    autocast = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    self.step = torch_vicmae.TrainStep(torch_vicmae.TorchViCMAE(cfg), total_steps=TOTAL_STEPS,
                                       autocast=autocast)
    shape = (pairs, 3, cfg.image_size, cfg.image_size)
    self.views = (torch.randn(shape), torch.randn(shape))
    self.flops = torch_vicmae.train_flops_per_pair(cfg) * pairs

  def __call__(self) -> None:
    self.step(*self.views)


def timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def cv(times: list[float]) -> float:
  return statistics.pstdev(times) / statistics.mean(times) if len(times) > 1 else 0.0


def bench_mode(args, mode: str, with_torch: bool, bf16: float | None) -> None:
  cfg = model_config(args.variant, image_size=args.image_size, contrastive_mode=mode,
                     dtype=args.dtype, attention_impl=args.attention_impl)
  tag = f"{args.variant.replace('/', '')}_{mode}"
  jstep = JaxStep(cfg, args.pairs)
  tstep = TorchStep(cfg, args.pairs) if with_torch else None
  # The peak is measured right before and after the steps, so every ratio compares figures
  # taken under the same load (the box is shared and noisy); the best of the two is the peak.
  peak_dtype = jnp.dtype(args.dtype)
  peak = logging_utils.measure_matmul_peak(peak_dtype, BENCH_PEAK_SIZES)
  # On a shared box the load can change between the peak measurements and the steps, so a
  # matmul probe also runs between steps: MFU "during" compares figures taken under one load.
  probe_n = 2048
  a = jax.random.normal(jax.random.key(0), (probe_n, probe_n), peak_dtype)
  mm = logging_utils.peak_matmul
  jax.block_until_ready(mm(a, a))
  jt, tt, pt = [], [], []
  for i in range(args.warmup + args.steps):
    # Alternate which side goes first, so neither always runs right after the other's cache use.
    order = [(jstep, jt), (tstep, tt)] if i % 2 == 0 else [(tstep, tt), (jstep, jt)]
    for step, times in order:
      if step is None:
        continue
      secs = timed(step)
      if i >= args.warmup:
        times.append(secs)
    if i >= args.warmup:
      pt.append(timed(lambda: jax.block_until_ready(mm(a, a))))
  peak = max(peak, logging_utils.measure_matmul_peak(peak_dtype, BENCH_PEAK_SIZES))

  images = 2 * args.pairs
  analytic = flops.train_flops_per_pair(cfg) * args.pairs
  model_flops = jstep.flops if jstep.flops else analytic
  j_secs = statistics.median(jt)
  short = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[peak_dtype.name]
  print(f"{tag}_matmul_peak_gflops_{short}: {peak / 1e9:.1f}")
  peak_during = 2 * probe_n**3 / statistics.median(pt)
  print(f"{tag}_matmul_gflops_{short}_during_steps: {peak_during / 1e9:.1f}")
  print(f"{tag}_jax_compile_seconds: {jstep.compile_seconds:.1f}")
  print(f"{tag}_jax_step_seconds: {j_secs:.3f}")
  print(f"{tag}_jax_step_cv: {cv(jt):.3f}")
  print(f"{tag}_jax_images_per_s: {images / j_secs:.2f}")
  print(f"{tag}_analytic_gflop_per_step: {analytic / 1e9:.1f}")
  if jstep.flops:
    print(f"{tag}_xla_gflop_per_step: {jstep.flops / 1e9:.1f}")
    print(f"{tag}_xla_over_analytic: {jstep.flops / analytic:.3f}")
  print(f"{tag}_jax_model_gflops: {model_flops / j_secs / 1e9:.1f}")
  print(f"{tag}_jax_mfu_vs_matmul_peak: {model_flops / j_secs / peak:.3f}")
  print(f"{tag}_jax_mfu_vs_matmul_during_steps: {model_flops / j_secs / peak_during:.3f}")
  if bf16:
    print(f"{tag}_jax_mfu_vs_bf16_peak: {model_flops / j_secs / bf16:.3f}")
  if tstep is not None:
    t_secs = statistics.median(tt)
    print(f"{tag}_torch_step_seconds: {t_secs:.3f}")
    print(f"{tag}_torch_step_cv: {cv(tt):.3f}")
    print(f"{tag}_torch_images_per_s: {images / t_secs:.2f}")
    print(f"{tag}_torch_model_gflops: {tstep.flops / t_secs / 1e9:.1f}")
    print(f"{tag}_torch_mfu_vs_matmul_peak: {tstep.flops / t_secs / peak:.3f}")
    print(f"{tag}_torch_mfu_vs_matmul_during_steps: {tstep.flops / t_secs / peak_during:.3f}")
    print(f"{tag}_jax_over_torch: {t_secs / j_secs:.2f}")
  sys.stdout.flush()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="S/16")
  parser.add_argument("--image-size", type=int, default=224)
  parser.add_argument("--pairs", type=int, default=8)
  parser.add_argument("--steps", type=int, default=20, help="timed steps per side")
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--modes", default="ema_target,shared_projector")
  parser.add_argument("--dtype", default="float32",
                      help="activation dtype; bfloat16 on CPU compares with torch.autocast")
  parser.add_argument("--attention-impl", default=None, help='e.g. "cudnn" on GPU')
  parser.add_argument("--torch", choices=("auto", "on", "off"), default="auto",
                      help="PyTorch reference side; auto = on CPU only")
  parser.add_argument("--quick", action="store_true", help="3 timed steps after 1 warm-up")
  args = parser.parse_args()
  if args.quick:
    args.steps, args.warmup = 3, 1

  device = jax.devices()[0]
  with_torch = args.torch == "on" or (args.torch == "auto" and device.platform == "cpu")
  bf16, kind = bf16_peak()
  print(f"devices: {jax.device_count()} x {device.platform} ({kind}); jax {jax.__version__}")
  if with_torch:
    import torch
    import transformers
    print(f"torch {torch.__version__} ({torch.get_num_threads()} -> 2 threads), "
          f"transformers {transformers.__version__}")
  print(f"config: {args.variant} {args.image_size}px, {args.pairs} pairs per step, {args.dtype}, "
        f"median of {args.steps} steps after {args.warmup} warm-up")
  for mode in args.modes.split(","):
    bench_mode(args, mode, with_torch, bf16)
  # ru_maxrss is in KiB on Linux; both sides share this process, so it bounds either.
  print(f"peak_rss_gb_process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f}")


if __name__ == "__main__":
  main()

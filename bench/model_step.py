"""Forward + backward throughput of the ViC-MAE model (encoder + decoder + heads).

Prints one figure per line: images/s, model GFLOP/s, and model FLOPs utilisation against an fp32
matmul peak measured in the same run (the reference side by side), for each contrastive mode.

  python bench/model_step.py                 # ViT-S/16, 224 px, 8 pairs per step
  python bench/model_step.py --quick         # fewer timed steps
  python bench/model_step.py --variant B/16 --pairs 4
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from bench.common import BENCH_PEAK_SIZES, median_seconds  # noqa: E402
from vicmae_jax.logging_utils import compiled_flops, measure_matmul_peak  # noqa: E402
from vicmae_jax import flops, losses  # noqa: E402
from vicmae_jax.models import ViCMAE, merge_model, model_config, split_model  # noqa: E402


def grad_step_fn(cfg):
  """A jitted function: (params, target, rest, views, key) -> (loss, grads, new BatchNorm stats)."""
  model = ViCMAE(cfg, rngs=nnx.Rngs(0))
  graphdef, params, target, rest = split_model(model)

  def loss_fn(p, target, rest, v1, v2, key):
    m = merge_model(graphdef, p, target, rest)
    out = m(v1, v2, rng=key)
    total, _ = losses.vicmae_loss(out, v1, v2, patch=cfg.patch, mode=cfg.contrastive_mode)
    return total, nnx.state(m, nnx.BatchStat)

  def step(p, target, rest, v1, v2, key):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, target, rest, v1, v2, key)
    return loss, grads, stats

  return jax.jit(step), (params, target, rest)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--variant", default="S/16")
  parser.add_argument("--image_size", "--image-size", type=int, default=224)
  parser.add_argument("--pairs", type=int, default=8)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--modes", default="shared_projector,ema_target")
  parser.add_argument("--quick", action="store_true", help="3 timed steps")
  args = parser.parse_args()
  steps = 3 if args.quick else args.steps

  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}")
  for mode in args.modes.split(","):
    cfg = model_config(args.variant, image_size=args.image_size, contrastive_mode=mode,
                       dtype=args.dtype)
    step, state = grad_step_fn(cfg)
    shape = (args.pairs, args.image_size, args.image_size, 3)
    v1 = jax.random.normal(jax.random.key(1), shape)
    v2 = jax.random.normal(jax.random.key(2), shape)
    key = jax.random.key(3)
    compiled = step.lower(*state, v1, v2, key).compile()
    # The peak is measured right before and after the model, so each ratio compares two
    # figures taken under the same machine load (the box is shared and noisy).
    peak_before = measure_matmul_peak(sizes=BENCH_PEAK_SIZES)
    secs = median_seconds(lambda: compiled(*state, v1, v2, key), steps)
    peak = max(peak_before, measure_matmul_peak(sizes=BENCH_PEAK_SIZES))
    xla = compiled_flops(compiled)
    analytic = flops.train_flops_per_pair(cfg) * args.pairs
    used = xla if xla else analytic
    tag = f"{args.variant.replace('/', '')}_{mode}"
    print(f"{tag}_matmul_peak_gflops_fp32: {peak / 1e9:.1f}")
    print(f"{tag}_images_per_s: {2 * args.pairs / secs:.2f}")
    print(f"{tag}_pairs_per_s: {args.pairs / secs:.2f}")
    print(f"{tag}_step_seconds: {secs:.3f}")
    print(f"{tag}_analytic_gflop_per_step: {analytic / 1e9:.1f}")
    if xla:
      print(f"{tag}_xla_gflop_per_step: {xla / 1e9:.1f}")
      print(f"{tag}_xla_over_analytic: {xla / analytic:.3f}")
    print(f"{tag}_model_gflops: {used / secs / 1e9:.1f}")
    print(f"{tag}_mfu_vs_matmul_peak: {used / secs / peak:.3f}")


if __name__ == "__main__":
  main()

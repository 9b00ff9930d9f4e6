"""How far to trust the compiler's roofline: compile known programs for one TPU chip (no TPU needed).

For a bare bf16 matmul and a bf16 ViT block (forward + backward, the train step's unit of work),
prints XLA's cost analysis beside the two textbook bounds: FLOPs / peak (compute) and bytes /
HBM bandwidth (memory). `optimal_seconds` is the compiler's own roofline of the scheduled
program; docs/scaling.md reads these lines.

  python bench/tpu_calibration.py                      # v5p, v5e, v6e, v4
  python bench/tpu_calibration.py --chips v5p --batch 64
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from vicmae_jax import compile_check, hardware, sharding, topology  # noqa: E402
from vicmae_jax.models import layers  # noqa: E402

SLICES = {"v5p": "v5p-8", "v5e": "v5e-8", "v6e": "v6e-8", "v4": "v4-8"}


def _one_chip(family: str) -> list:
  return topology.devices(topology.parse_slice(SLICES[family]))[:1]


def _report(name: str, fn, args, device) -> None:
  compiled = fn.lower(*args).compile()
  cost = compile_check._cost(compiled)
  chip = hardware.chip_of(device)
  flops, nbytes, opt = cost.get("flops", 0.0), cost.get("bytes accessed", 0.0), cost.get(
      "optimal_seconds", float("nan"))
  t_flops, t_bytes = flops / chip.peak_bf16_flops, nbytes / chip.hbm_bytes_per_s
  print(f"{chip.name:8s} {name:34s} flops {flops:.3e} bytes {nbytes:.3e} "
        f"optimal_s {opt * 1e3:8.3f} ms  flops/peak {t_flops * 1e3:8.3f} ms  "
        f"bytes/bw {t_bytes * 1e3:8.3f} ms  optimal/max {opt / max(t_flops, t_bytes):5.2f}  "
        f"optimal/sum {opt / (t_flops + t_bytes):5.2f}")


def _spec(shape, dtype, mesh):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P()))


def matmuls(device) -> None:
  mesh = sharding.make_mesh(1, 1, devices=[device])
  mm = jax.jit(hardware.bind(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32)
                             .astype(jnp.bfloat16), mesh))
  for m, k, n in ((8192, 8192, 8192), (12672, 768, 3072), (12672, 3072, 768), (25216, 512, 2048)):
    _report(f"matmul {m}x{k}x{n} bf16", mm,
            (_spec((m, k), jnp.bfloat16, mesh), _spec((k, n), jnp.bfloat16, mesh)), device)


def vit_block(device, batch: int, tokens: int, dim: int, heads: int, label: str) -> None:
  mesh = sharding.make_mesh(1, 1, devices=[device])
  graphdef, params = nnx.split(nnx.eval_shape(lambda: layers.Block(
      dim, heads, 4 * dim, dtype=jnp.bfloat16, attention_impl=None, rngs=nnx.Rngs(0))))

  def loss(p, x):
    return jnp.sum(nnx.merge(graphdef, p)(x).astype(jnp.float32))

  step = jax.jit(hardware.bind(jax.value_and_grad(loss), mesh))
  p = jax.tree.map(lambda a: _spec(a.shape, a.dtype, mesh), params)
  _report(f"ViT block {label} fwd+bwd", step, (p, _spec((batch, tokens, dim), jnp.bfloat16, mesh)),
          device)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--chips", default="v5p,v5e,v6e,v4")
  parser.add_argument("--batch", type=int, default=128, help="images per block call (2 per pair)")
  args = parser.parse_args()
  for family in args.chips.split(","):
    device = _one_chip(family)[0]
    matmuls(device)
    vit_block(device, args.batch, 99, 768, 12, "B/16 encoder (99 tokens)")
    vit_block(device, args.batch, 197, 512, 16, "decoder 512 (197 tokens)")
    vit_block(device, args.batch, 99, 1024, 16, "L/16 encoder (99 tokens)")


if __name__ == "__main__":
  main()

"""docs/scaling.md's table: each pretraining config compiled by `compile_check` for TPU slices.

One Markdown row per (config, slice, overrides), printed as each compile finishes (minutes each on
a 2-core machine), and the full reports appended to --jsonl. No TPU needed (libtpu describes the
slices). Rows are the ones docs/scaling.md shows; pass --only to compile a subset.

  python bench/scaling_table.py --jsonl /tmp/scaling.jsonl
  python bench/scaling_table.py --only "vitl_k400.py@v5p-128"
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vicmae_jax import compile_check, topology  # noqa: E402

BF16 = {"model.dtype": "bfloat16"}
# (config file, slice, overrides beyond bf16[, tag]): the chosen setting per model and chip
# family; a tagged row is an alternative shown beside it (--only config@slice@tag).
ROWS = [
    ("vitl_k400.py", "v5p-128", {}),
    ("vitl_k400.py", "v4-128", {}),
    ("vitl_k400.py", "v4-128", {"model.remat": True, "model.remat_policy": "dots"}, "dots"),
    ("vitb_k400.py", "v5p-128", {}),
    ("vitb_k400.py", "v4-128", {}),
    ("vitb_k400.py", "v6e-64", {"model.remat": True, "model.remat_policy": "dots"}),
    ("vitb_k400.py", "v5e-256", {}),
    ("vitl_k400.py", "v6e-64", {"model.remat": True}),
    ("vitl_k400.py", "v5e-256", {"model.remat": True, "model.remat_policy": "dots"}),
    ("vits_k400.py", "v5e-256", {}),
    ("vith_k400_in1k.py", "v5p-128", {"model.remat": True, "model.remat_policy": "dots"}),
    ("vith_k400_in1k.py", "v4-128", {"model.remat": True, "mesh.fsdp": 8}),
]


def load(config_file: str, overrides: dict):
  config = importlib.import_module(f"configs.{config_file[:-3]}").get_config()
  for key, value in {**BF16, **overrides}.items():
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
  return config


def row(config_file: str, slice_name: str, overrides: dict) -> tuple[str, dict]:
  config = load(config_file, overrides)
  devices = topology.devices(topology.parse_slice(slice_name))
  try:
    r = compile_check.check(config, devices, where=slice_name)
  except compile_check.DoesNotFit as e:
    line = f"| `{config_file}` | {slice_name} | {_setting(config)} | does not fit: {str(e)[:90]} |"
    return line, {"config": config_file, "slice": slice_name, "fits": False, "error": str(e)}
  chips = r.chips
  pairs = r.examples_per_step / r.roofline_s
  line = (f"| `{config_file}` | {slice_name} | {_setting(config)} | "
          f"{r.peak_memory / 2**30:.1f} / {r.hbm / 2**30:.0f} ({100 * r.headroom:.0f}% free) | "
          f"{1e3 * r.roofline_s:.0f} ms | {pairs / chips:,.0f} | {pairs:,.0f} | "
          f"{100 * r.mfu:.0f}% | {r.flops / r.model_flops:.2f} | {r.compile_s:.0f} s |")
  return line, {"config": config_file, "slice": slice_name, "overrides": overrides, "fits": True,
                **r.to_dict()}


def _setting(config) -> str:
  m = config.model
  mesh = f"({config.mesh.data}, {config.mesh.fsdp})".replace("-1", "all")
  remat = f"remat {m.remat_policy}" if m.remat else "no remat"
  per_micro = config.batch_size // config.optim.accum_steps
  return f"mesh {mesh}, {remat}, {per_micro} x {config.optim.accum_steps}"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--jsonl", default=None)
  parser.add_argument("--only", default="",
                      help="comma-separated config@slice[@tag] rows to compile")
  args = parser.parse_args()
  only = {tuple((x.split("@") + [""])[:3]) for x in args.only.split(",") if x}
  print("| config | slice | mesh, remat, micro-batch x accum | peak GiB / HBM | roofline step "
        "| pairs/s per chip | pairs/s per slice | MFU | XLA / model FLOPs | compile |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for config_file, slice_name, overrides, *tag in ROWS:
    if only and (config_file, slice_name, (tag or [""])[0]) not in only:
      continue
    line, record = row(config_file, slice_name, overrides)
    print(line, flush=True)
    if args.jsonl:
      with open(args.jsonl, "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
  main()

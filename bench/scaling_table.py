"""docs/scaling.md's table: each pretraining config compiled by `compile_check` for TPU slices.

One Markdown row per (config, slice, overrides), printed as each compile finishes (minutes each on
a 2-core machine), and the full reports appended to --jsonl. No TPU needed (libtpu describes the
slices). Rows are the ones docs/scaling.md shows; pass --only to compile a subset.

  python bench/scaling_table.py --jsonl /tmp/scaling.jsonl
  python bench/scaling_table.py --only "vitl_k400.py@v5p-128"
"""
from __future__ import annotations

import argparse
import dataclasses
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
    ("vitl_k400.py", "v6e-64", {}),
    ("vitl_k400.py", "v5e-256", {}),
    ("vitb_k400.py", "v5p-128", {}),
    ("vitb_k400.py", "v4-128", {}),
    ("vitb_k400.py", "v6e-64", {}),
    ("vitb_k400.py", "v5e-256", {}),
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
    return line, {"config": config_file, "slice": slice_name, "overrides": overrides,
                  "fits": False, "error": str(e)}
  return _line(config_file, slice_name, config, r), {
      "config": config_file, "slice": slice_name, "overrides": overrides, "fits": True,
      **r.to_dict()}


def _line(config_file: str, slice_name: str, config, r: compile_check.Report) -> str:
  chips = r.chips
  pairs = r.examples_per_step / r.step_s
  estimate = "" if r.step_source == "compiler roofline" else "*"
  line = (f"| `{config_file}` | {slice_name} | {_setting(config)} | "
          f"{r.peak_memory / 2**30:.1f} / {r.hbm / 2**30:.0f} ({100 * r.headroom:.0f}% free) | "
          f"{1e3 * r.step_s:.0f} ms{estimate} | {pairs / chips:,.0f} | {pairs:,.0f} | "
          f"{100 * r.mfu:.0f}% | {r.flops / r.model_flops:.2f} | {r.compile_s:.0f} s |")
  return line


def from_jsonl(path: str) -> None:
  """Re-renders the rows of earlier runs' records (no compiling)."""
  fields = {f.name for f in dataclasses.fields(compile_check.Report)}
  for text in open(path):
    rec = json.loads(text)
    config = load(rec["config"], rec.get("overrides", {}))
    if not rec.get("fits", True):
      print(f"| `{rec['config']}` | {rec['slice']} | {_setting(config)} | does not fit |")
      continue
    r = compile_check.Report(**{k: v for k, v in rec.items() if k in fields})
    print(_line(rec["config"], rec["slice"], config, r))


def _setting(config) -> str:
  m = config.model
  mesh = f"({config.mesh.data}, {config.mesh.fsdp})".replace("-1", "all")
  remat = f"remat {m.remat_policy}" if m.remat else "no remat"
  per_micro = config.batch_size // config.optim.accum_steps
  return f"mesh {mesh}, {remat}, {per_micro} x {config.optim.accum_steps}"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--jsonl", default=None, help="append each report to this file")
  parser.add_argument("--from_jsonl", default=None, help="print the rows of saved reports")
  parser.add_argument("--only", default="",
                      help="comma-separated config@slice[@tag] rows to compile")
  args = parser.parse_args()
  only = {tuple((x.split("@") + [""])[:3]) for x in args.only.split(",") if x}
  print("| config | slice | mesh, remat, micro-batch x accum | peak GiB / HBM | roofline step "
        "| pairs/s per chip | pairs/s per slice | MFU | XLA / model FLOPs | compile |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  if args.from_jsonl:
    from_jsonl(args.from_jsonl)
    return
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

"""Will it fit, and how fast will it be? Compile a config's real step for a TPU slice, on any machine.

  python -m vicmae_jax.compile_check --config=configs/vitl_k400.py --topology=v5p-128
  python -m vicmae_jax.compile_check --config=configs/vitb_k400.py --topology=v5e-256 \
      --num_slices=2 --config.mesh.fsdp=4 --config.model.remat=True
  python -m vicmae_jax.compile_check --config=configs/finetune_in1k_vitl.py --topology=v4-64
  python -m vicmae_jax.compile_check --config=configs/vitb_k400.py --topology=cpu   # this machine

The step is built by the trainers' own functions (`train.build_train_step`,
`evaluation.finetune_step.build_finetune_step`, the probe's feature step) from the same config parsing,
validation, mesh and partition rules as `main`, over compile-only devices that libtpu describes
(`topology.py`); nothing is allocated. The model computes in the dtype the trainer would use on
that slice (`model.dtype="auto"`: bfloat16 on TPU, float32 for `--topology=cpu`; an explicit
dtype wins), and the report's second line says which. It prints per chip: the arguments
(parameters, optimizer, EMA target, batch), XLA's temporary and output bytes against the chip's
HBM, FLOPs, bytes accessed, the compiler's roofline time, the predicted steps/s, pairs/s and MFU,
and the collectives by kind. It exits 1 naming what to change when the step does not fit, 2 on a
config or topology error.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import re
import sys
import time
from typing import Any

import jax
import ml_collections

from vicmae_jax import hardware, topology

# HLO instructions that move data between chips; "-start" is the async form of each.
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<type>.+?)\s+(?P<op>[a-z\-]+)\(", re.MULTILINE)
_ARRAY = re.compile(r"\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|f16|bf16|f32|f64|c64|c128)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
          "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}


class DoesNotFit(RuntimeError):
  """The compiler ran out of HBM for the step; `arguments` are its per-chip inputs (bytes)."""

  def __init__(self, message: str, arguments: dict[str, float], hbm: float | None):
    super().__init__(message)
    self.arguments, self.hbm = arguments, hbm


def _is_oom(e: Exception) -> bool:
  text = str(e)
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


@dataclasses.dataclass
class Report:
  """What one compiled step costs per chip; every size in bytes, times in seconds."""

  what: str                  # "pretrain ViT-L/16 on v5p-128"
  chips: int
  hbm: float | None
  peak_flops: float | None
  hbm_bytes_per_s: float | None
  arguments: dict[str, float]
  argument_total: float
  output: float
  alias: float
  temp: float
  code: float
  flops: float | None
  bytes_accessed: float | None
  roofline_s: float | None
  model_flops: float | None  # analytic model FLOPs per chip per step (flops.py), None if n/a
  examples_per_step: int
  example_name: str
  collectives: dict[str, dict[str, float]]
  compile_s: float
  hlo: str = dataclasses.field(default="", repr=False)
  # Settings that put the model's work in a loop (scanned blocks, gradient accumulation): XLA's
  # cost analysis counts a loop body once, so its FLOPs, bytes and roofline undercount the step.
  loops: tuple[str, ...] = ()
  # "compute dtype bfloat16 (auto: 8 tpu devices); params float32" (hardware.dtype_line).
  dtype: str = ""

  @property
  def peak_memory(self) -> float:
    """Live bytes at the program's peak: arguments + outputs not aliased to them + temporaries."""
    return self.argument_total + self.output - self.alias + self.temp + self.code

  @property
  def headroom(self) -> float | None:
    return None if not self.hbm else 1.0 - self.peak_memory / self.hbm

  @property
  def step_s(self) -> float | None:
    """Predicted step time: the compiler's roofline, or where it gives none (libtpu's cost
    model returns a negative `optimal_seconds` for v4) FLOPs / peak + bytes / HBM bandwidth,
    which the compiler's figure tracks within ~10% on v5p (docs/scaling.md, calibration).
    None when the step runs its model in a loop (`loops`): the figures would undercount it."""
    if self.loops:
      return None
    if self.roofline_s and self.roofline_s > 0:
      return self.roofline_s
    if self.flops and self.bytes_accessed and self.peak_flops and self.hbm_bytes_per_s:
      return self.flops / self.peak_flops + self.bytes_accessed / self.hbm_bytes_per_s
    return None

  @property
  def step_source(self) -> str:
    return ("compiler roofline" if self.roofline_s and self.roofline_s > 0
            else "estimate: FLOPs/peak + bytes/HBM bandwidth")

  @property
  def steps_per_s(self) -> float | None:
    return 1.0 / self.step_s if self.step_s else None

  @property
  def mfu(self) -> float | None:
    if not (self.model_flops and self.step_s and self.peak_flops):
      return None
    return self.model_flops / self.step_s / self.peak_flops

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out.pop("hlo")
    out.update(peak_memory=self.peak_memory, headroom=self.headroom, step_s=self.step_s,
               step_source=self.step_source, steps_per_s=self.steps_per_s, mfu=self.mfu)
    return out


def collectives(hlo_text: str) -> dict[str, dict[str, float]]:
  """{kind: {'count', 'bytes'}} of the compiled program's collectives, bytes = the arrays each
  produces (all of a combined all-reduce's; an async all-gather or collective-permute start
  lists its operands, then its results, then scalar contexts: the results count). An
  instruction inside a loop body (gradient accumulation) is counted once."""
  out: dict[str, dict[str, float]] = {}
  for m in _INSTRUCTION.finditer(hlo_text):
    op = m["op"]
    kind = op[:-len("-start")] if op.endswith("-start") else op
    if kind not in COLLECTIVES:
      continue
    sizes = [_BYTES[t] * math.prod(int(d) for d in dims.split(","))
             for t, dims in _ARRAY.findall(m["type"]) if dims]
    if op.endswith("-start") and kind in ("all-gather", "collective-permute"):
      sizes = sizes[len(sizes) // 2:]
    entry = out.setdefault(kind, {"count": 0, "bytes": 0.0})
    entry["count"] += 1
    entry["bytes"] += sum(sizes)
  return out


def shard_bytes(tree: Any) -> float:
  """Bytes per device of a tree of sharded ShapeDtypeStructs (the largest shard)."""
  total = 0.0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) else x.shape
    total += math.prod(shape) * x.dtype.itemsize
  return total


def _cost(compiled) -> dict[str, float]:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 - some backends have no cost model
    return {}
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return dict(cost or {})


def analyse(fn, args: tuple, arguments: dict[str, Any], *, what: str, devices: list,
            model_flops_per_step: float | None, examples: int, example_name: str,
            loops: tuple[str, ...] = ()) -> Report:
  """Lowers and compiles `fn(*args)` (abstract, sharded args) and reads XLA's analyses."""
  chip = hardware.chip_of(devices[0])
  sizes = {k: shard_bytes(v) for k, v in arguments.items()}
  t0 = time.perf_counter()
  try:
    compiled = fn.lower(*args).compile()
  except Exception as e:  # noqa: BLE001 - the TPU compiler reports OOM as a runtime error
    if _is_oom(e):
      raise DoesNotFit(str(e), sizes, chip.hbm_bytes if chip else None) from e
    raise
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  cost = _cost(compiled)
  chips = len(devices)
  hlo = compiled.as_text()
  return Report(
      what=what, chips=chips, hbm=chip.hbm_bytes if chip else None,
      peak_flops=chip.peak_bf16_flops if chip else None,
      hbm_bytes_per_s=chip.hbm_bytes_per_s if chip else None,
      arguments=sizes,
      argument_total=float(mem.argument_size_in_bytes), output=float(mem.output_size_in_bytes),
      alias=float(mem.alias_size_in_bytes), temp=float(mem.temp_size_in_bytes),
      code=float(mem.generated_code_size_in_bytes), flops=cost.get("flops"),
      bytes_accessed=cost.get("bytes accessed"), roofline_s=cost.get("optimal_seconds"),
      model_flops=(model_flops_per_step / chips) if model_flops_per_step else None,
      examples_per_step=examples, example_name=example_name,
      collectives=collectives(hlo), compile_s=compile_s, hlo=hlo, loops=tuple(loops))


# --- building the steps of each mode ------------------------------------------------------------
def _pretrain(config: ml_collections.ConfigDict, devices: list):
  from vicmae_jax import config_lib, flops, sharding, train
  # Host processes of the slice(s): libtpu numbers each slice's hosts from 0.
  processes = len({(getattr(d, "slice_index", 0), d.process_index) for d in devices})
  model_cfg = config_lib.validate(config, len(devices), processes, check_data=False)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices=devices)
  sched = config_lib.schedule(config, None)
  built = train.build_train_step(config, sched, mesh)
  state = built.state
  arguments = {"params": state.params, "optimizer": state.opt_state, "ema target": state.target,
               "batch": built.batch}
  model_flops = flops.train_flops_per_pair(model_cfg) * config.batch_size
  return (built.fn, (state, built.batch), arguments, model_flops, config.batch_size, "pairs",
          f"pretrain {model_cfg.variant} ({model_cfg.contrastive_mode}, {model_cfg.dtype}, "
          f"remat={model_cfg.remat}) mesh {dict(mesh.shape)}")


# Classes of the datasets the evaluation configs name, for configs that read it from the data.
_KNOWN_CLASSES = {"imagenet2012": 1000, "places365_small": 365, "kinetics400": 400,
                  "kinetics": 400, "ssv2": 174, "something-something-v2": 174}


def _num_classes(config: ml_collections.ConfigDict) -> int:
  if config.num_classes:
    return config.num_classes
  data = config.get("data", {})
  for key in (data.get("name", ""), data.get("kind", ""), data.get("dataset", "")):
    if str(key).lower() in _KNOWN_CLASSES:
      return _KNOWN_CLASSES[str(key).lower()]
  return 1000


def _finetune(config: ml_collections.ConfigDict, devices: list):
  from vicmae_jax import sharding
  from vicmae_jax.evaluation import finetune, finetune_step
  from vicmae_jax.evaluation.config import eval_config
  # Compiling reads no weights: validate as if the encoder started from scratch.
  typed = eval_config(config)
  finetune.validate(dataclasses.replace(typed, init=dataclasses.replace(typed.init, source="none")),
                    len(devices))
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices=devices)
  classes = _num_classes(config)
  built = finetune_step.build_finetune_step(config, mesh, num_classes=classes)
  kind = "video " if finetune.is_video(config) else ""
  return (built.fn, (built.state, built.batch),
          {"params": built.state.params, "optimizer": built.state.opt_state,
           "batch": built.batch},
          built.model_flops, config.batch_size, "examples",
          f"{kind}finetune {built.model_cfg.variant} ({built.model_cfg.dtype}, {classes} classes)"
          f" mesh {dict(mesh.shape)}")


def _features(config: ml_collections.ConfigDict, devices: list):
  from vicmae_jax import sharding
  from vicmae_jax.evaluation import features
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices=devices)
  batch = config.linprobe.batch_size if config.mode == "linprobe" else config.get("batch_size", 256)
  built = features.build_feature_step(config, mesh, batch)
  return (built.fn, (built.state, built.batch),
          {"encoder": built.state, "batch": built.batch}, built.model_flops, batch, "examples",
          f"{config.mode} features {built.model_cfg.variant} mesh {dict(mesh.shape)}")


_BUILDERS = {"pretrain": _pretrain, "finetune": _finetune, "linprobe": _features,
             "knn": _features, "extract_features": _features}


def with_compute_dtype(config: ml_collections.ConfigDict, devices: list
                       ) -> ml_collections.ConfigDict:
  """A copy of `config` whose `model.dtype` is concrete for the platform of `devices`: "auto"
  is bfloat16 for a TPU slice, float32 for this machine's CPUs (`hardware.resolve_dtype`), as
  the trainer resolves it for its mesh; an explicit dtype is kept."""
  if "model" not in config or "dtype" not in config.model:
    return config
  out = copy.deepcopy(config)
  out.model.dtype = hardware.resolve_dtype(config.model.dtype, hardware.platform_of(devices))
  return out


def check(config: ml_collections.ConfigDict, devices: list, *, where: str) -> Report:
  """Compiles the config's step for `devices` and returns its report (no fit decision)."""
  if config.mode not in _BUILDERS:
    raise ValueError(f"compile_check has no step for config.mode {config.mode!r}.")
  dtype = (hardware.dtype_line(config.model.dtype, devices)
           if "model" in config and "dtype" in config.model else "")
  config = with_compute_dtype(config, devices)
  fn, args, arguments, model_flops, examples, name, what = _BUILDERS[config.mode](config, devices)
  report = analyse(fn, args, arguments, what=f"{what} on {where}", devices=devices,
                   model_flops_per_step=model_flops, examples=examples, example_name=name,
                   loops=_loops(config))
  report.dtype = dtype
  return report


def _loops(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The settings of `config` that run the model's work in a compiled loop."""
  out = []
  if config.get("model", {}).get("scan_blocks", False):
    out.append("model.scan_blocks=True")
  if config.get("optim", {}).get("accum_steps", 1) > 1:
    out.append(f"optim.accum_steps={config.optim.accum_steps}")
  return tuple(out)


def advice(config: ml_collections.ConfigDict, arguments: dict[str, float],
           hbm: float | None) -> list[str]:
  """What to change when the step does not fit, from where the bytes go."""
  tips = []
  state = sum(v for k, v in arguments.items() if k != "batch")
  if hbm and state > 0.25 * hbm and config.get("mesh", {}).get("fsdp", 1) == 1:
    tips.append(f"the replicated state takes {state / 2**30:.1f} GiB per chip: shard it with "
                f"--config.mesh.fsdp=N (N chips per FSDP group)")
  model = config.get("model", {})
  if not model.get("remat", False):
    tips.append("rematerialise the blocks: --config.model.remat=True (~+30% step time, "
                "temporaries cut to about one block input per layer)")
  if model.get("dtype", "auto") == "float32":
    tips.append("compute in bfloat16: --config.model.dtype=bfloat16 (params stay float32)")
  optim = config.get("optim", {})
  if "accum_steps" in optim:
    tips.append(f"halve the micro-batch: --config.optim.accum_steps={2 * optim.accum_steps} "
                f"(negatives and BatchNorm then cover the micro-batch)")
  tips.append("or a smaller --config.batch_size, or a slice with more chips")
  return tips


def _gib(x: float | None) -> str:
  if x is None:
    return "n/a"
  return f"{x / 2**30:.2f} GiB" if x >= 2**30 else f"{x / 2**20:.1f} MiB"


def format_report(r: Report) -> str:
  lines = [r.what] + ([f"  {r.dtype}"] if r.dtype else []) + [
      f"  compiled in {r.compile_s:.1f} s for {r.chips} chips; per chip:"]
  for k, v in r.arguments.items():
    lines.append(f"    {k:<22} {_gib(v)}")
  lines += [
      f"    {'arguments (XLA)':<22} {_gib(r.argument_total)}  (outputs {_gib(r.output)}, "
      f"{_gib(r.alias)} of them donated in place)",
      f"    {'temporaries':<22} {_gib(r.temp)}",
      f"    {'peak':<22} {_gib(r.peak_memory)} of {_gib(r.hbm)} HBM"
      + (f"  (headroom {100 * r.headroom:.0f}%)" if r.headroom is not None else ""),
      f"    {'FLOPs (XLA)':<22} {r.flops:.4g}" if r.flops else f"    {'FLOPs (XLA)':<22} n/a",
  ]
  if r.loops:
    lines.append(f"    {'step time':<22} n/a: with {', '.join(r.loops)} the model runs in a loop "
                 "whose body XLA's cost analysis counts once (FLOPs and bytes above undercount "
                 "the step); compile without it for the roofline and MFU")
  elif r.model_flops and r.flops:
    lines.append(f"    {'model FLOPs':<22} {r.model_flops:.4g}  (XLA / model {r.flops / r.model_flops:.2f}:"
                 f" rematerialisation and non-matmul work)")
  if r.bytes_accessed:
    lines.append(f"    {'bytes accessed':<22} {_gib(r.bytes_accessed)}")
  if r.step_s:
    pairs = r.examples_per_step / r.step_s
    lines.append(f"    {'step time':<22} {1e3 * r.step_s:.1f} ms ({r.step_source}) -> "
                 f"{r.steps_per_s:.2f} steps/s, {pairs:,.0f} {r.example_name}/s "
                 f"({pairs / r.chips:,.1f} per chip)")
  if r.mfu is not None:
    lines.append(f"    {'predicted MFU':<22} {100 * r.mfu:.1f}% of {r.peak_flops / 1e12:.0f} "
                 f"TFLOP/s bf16")
  if r.collectives:
    lines.append("    collectives:")
    for kind, c in sorted(r.collectives.items()):
      lines.append(f"      {kind:<20} {int(c['count']):>4} x, {_gib(c['bytes'])}")
  else:
    lines.append("    collectives: none")
  return "\n".join(lines)


def _resolve_devices(name: str, num_slices: int) -> tuple[list, str]:
  if name == "cpu":
    return jax.devices("cpu"), f"{jax.device_count('cpu')} CPU devices (this machine)"
  s = topology.parse_slice(name, num_slices)
  return topology.devices(s), s.name


def main(argv) -> int:
  """The command: compile, print the report, exit 0 / 1 (does not fit) / 2 (bad input)."""
  from absl import flags
  flags_ = flags.FLAGS
  del argv
  config = flags_.config
  try:
    devices, where = _resolve_devices(flags_.topology, flags_.num_slices)
  except (topology.TopologyError, ValueError) as e:
    print(f"compile_check: {e}", file=sys.stderr)
    return 2
  from vicmae_jax import config_lib
  try:
    report = check(config, devices, where=where)
  except config_lib.ConfigError as e:
    print(f"compile_check: {e}", file=sys.stderr)
    return 2
  except DoesNotFit as e:
    message = str(e).strip().splitlines()
    print(f"compile_check: DOES NOT FIT on {where}: the compiler ran out of HBM:\n  "
          + "\n  ".join(message[:12]) + "\nTry:\n  - "
          + "\n  - ".join(advice(with_compute_dtype(config, devices), e.arguments, e.hbm)),
          file=sys.stderr)
    return 1
  print(format_report(report))
  if flags_.json:
    with open(flags_.json, "w") as f:
      json.dump(report.to_dict(), f, indent=2)
  if flags_.dump_hlo:
    with open(flags_.dump_hlo, "w") as f:
      f.write(report.hlo)
  need = flags_.min_headroom
  if report.headroom is not None and report.headroom < need:
    print(f"compile_check: DOES NOT FIT on {where}: the step needs {_gib(report.peak_memory)} per "
          f"chip, {100 * (1 - report.headroom):.0f}% of {_gib(report.hbm)} HBM (allowed: "
          f"{100 * (1 - need):.0f}%). Try:\n  - "
          + "\n  - ".join(advice(with_compute_dtype(config, devices), report.arguments,
                                  report.hbm)),
          file=sys.stderr)
    return 1
  return 0


def _define_flags() -> None:
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                  lock_config=True)
  flags.DEFINE_string("topology", None, "TPU slice (v4-64, v5p-128, v5e-256, v6e-64, v5p:4x4x8) "
                      "or 'cpu' for this machine's devices.")
  flags.DEFINE_integer("num_slices", 1, "Multislice: number of identical slices (data parallel "
                       "over the data-centre network).")
  flags.DEFINE_float("min_headroom", 0.0, "Fail unless this fraction of HBM stays free.")
  flags.DEFINE_string("json", None, "Also write the report as JSON to this file.")
  flags.DEFINE_string("dump_hlo", None, "Write the compiled program (optimised HLO) to this file.")
  flags.mark_flags_as_required(["config", "topology"])


if __name__ == "__main__":
  from absl import app
  import os
  if not os.environ.get("JAX_PLATFORMS"):
    # Compiling needs no local accelerator; never claim one (a TPU VM's chips may be training).
    jax.config.update("jax_platforms", "cpu")
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
  _define_flags()
  from vicmae_jax import paths
  paths.import_configs_beside(sys.argv)  # configs given by path, from any folder (as main)
  app.run(lambda argv: sys.exit(main(argv)))

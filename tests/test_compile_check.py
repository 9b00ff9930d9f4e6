"""compile_check: the real steps compiled for a TPU slice from this CPU machine (libtpu, no TPU)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("libtpu")

from configs import linprobe_in1k_vitb, finetune_in1k_vitb, vitl_k400  # noqa: E402
from vicmae_jax import compile_check, config_lib, sharding, topology, train  # noqa: E402
from vicmae_jax.evaluation import finetune_step  # noqa: E402
from vicmae_jax.models import layernorm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "vicmae_jax.compile_check", *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def v5e_8():
  return topology.devices(topology.parse_slice("v5e-8"))


def test_tiny_pretraining_step_compiles_for_v5e_8_and_reports(tmp_path):
  out = tmp_path / "report.json"
  r = _cli("--config=configs/vitl_k400.py:tiny", "--topology=v5e-8", f"--json={out}")
  assert r.returncode == 0, r.stderr[-3000:]
  for line in ("on v5e-8", "compute dtype bfloat16 (auto: 8 tpu devices); params float32",
               "params", "optimizer", "ema target", "temporaries", "of 16.00 GiB HBM",
               "FLOPs (XLA)", "step time", "predicted MFU", "collectives"):
    assert line in r.stdout, line
  report = json.loads(out.read_text())
  assert report["chips"] == 8 and report["hbm"] == 16 * 2**30
  assert report["flops"] > 0 and report["model_flops"] > 0 and report["step_s"] > 0
  if report["roofline_s"] > 0:  # libtpu's own roofline is used whenever it gives one
    assert report["step_s"] == report["roofline_s"]
    assert report["step_source"] == "compiler roofline"
  # The compiler's FLOPs are the model's plus what the model formula leaves out, not 10x more.
  assert 0.9 < report["flops"] / report["model_flops"] < 2.0
  assert 0 < report["peak_memory"] < report["hbm"] and report["mfu"] > 0
  assert report["compile_s"] < 60
  # Data parallel: gradients all-reduced, the 128-d embeddings all-gathered for the global
  # negatives, and no activation moved between chips (no all-to-all, no collective-permute).
  assert set(report["collectives"]) == {"all-reduce", "all-gather"}


def test_a_step_that_cannot_fit_fails_naming_what_to_change():
  # A 32k-wide projector: its replicated fp32 weights, AdamW moments and EMA copy exceed 16 GiB.
  r = _cli("--config=configs/vitl_k400.py:tiny", "--topology=v5e-8",
           "--config.model.projector_hidden=32768")
  assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-2000:])
  assert "DOES NOT FIT on v5e-8" in r.stderr
  assert "--config.mesh.fsdp" in r.stderr and "--config.optim.accum_steps" in r.stderr


def test_bad_topology_is_a_clear_error():
  r = _cli("--config=configs/vitl_k400.py:tiny", "--topology=v5p-7", timeout=120)
  assert r.returncode == 2 and "TensorCores" in r.stderr


def _built(config, devices):
  config_lib.validate(config, len(devices), check_data=False)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices=devices)
  return train.build_train_step(config, config_lib.schedule(config, None), mesh)


def _lowered(config, devices):
  built = _built(config, devices)
  return built.fn.lower(built.state, built.batch)


def test_backend_decision_follows_the_mesh(v5e_8):
  """One process, one step function: the CPU mesh's program carries the CPU layout VJPs (their
  optimisation barriers), the TPU slice's program is plain autodiff for Dense and attention,
  whatever this process's default backend is. Both carry LayerNorm's closed-form backward pass
  (measured ahead of autodiff on TPU: docs/scaling.md, section 5), named in the program."""
  config = vitl_k400.get_config("tiny")
  config.model.dtype = "bfloat16"   # explicit: bf16 on the CPU mesh too
  cpu = _lowered(config, jax.devices()[:8])
  tpu = _lowered(config, v5e_8)
  cpu_text, tpu_text = cpu.as_text(), tpu.as_text()
  assert cpu_text.count("optimization_barrier") > 10
  assert tpu_text.count("optimization_barrier") == 0
  assert "xbf16>" in cpu_text and "xbf16>" in tpu_text
  assert layernorm.BWD_SCOPE in cpu.as_text(debug_info=True)
  assert layernorm.BWD_SCOPE in tpu.as_text(debug_info=True)


def test_auto_dtype_is_float32_on_a_cpu_mesh_and_bfloat16_on_a_tpu_slice(v5e_8):
  """The config as written says "auto": the step built for this machine's CPUs computes in
  float32 (no bf16 array anywhere), the one built for a TPU slice in bf16; params stay fp32."""
  config = vitl_k400.get_config("tiny")
  assert config.model.dtype == "auto"
  cpu = _lowered(config, jax.devices()[:8]).as_text()
  built = _built(config, v5e_8)
  tpu = built.fn.lower(built.state, built.batch).as_text()
  assert "bf16" not in cpu
  assert tpu.count("xbf16>") > 50
  for tree in (built.state.params, built.state.target, built.state.opt_state):
    assert {a.dtype for a in jax.tree.leaves(tree) if a.ndim} == {np.dtype("float32")}


def test_explicit_dtype_wins_and_every_step_builder_resolves_auto(v5e_8):
  config = vitl_k400.get_config("tiny")
  tpu_mesh = sharding.make_mesh(devices=v5e_8)
  cpu_mesh = sharding.make_mesh(devices=jax.devices()[:8])
  typed = config_lib.as_pretrain_config(config)
  assert config_lib.for_mesh(typed, tpu_mesh).model.dtype == "bfloat16"
  assert config_lib.for_mesh(typed, cpu_mesh).model.dtype == "float32"
  config.model.dtype = "float32"
  assert config_lib.for_mesh(config_lib.as_pretrain_config(config), tpu_mesh).model.dtype == (
      "float32")
  assert compile_check.with_compute_dtype(config, v5e_8).model.dtype == "float32"
  config.model.dtype = "auto"
  resolved = compile_check.with_compute_dtype(config, v5e_8)
  assert resolved.model.dtype == "bfloat16" and config.model.dtype == "auto"  # a copy
  # Fine-tuning: the step's model config is resolved for its mesh too.
  ft = finetune_in1k_vitb.get_config("tiny")
  assert ft.model.dtype == "auto"
  assert finetune_step.build_finetune_step(ft, tpu_mesh, num_classes=10).model_cfg.dtype == (
      "bfloat16")
  assert finetune_step.build_finetune_step(ft, cpu_mesh, num_classes=10).model_cfg.dtype == (
      "float32")


@pytest.mark.parametrize("get_config", [finetune_in1k_vitb.get_config,
                                        linprobe_in1k_vitb.get_config])
def test_evaluation_steps_compile_for_a_slice(get_config, v5e_8):
  config = get_config("tiny")
  report = compile_check.check(config, v5e_8, where="v5e-8")
  assert report.flops > 0 and report.model_flops > 0 and report.peak_memory > 0
  assert report.dtype == "compute dtype bfloat16 (auto: 8 tpu devices); params float32"
  assert report.examples_per_step == (config.batch_size if config.mode == "finetune"
                                      else config.linprobe.batch_size)
  text = compile_check.format_report(report)
  assert "v5e-8" in text and "step time" in text and "predicted MFU" in text


def test_collectives_are_read_from_hlo():
  hlo = """
  %all-reduce.1 = f32[1024,256]{1,0} all-reduce(f32[1024,256]{1,0} %p), replica_groups={}
  %all-reduce.2 = (bf16[512]{0}, f32[]{:T(128)}) all-reduce(%a, %b), replica_groups={}
  %cp = (f32[4,8]{1,0}, f32[4,8]{1,0}, u32[]{:S(2)}, u32[]{:S(2)}) collective-permute-start(%c)
  %ags = (bf16[8,128]{1,0}, bf16[64,128]{1,0}) all-gather-start(bf16[8,128]{1,0} %x)
  %agd = bf16[64,128]{1,0} all-gather-done((bf16[8,128]{1,0}, bf16[64,128]{1,0}) %ags)
  ROOT %t = (f32[4]{0}) tuple(f32[4]{0} %y)
  """
  c = compile_check.collectives(hlo)
  assert c == {"all-reduce": {"count": 2, "bytes": 1024 * 256 * 4 + 512 * 2},
               "all-gather": {"count": 1, "bytes": 64 * 128 * 2},
               "collective-permute": {"count": 1, "bytes": 4 * 8 * 4}}


def test_a_missing_roofline_falls_back_to_flops_and_bytes():
  """libtpu's cost model gives v4 programs a negative optimal_seconds: the report then predicts
  FLOPs / peak + bytes / bandwidth and says so."""
  r = compile_check.Report(
      what="x", chips=4, hbm=32 * 2**30, peak_flops=275e12, hbm_bytes_per_s=1.2e12,
      arguments={}, argument_total=0, output=0, alias=0, temp=0, code=0, flops=2.75e12,
      bytes_accessed=1.2e11, roofline_s=-576.6, model_flops=2.2e12, examples_per_step=64,
      example_name="pairs", collectives={}, compile_s=1.0)
  assert r.step_s == pytest.approx(0.01 + 0.1)
  assert r.step_source.startswith("estimate") and r.mfu == pytest.approx(2.2e12 / 0.11 / 275e12)


def test_multislice_mesh_puts_slices_on_the_data_axis():
  """Two v5e-8 slices: the data axis crosses the data-centre network, FSDP groups never do, and
  the step compiles for the 16 chips."""
  devices = topology.devices(topology.parse_slice("v5e-8", num_slices=2))
  mesh = sharding.make_mesh(-1, 2, devices=devices)
  assert dict(mesh.shape) == {"data": 8, "fsdp": 2}
  slice_of = np.vectorize(lambda d: d.slice_index)(mesh.devices)
  assert (slice_of[:4] == 0).all() and (slice_of[4:] == 1).all()
  assert all(len(set(row)) == 1 for row in slice_of)  # an FSDP group stays on one slice
  with pytest.raises(ValueError, match="slices"):
    sharding.make_mesh(3, -1, devices=devices[:6] + devices[8:11])
  config = vitl_k400.get_config("tiny")
  report = compile_check.check(config, devices, where="2x v5e-8")
  assert report.chips == 16 and report.flops > 0


def test_a_scanned_step_reports_memory_but_no_roofline(tmp_path):
  """XLA's cost analysis counts a loop body once: with scanned blocks (or accumulation) the
  report keeps memory and compile time but predicts no step time or MFU, and says why."""
  out = tmp_path / "report.json"
  r = _cli("--config=configs/vitl_k400.py:tiny", "--topology=v5e-8", f"--json={out}",
           "--config.model.scan_blocks=True")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "model.scan_blocks=True the model runs in a loop" in r.stdout
  assert "predicted MFU" not in r.stdout
  report = json.loads(out.read_text())
  assert report["loops"] == ["model.scan_blocks=True"]
  assert report["step_s"] is None and report["mfu"] is None and report["peak_memory"] > 0

"""Full pretraining step: images/s and FLOPs utilisation, JAX vs a PyTorch reference (goals A1,
A2 in docs/decisions.md#benchmark-conventions-and-goals).

JAX side: the real `train_step.train_step` (forward, backward, AdamW, EMA target, skip-on-NaN
guard), built by `create_train_state` on a 1-device mesh, donated state, AOT compiled. PyTorch
side: `bench/torch_vicmae.py` (Hugging Face ViTMAE + heads + EMA target, 2 threads; fp32, or
`torch.autocast` for `--dtype bfloat16`), which `tests/test_bench_reference.py` proves computes
the same loss.

Each side runs in its own worker process (own thread pools and allocator: in one process the JAX
step slowed down beside PyTorch's, step CV ~0.3). The two workers take turns in rounds, JAX
round, PyTorch round, JAX round, ...; the idle one waits on a pipe, so each round has the
machine to itself and both sides see the same drift in its load. Each round runs
`--round_warmup` untimed and `--steps` timed steps; the ratio is taken per pair of adjacent
rounds and reported as its median, minimum and maximum. The XLA fp32 matmul peak is measured in
the JAX worker before and after the rounds, and a probe matmul after every timed JAX step.

  python bench/train_step.py                      # ViT-S/16, 224 px, 8 pairs, both modes, CPU
  python bench/train_step.py --quick
  python bench/train_step.py --dtype bfloat16     # CPU: both sides in mixed precision (bf16 GEMMs)
  python bench/train_step.py --variant B/16 --pairs 256 --dtype bfloat16   # H100: MFU vs bf16 peak

On an accelerator the PyTorch side is skipped (torch is a CPU build here) and MFU is reported
against the chip's dense bf16 datasheet peak. The parent process never starts a JAX backend (a
TPU or GPU belongs to the JAX worker).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Long enough that warm-up and the timed steps stay in the schedule's warm-up/cosine range.
TOTAL_STEPS = 10_000
PROBE_N = 2048  # the matmul probe run after every timed JAX step
SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_PROTO = "@@ "  # prefix of the workers' protocol lines


# ---- the two steps (each built only inside its own worker) --------------------------------------

def _model_config(args, mode: str):
  from vicmae_jax.models import model_config
  return model_config(args.variant, image_size=args.image_size, contrastive_mode=mode,
                      dtype=args.dtype, attention_impl=args.attention_impl)


class JaxStep:
  """The production train step, compiled ahead of time; `__call__` runs one donated update."""

  def __init__(self, cfg, pairs: int, seed: int = 0):
    import jax

    from vicmae_jax import hardware, logging_utils, optim, sharding
    from vicmae_jax.train_state import create_train_state
    from vicmae_jax.train_step import StepConfig, train_step
    self._jax = jax
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
    self._jax.block_until_ready(metrics["loss"])


class TorchStep:
  """The PyTorch reference step on fixed random views."""

  def __init__(self, cfg, pairs: int, seed: int = 0):
    import torch

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


# ---- worker side ------------------------------------------------------------------------------

def _rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def worker(args) -> None:
  """Builds one side's step, then serves commands read from stdin, one per line:
  `steps <timed> <warmup>`, `peak` (JAX only), `quit`. Replies are JSON lines on the original
  stdout; anything else the libraries print goes to stderr."""
  proto = os.fdopen(os.dup(1), "w")
  os.dup2(2, 1)

  def reply(**kw):
    proto.write(_PROTO + json.dumps(kw) + "\n")
    proto.flush()

  cfg = _model_config(args, args.mode)
  # JAX only: the matmul probe after each timed step, the matmul peak.
  probe = peak = None
  if args.worker == "jax":
    import jax
    import jax.numpy as jnp

    from bench.common import BENCH_PEAK_SIZES
    from vicmae_jax import flops, hardware, logging_utils
    device = jax.devices()[0]
    chip = hardware.chip_of(device)
    step = JaxStep(cfg, args.pairs)
    peak_dtype = jnp.dtype(args.dtype)
    a = jax.random.normal(jax.random.key(0), (PROBE_N, PROBE_N), peak_dtype)
    mm = logging_utils.peak_matmul
    jax.block_until_ready(mm(a, a))

    probe = functools.partial(timed, lambda: jax.block_until_ready(mm(a, a)))
    peak = functools.partial(logging_utils.measure_matmul_peak, peak_dtype, BENCH_PEAK_SIZES)

    info = dict(platform=device.platform, kind=device.device_kind, devices=jax.device_count(),
                version=jax.__version__, bf16_peak=chip.peak_bf16_flops if chip else None,
                compile_seconds=step.compile_seconds, flops=step.flops,
                analytic=flops.train_flops_per_pair(cfg) * args.pairs)
  else:
    import torch
    import transformers
    threads = torch.get_num_threads()
    step = TorchStep(cfg, args.pairs)
    info = dict(version=torch.__version__, transformers=transformers.__version__,
                threads=threads, flops=step.flops)
  for _ in range(args.warmup):
    step()
  reply(ready=True, **info)
  for line in sys.stdin:
    cmd = line.split()
    if not cmd:
      continue
    if cmd[0] == "steps":
      timed_steps, warmup = int(cmd[1]), int(cmd[2])
      for _ in range(warmup):
        step()
      times, probes = [], []
      for _ in range(timed_steps):
        times.append(timed(step))
        if probe is not None:
          probes.append(probe())
      reply(times=times, probes=probes)
    elif cmd[0] == "peak":
      reply(peak=peak())
    elif cmd[0] == "quit":
      reply(rss_gb=_rss_gb())
      return


# ---- parent side ------------------------------------------------------------------------------

class Worker:
  """One side's worker process and its command pipe."""

  def __init__(self, side: str, mode: str, argv: list[str]):
    self.side = side
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", side, "--mode", mode]
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 cwd=ROOT)
    self.info = self._read()

  def _read(self) -> dict:
    while True:
      line = self.proc.stdout.readline()
      if not line:
        raise RuntimeError(f"{self.side} worker exited (code {self.proc.wait()}); see its stderr")
      if line.startswith(_PROTO):
        return json.loads(line[len(_PROTO):])

  def ask(self, command: str) -> dict:
    self.proc.stdin.write(command + "\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self) -> float:
    rss = self.ask("quit")["rss_gb"]
    self.proc.wait()
    return rss


def _worker_argv(args) -> list[str]:
  argv = ["--variant", args.variant, "--image_size", str(args.image_size), "--pairs",
          str(args.pairs), "--dtype", args.dtype, "--warmup", str(args.warmup)]
  return argv + (["--attention_impl", args.attention_impl] if args.attention_impl else [])


def round_ratios(jax_rounds: list[list[float]], torch_rounds: list[list[float]]) -> list[float]:
  """JAX / PyTorch speed of each pair of adjacent rounds: the PyTorch round's median step time
  over the JAX round's."""
  return [statistics.median(t) / statistics.median(j) for j, t in zip(jax_rounds, torch_rounds)]


def bench_mode(args, mode: str, state: dict) -> None:
  """Both workers for one contrastive mode, `args.rounds` alternating rounds, then the figures."""
  argv = _worker_argv(args)
  jw = Worker("jax", mode, argv)
  info = jw.info
  if not state.get("header"):
    state["header"] = True
    print(f"devices: {info['devices']} x {info['platform']} ({info['kind']}); jax {info['version']}")
  with_torch = args.torch == "on" or (args.torch == "auto" and info["platform"] == "cpu")
  tw = Worker("torch", mode, argv) if with_torch else None
  if tw is not None and not state.get("torch_header"):
    state["torch_header"] = True
    t = tw.info
    print(f"torch {t['version']} ({t['threads']} -> 2 threads), transformers {t['transformers']}; "
          "each side in its own process")
  # The peak is measured right before and after the rounds, so every ratio compares figures
  # taken under similar load (the box is shared and noisy); the best of the two is the peak.
  peak = jw.ask("peak")["peak"]
  jax_rounds, torch_rounds, probes = [], [], []
  for _ in range(args.rounds):
    r = jw.ask(f"steps {args.steps} {args.round_warmup}")
    jax_rounds.append(r["times"])
    probes += r["probes"]
    if tw is not None:
      torch_rounds.append(tw.ask(f"steps {args.steps} {args.round_warmup}")["times"])
  peak = max(peak, jw.ask("peak")["peak"])
  rss = {"jax": jw.close()}
  if tw is not None:
    rss["torch"] = tw.close()
  state["rss"] = max([state.get("rss", 0.0), *rss.values()])

  tag = f"{args.variant.replace('/', '')}_{mode}"
  short = SHORT[args.dtype]
  jt = [s for r in jax_rounds for s in r]
  images = 2 * args.pairs
  analytic = info["analytic"]
  model_flops = info["flops"] or analytic
  j_secs = statistics.median(jt)
  peak_during = 2 * PROBE_N**3 / statistics.median(probes)
  print(f"{tag}_rounds: {args.rounds} x {args.steps} timed steps per side")
  print(f"{tag}_matmul_peak_gflops_{short}: {peak / 1e9:.1f}")
  print(f"{tag}_matmul_gflops_{short}_during_steps: {peak_during / 1e9:.1f}")
  print(f"{tag}_jax_compile_seconds: {info['compile_seconds']:.1f}")
  print(f"{tag}_jax_step_seconds: {j_secs:.3f}")
  print(f"{tag}_jax_step_cv: {cv(jt):.3f}")
  print(f"{tag}_jax_images_per_s: {images / j_secs:.2f}")
  print(f"{tag}_analytic_gflop_per_step: {analytic / 1e9:.1f}")
  if info["flops"]:
    print(f"{tag}_xla_gflop_per_step: {info['flops'] / 1e9:.1f}")
    print(f"{tag}_xla_over_analytic: {info['flops'] / analytic:.3f}")
  print(f"{tag}_jax_model_gflops: {model_flops / j_secs / 1e9:.1f}")
  print(f"{tag}_jax_mfu_vs_matmul_peak: {model_flops / j_secs / peak:.3f}")
  print(f"{tag}_jax_mfu_vs_matmul_during_steps: {model_flops / j_secs / peak_during:.3f}")
  if info["bf16_peak"]:
    print(f"{tag}_jax_mfu_vs_bf16_peak: {model_flops / j_secs / info['bf16_peak']:.3f}")
  print(f"{tag}_jax_peak_rss_gb: {rss['jax']:.2f}")
  if tw is not None:
    tt = [s for r in torch_rounds for s in r]
    t_secs = statistics.median(tt)
    t_flops = tw.info["flops"]
    ratios = round_ratios(jax_rounds, torch_rounds)
    print(f"{tag}_torch_step_seconds: {t_secs:.3f}")
    print(f"{tag}_torch_step_cv: {cv(tt):.3f}")
    print(f"{tag}_torch_images_per_s: {images / t_secs:.2f}")
    print(f"{tag}_torch_model_gflops: {t_flops / t_secs / 1e9:.1f}")
    print(f"{tag}_torch_mfu_vs_matmul_peak: {t_flops / t_secs / peak:.3f}")
    print(f"{tag}_torch_mfu_vs_matmul_during_steps: {t_flops / t_secs / peak_during:.3f}")
    print(f"{tag}_torch_peak_rss_gb: {rss['torch']:.2f}")
    print(f"{tag}_jax_over_torch: {statistics.median(ratios):.2f}")
    print(f"{tag}_jax_over_torch_min: {min(ratios):.2f}")
    print(f"{tag}_jax_over_torch_max: {max(ratios):.2f}")
  sys.stdout.flush()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="S/16")
  parser.add_argument("--image_size", "--image-size", type=int, default=224)
  parser.add_argument("--pairs", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=5, help="rounds per side, alternating")
  parser.add_argument("--steps", type=int, default=4, help="timed steps per side per round")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side at start")
  parser.add_argument("--round_warmup", "--round-warmup", type=int, default=1,
                      help="untimed steps at the start of each round (after the other side ran)")
  parser.add_argument("--modes", default="ema_target,shared_projector")
  parser.add_argument("--dtype", default="float32",
                      help="activation dtype; bfloat16 on CPU compares with torch.autocast")
  parser.add_argument("--attention_impl", "--attention-impl", default=None, help='e.g. "cudnn" on GPU')
  parser.add_argument("--torch", choices=("auto", "on", "off"), default="auto",
                      help="PyTorch reference side; auto = on CPU only")
  parser.add_argument("--quick", action="store_true",
                      help="3 rounds x 2 timed steps per side, 1 warm-up step")
  parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
  parser.add_argument("--mode", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(args)
    return
  if args.quick:
    args.rounds, args.steps, args.warmup = 3, 2, 1
  if args.dtype not in SHORT:
    parser.error(f"--dtype must be one of {sorted(SHORT)}")
  print(f"config: {args.variant} {args.image_size}px, {args.pairs} pairs per step, {args.dtype}, "
        f"{args.rounds} alternating rounds of {args.round_warmup} + {args.steps} steps per side "
        f"after {args.warmup} warm-up")
  state: dict = {}
  for mode in args.modes.split(","):
    bench_mode(args, mode, state)
  # ru_maxrss of each worker (KiB on Linux); the largest process of the run.
  print(f"peak_rss_gb_process: {state['rss']:.2f}")


if __name__ == "__main__":
  main()

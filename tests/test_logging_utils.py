"""Throughput / MFU accounting and the CPU matmul peak it divides by."""
import time

import jax
import numpy as np
import pytest

from vicmae_jax import logging_utils


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cpu_peak_is_measured_in_the_compute_dtype(dtype):
  peak, source = logging_utils.device_peak_flops(jax.devices()[:1], dtype)
  assert np.isfinite(peak) and peak > 1e8
  assert source == f"cpu {dtype} matmul measured at start"


def test_matmul_peak_takes_the_best_size(monkeypatch):
  """The peak is the fastest size's rate: a slow size must not drag it down. A fake clock makes
  each size's time exact (a real one made this test flaky on a busy machine)."""
  calls, clock = [], [0.0]
  real = logging_utils.peak_matmul
  cost = {64: 1.0, 256: 1e-3}  # seconds per call: 64 is slow, 256 fast

  def timed(a, b):
    calls.append(a.shape[0])
    clock[0] += cost[a.shape[0]]
    return real(a, b)

  monkeypatch.setattr(logging_utils, "peak_matmul", timed)
  monkeypatch.setattr(logging_utils.time, "perf_counter", lambda: clock[0])
  both = logging_utils.measure_matmul_peak("float32", sizes=(64, 256), reps=2)
  assert sorted(set(calls)) == [64, 256] and calls.count(64) == 3  # one warm-up + 2 timed
  assert both == pytest.approx(2 * 256**3 / 1e-3)
  assert logging_utils.measure_matmul_peak("float32", (64,), 2) == pytest.approx(2 * 64**3 / 1.0)


def test_throughput_rates_and_mfu():
  tp = logging_utils.Throughput(total_steps=100, pairs_per_step=8, flops_per_step=2e9,
                                peak_flops=1e10, num_devices=1)
  for _ in range(4):
    tp.step_done()
  tp.add_data_wait(0.01)
  time.sleep(0.05)
  m = tp.metrics(step=4)
  assert m["images_per_s"] == pytest.approx(2 * 8 * m["steps_per_s"])
  assert m["mfu"] == pytest.approx(2e9 * m["steps_per_s"] / 1e10)
  assert m["eta_hours"] == pytest.approx(96 / m["steps_per_s"] / 3600)
  assert 0 < m["data_wait_fraction"] < 1
  assert tp.metrics(step=4)["steps_per_s"] == 0  # counters restart after each log step


def test_no_mfu_without_flops_or_peak():
  assert "mfu" not in logging_utils.Throughput(10, 1, None, 1e10, 1).metrics(0)
  assert "mfu" not in logging_utils.Throughput(10, 1, 1e9, float("nan"), 1).metrics(0)


def test_a_measured_peak_is_not_called_mfu():
  """On CPU the peak is a matmul rate measured at start (it moves with the machine's load): the
  ratio gets its own name, and the progress line says what it is."""
  tp = logging_utils.Throughput(10, 1, 1e9, 1e10, 1, peak_nominal=False)
  tp.step_done()
  m = tp.metrics(1)
  assert "mfu" not in m and m["flops_util_vs_measured_peak"] > 0
  line = logging_utils.progress_line(1, 10, dict(m, loss=1.0, recon_loss=1.0,
                                                 contrastive_loss=1.0, learning_rate=1e-3))
  assert "of measured peak" in line and "mfu" not in line

"""Sweeps: members from a config, local runs into their own workdirs, skip-finished, summary
tables and plot, the SLURM array script (shellcheck) and the TPU commands."""
import csv
import io
import os
import subprocess

import pytest

from vicmae_jax.sweep import __main__ as sweep_main
from vicmae_jax.sweep import hyper, launchers, members, summary

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "tiny_sweep.py")
REPO = os.path.dirname(os.path.dirname(HERE))


def test_hyper_and_members_name_group_and_seed():
  dicts = hyper.product([hyper.sweep("config.model.pool", ["mean", "max"]),
                         hyper.sweep("config.seed", [0, 1])])
  assert dicts[1] == {"config.model.pool": "mean", "config.seed": 1}
  ms = members.from_dicts(dicts + [{"name": "mae", "group": "MAE only", "seed": 3,
                                    "config_arg": "quick"}])
  assert [m.name for m in ms[:2]] == ["model.pool=mean,seed=0", "model.pool=mean,seed=1"]
  assert {m.group for m in ms[:4]} == {"model.pool=mean", "model.pool=max"}
  assert (ms[4].name, ms[4].group, ms[4].seed, ms[4].config_arg) == ("mae", "MAE only", 3, "quick")
  assert ms[0].main_args("c.py", "w/x") == ["--config=c.py", "--workdir=w/x",
                                            "--config.model.pool=mean", "--config.seed=0"]
  assert ms[4].main_args("c.py", "w")[0] == "--config=c.py:quick"
  assert hyper.zipit([hyper.sweep("a", [1, 2]), hyper.sweep("b", [3, 4])]) == [
      {"a": 1, "b": 3}, {"a": 2, "b": 4}]
  with pytest.raises(TypeError, match="not a scalar"):
    members.from_dicts([{"input.sources": [1]}])
  with pytest.raises(ValueError, match="share names"):
    members.from_dicts([{"name": "a"}, {"name": "a"}])
  with pytest.raises(ValueError, match="set twice"):
    hyper.product([hyper.fixed("a", 1), hyper.fixed("a", 2)])


def test_local_sweep_runs_skips_finished_and_summarises(tmp_path, capsys):
  root = str(tmp_path / "sweep")
  assert sweep_main.main([f"--config={TINY}", f"--workdir={root}"]) == 0
  out = capsys.readouterr().out
  assert "sweep: 2 members, 0 finished, 2 to run (local)" in out
  assert "[2/2] loss.weight_contrast=0.03,seed=0 done" in out
  for name in ("loss.weight_contrast=0.0,seed=0", "loss.weight_contrast=0.03,seed=0"):
    assert os.path.exists(os.path.join(root, name, "metrics.jsonl"))
    assert "--config.loss.weight_contrast=" in open(os.path.join(root, name, "sweep.log")).read()
  rows = list(csv.DictReader(io.StringIO(open(os.path.join(root, "summary.csv")).read())))
  assert [r["status"] for r in rows] == ["done", "done"] and rows[0]["step"] == "2"
  assert 0 <= float(rows[0]["knn_mean_top1"]) <= 100 and rows[1]["probe_mean_top1"] != ""
  md = open(os.path.join(root, "summary.md")).read()
  assert md.startswith("# tiny sweep") and "| loss.weight_contrast=0.0 | 1/1 |" in md
  with open(os.path.join(root, "summary.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"

  # Again: both are finished (metrics at the last step), nothing runs, the summary is rewritten.
  stamp = os.path.getmtime(os.path.join(root, "loss.weight_contrast=0.0,seed=0", "metrics.jsonl"))
  assert sweep_main.main([f"--config={TINY}", f"--workdir={root}"]) == 0
  out = capsys.readouterr().out
  assert "2 finished, 0 to run" in out and "sweep: start" not in out
  assert os.path.getmtime(
      os.path.join(root, "loss.weight_contrast=0.0,seed=0", "metrics.jsonl")) == stamp
  assert sweep_main.main([f"--config={TINY}", f"--workdir={root}", "--member=1"]) == 0
  assert "is finished; nothing to do" in capsys.readouterr().out

  # A second seed per arm: only the new members would run; --list shows who is what.
  assert sweep_main.main([f"--config={TINY}:two_seeds", f"--workdir={root}", "--list"]) == 0
  listing = capsys.readouterr().out.splitlines()
  assert [line.split()[1] for line in listing] == ["done", "pending", "done", "pending"]


def test_summary_of_partial_and_pending_members(tmp_path):
  ms = members.from_dicts([{"name": "a", "group": "g"}, {"name": "b", "group": "g"},
                           {"name": "c", "group": "h"}])
  for name, steps in (("a", [5, 10]), ("b", [5])):
    os.makedirs(tmp_path / name)
    (tmp_path / name / "metrics.jsonl").write_text("".join(
        f'{{"step": {s}, "probe_mean_top1": {s * 4}}}\n' for s in steps) + '{"step": 1')
  results = summary.collect(str(tmp_path), ms, {"a": 10, "b": 10, "c": 10})
  assert [r.status for r in results] == ["done", "partial (step 5)", "pending"]
  written = summary.write(str(tmp_path), results)
  md = open(written["md"]).read()
  assert "| g | 1/2 | 40.0 |" in md and "| h | 0/1 |  |" in md
  assert "png" in written


def test_summary_curves_per_readout_with_the_random_control(tmp_path):
  """Arms' mean ± std at every readout step, and the random-encoder control's mean as the last
  row of that table (and a dashed line in the plot)."""
  ms = members.from_dicts([{"name": f"{g}-s{i}", "group": g} for g in ("x", "y") for i in (0, 1)])
  values = {"x-s0": (10, 20), "x-s1": (14, 24), "y-s0": (12, 12), "y-s1": (12, 14)}
  for name, (v5, v10) in values.items():
    os.makedirs(tmp_path / name)
    (tmp_path / name / "metrics.jsonl").write_text("".join(
        f'{{"step": {s}, "probe_cls_top1": {v}, "random_probe_cls_top1": {11 if name < "y" else 13}}}\n'
        for s, v in ((5, v5), (10, v10))))
  results = summary.collect(str(tmp_path), ms, {m.name: 10 for m in ms})
  table = summary.curves_markdown(results, "probe_cls_top1")
  assert table.splitlines()[0] == "| arm | step 5 | step 10 |"
  assert "| x | 12.0 ± 2.8 | 22.0 ± 2.8 |" in table and "| y | 12.0 ± 0.0 | 13.0 ± 1.4 |" in table
  assert table.splitlines()[-1].endswith("| 12.0 | 12.0 |") and "random encoder" in table
  assert summary.control_mean(results, "knn_cls_top1") is None
  written = summary.write(str(tmp_path), results, ["probe_cls_top1"], "probe_cls_top1")
  assert "## probe_cls_top1 at every readout" in open(written["md"]).read()
  assert open(written["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_slurm_array_script_renders_and_passes_shellcheck(tmp_path, capsys):
  root = str(tmp_path / "sweep")
  assert sweep_main.main([f"--config={TINY}:two_seeds", f"--workdir={root}", "--launcher=slurm",
                          "--parallel=2", "--slurm_partition=gpu", "--slurm_gpus=1"]) == 0
  script = open(os.path.join(root, "sweep.sbatch")).read()
  assert "#SBATCH --array=0-3%2" in script and "#SBATCH --partition=gpu" in script
  assert "#SBATCH --gpus-per-task=1" in script
  assert f"--config={TINY}:two_seeds" in script and '--member="${SLURM_ARRAY_TASK_ID}"' in script
  result = subprocess.run(["shellcheck", os.path.join(root, "sweep.sbatch")],
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stdout
  assert launchers._ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_tpu_commands_go_through_launch_run_sh(gcs, capsys):
  root = gcs.url("study")  # the sweep reads members' status from the bucket (none yet)
  assert sweep_main.main([f"--config={TINY}", f"--workdir={root}", "--launcher=tpu",
                          "--tpu_flag=--name=my-v5e"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()[1:]
  assert len(lines) == 2 and all(l.startswith("launch/tpu/run.sh --name=my-v5e -- ") for l in lines)
  assert f"--workdir={root}/loss.weight_contrast=0.0,seed=0" in lines[0]
  argv = lines[0].split(" -- ", 1)[1].split()
  # run.sh's dry run accepts the member's arguments as it accepts main's.
  env = {**os.environ, "TPU_DRY_RUN": "1", "TPU_NAME": "my-v5e"}
  out = subprocess.run(["bash", os.path.join(REPO, "launch/tpu/run.sh"), "--", *argv],
                       capture_output=True, text=True, env=env, cwd=REPO)
  assert out.returncode == 0, out.stderr
  assert "vicmae_jax.main" in out.stdout and "loss.weight_contrast=0.0" in out.stdout

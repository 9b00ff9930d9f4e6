"""Sweeps: a config declares a list of members (override sets), `python -m vicmae_jax.sweep` runs
each into its own workdir (locally, as a SLURM array job, or on TPU through launch/tpu), skips
finished ones, and writes a summary table and plot (docs/study.md).

  hyper.py     big_vision-style helpers to declare members (product, sweep, zipit, fixed)
  members.py   a config's members: names, groups (arms), their configs and main's arguments
  launchers.py where members run: local processes, a SLURM array script, TPU commands
  summary.py   each member's metrics -> summary.csv, summary.md and a PNG of the curves
"""

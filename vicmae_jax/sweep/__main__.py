r"""Runs a sweep: `python -m vicmae_jax.sweep --config=FILE[:ARG] --workdir=DIR`.

FILE defines `get_config(arg)` and `get_sweep(arg)` (a list of override dicts, hyper.py). Each
member runs `vicmae_jax.main` into DIR/NAME; finished members are skipped, interrupted ones
resume from their checkpoints; DIR/summary.{csv,md,png} sum up the members' final metrics.

  python -m vicmae_jax.sweep --config=configs/study.py:quick --workdir=/tmp/study
  python -m vicmae_jax.sweep --config=configs/study.py --workdir=runs/study --parallel 2
  python -m vicmae_jax.sweep ... --list                     # members and their status
  python -m vicmae_jax.sweep ... --launcher slurm [--submit] [--slurm_gpus 1 ...]
  python -m vicmae_jax.sweep ... --launcher tpu --tpu_flag=--name=my-v5e   # run.sh commands
  python -m vicmae_jax.sweep ... --summary_only             # tables and plot from the workdirs

FILE may also define `get_sweep_summary(arg)` -> {'metrics': [...], 'plot_metric': ...,
'title': ...} for the summary; by default every `probe_*_top1` / `knn_*_top1` metric is tabled.
"""
from __future__ import annotations

import argparse
import sys

from vicmae_jax import fs, paths
from vicmae_jax.sweep import launchers, members as members_lib, summary as summary_lib


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python -m vicmae_jax.sweep',
                              description=__doc__.split('\n\n')[0])
  p.add_argument('--config', required=True, help='FILE[:ARG] defining get_config and get_sweep')
  p.add_argument('--workdir', required=True, type=paths.resolve,
                 help='one folder per member goes here, and the summary')
  p.add_argument('--launcher', choices=('local', 'slurm', 'tpu'), default='local')
  p.add_argument('--parallel', type=int, default=1,
                 help='local: members at a time; slurm: array tasks at a time (0: no limit)')
  p.add_argument('--only', default='', help='comma-separated member names or arms to run')
  p.add_argument('--list', action='store_true', help='print the members and their status')
  p.add_argument('--member', type=int, help='run the member with this index (array tasks)')
  p.add_argument('--summary_only', '--summary-only', action='store_true')
  p.add_argument('--metrics', default='', help='comma-separated metrics for the summary')
  p.add_argument('--plot_metric', '--plot-metric', default='')
  p.add_argument('--python', default=sys.executable, help='interpreter that runs members')
  p.add_argument('--submit', action='store_true', help='slurm: sbatch the written script')
  p.add_argument('--slurm_partition', default='')
  p.add_argument('--slurm_time', default='04:00:00')
  p.add_argument('--slurm_gpus', type=int, default=1)
  p.add_argument('--slurm_cpus', type=int, default=8)
  p.add_argument('--tpu_flag', action='append', default=[],
                 help='a flag for launch/tpu/run.sh (repeat), e.g. --tpu_flag=--name=v5e-1')
  return p.parse_args(argv)


def _config_file(config: str) -> tuple[str, str]:
  file, sep, arg = config.partition(':')
  return paths.resolve(file), (sep + arg)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  config_file, arg_suffix = _config_file(args.config)
  _, members, module = members_lib.load(config_file + arg_suffix)
  totals = {m.name: int(members_lib.member_config(module, m).total_steps) for m in members}
  if args.only:
    wanted = set(args.only.split(','))
    unknown = wanted - {m.name for m in members} - {m.group for m in members}
    if unknown:
      raise SystemExit(f'--only: no member or arm named {sorted(unknown)}')
    members = [m for m in members if m.name in wanted or m.group in wanted]
  root = args.workdir
  results = summary_lib.collect(root, members, totals)
  pending = [r.member for r in results if not r.finished]

  if args.list:
    for r in results:
      print(f'{r.member.index:3d}  {r.status:18s}  {r.member.group:32s}  {r.member.name}')
    return 0
  if args.member is not None:
    member = next((m for m in members if m.index == args.member), None)
    if member is None:
      raise SystemExit(f'--member {args.member}: the sweep has members 0..{len(members) - 1}')
    if member not in pending:
      print(f'sweep: {member.name} is finished; nothing to do')
      return 0
    codes = launchers.run_local([member], config_file, root, python=args.python)
    return codes[member.name]

  fs.makedirs(root)
  codes: dict[str, int] = {}
  if not args.summary_only:
    print(f'sweep: {len(members)} members, {len(members) - len(pending)} finished, '
          f'{len(pending)} to run ({args.launcher})', flush=True)
    if args.launcher == 'local' and pending:
      codes = launchers.run_local(pending, config_file, root, parallel=args.parallel,
                                  python=args.python,
                                  log=lambda line: print(line, flush=True))
    elif args.launcher == 'slurm' and pending:
      script = launchers.slurm_script(pending, config_file + arg_suffix, root,
                                      parallel=args.parallel, partition=args.slurm_partition,
                                      time_limit=args.slurm_time, gpus=args.slurm_gpus,
                                      cpus=args.slurm_cpus, python=args.python)
      path = fs.join(root, 'sweep.sbatch')
      fs.write_text(path, script)
      print(f'sweep: wrote {path}; submit it with: sbatch {path}')
      if args.submit:
        print(launchers.submit_slurm(path))
      return 0
    elif args.launcher == 'tpu' and pending:
      for line in launchers.tpu_commands(pending, config_file + arg_suffix, root,
                                         args.tpu_flag):
        print(line)
      return 0
  results = summary_lib.collect(root, members, totals)
  opts = getattr(module, 'get_sweep_summary', lambda arg: {})(arg_suffix[1:] or None)
  metrics = [m for m in args.metrics.split(',') if m] or opts.get('metrics')
  written = summary_lib.write(root, results, metrics, args.plot_metric or opts.get('plot_metric'),
                              opts.get('title', ''))
  print(fs.read_text(written['md']))
  print('sweep: summary in ' + ', '.join(written.values()))
  failed = sorted(n for n, rc in codes.items() if rc)
  if failed:
    print(f'sweep: {len(failed)} member(s) failed: {", ".join(failed)}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())

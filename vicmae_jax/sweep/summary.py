"""Each member's metrics (its workdir's metrics.jsonl) -> summary.csv, summary.md, summary.png.

A member is finished when its metrics hold a row at its last step (written at the end of every
run, by every launcher), so the summary and the skip-finished rule need nothing but the workdirs.
Arms (`group`) are averaged over their seeds: mean and sample standard deviation.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from vicmae_jax import fs
from vicmae_jax.sweep.members import Member

DEFAULT_METRICS = re.compile(r'^(probe|knn)_\w+_top1$')


@dataclasses.dataclass
class Result:
  member: Member
  total_steps: int
  rows: list[dict[str, Any]]

  @property
  def step(self) -> int:
    return max((int(r['step']) for r in self.rows), default=0)

  @property
  def status(self) -> str:
    if self.finished:
      return 'done'
    return f'partial (step {self.step})' if self.rows else 'pending'

  @property
  def finished(self) -> bool:
    return self.step >= self.total_steps > 0

  def final(self, metric: str) -> float | None:
    """The metric's value at the last row holding it."""
    for r in reversed(self.rows):
      if metric in r:
        return float(r[metric])
    return None

  def curve(self, metric: str) -> dict[int, float]:
    return {int(r['step']): float(r[metric]) for r in self.rows if metric in r}


def read_rows(workdir: str) -> list[dict[str, Any]]:
  path = fs.join(workdir, 'metrics.jsonl')
  if not fs.exists(path):
    return []
  rows = []
  for line in fs.read_text(path).splitlines():
    try:
      rows.append(json.loads(line))
    except ValueError:
      continue  # a line cut by a crash mid-write
  return rows


def collect(root: str, members: Sequence[Member], totals: dict[str, int]) -> list[Result]:
  return [Result(m, totals[m.name], read_rows(m.workdir(root))) for m in members]


def default_metrics(results: Sequence[Result]) -> list[str]:
  keys = sorted({k for r in results for row in r.rows for k in row if DEFAULT_METRICS.match(k)})
  return keys or ['loss']


def _mean_std(values: list[float]) -> tuple[float, float]:
  mean = sum(values) / len(values)
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 \
      else 0.0
  return mean, std


def groups(results: Sequence[Result]) -> dict[str, list[Result]]:
  out: dict[str, list[Result]] = {}
  for r in results:
    out.setdefault(r.member.group, []).append(r)
  return out


def members_csv(results: Sequence[Result], metrics: Sequence[str]) -> str:
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator='\n')
  w.writerow(['name', 'group', 'seed', 'status', 'step', *metrics])
  for r in results:
    vals = [r.final(m) for m in metrics]
    w.writerow([r.member.name, r.member.group, '' if r.member.seed is None else r.member.seed,
                r.status, r.step, *['' if v is None else f'{v:.4g}' for v in vals]])
  return buf.getvalue()


def groups_markdown(results: Sequence[Result], metrics: Sequence[str]) -> str:
  """One row per arm: finished seeds, then mean ± std of each metric's final value over them."""
  lines = ['| arm | seeds done | ' + ' | '.join(metrics) + ' |',
           '|---|---|' + '---|' * len(metrics)]
  for name, rs in groups(results).items():
    done = [r for r in rs if r.finished]
    cells = []
    for m in metrics:
      vals = [v for v in (r.final(m) for r in done) if v is not None]
      if not vals:
        cells.append('')
        continue
      mean, std = _mean_std(vals)
      cells.append(f'{mean:.1f} ± {std:.1f}' if len(vals) > 1 else f'{mean:.1f}')
    lines.append(f'| {name} | {len(done)}/{len(rs)} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def _arm_curve(rs: Sequence[Result], metric: str
               ) -> tuple[list[int], list[tuple[float, float]], int]:
  """Steps every finished seed read `metric` at, (mean, std) there, and the seed count."""
  curves = [c for c in (r.curve(metric) for r in rs if r.finished) if c]
  if not curves:
    return [], [], 0
  steps = sorted(set.intersection(*(set(c) for c in curves)))
  return steps, [_mean_std([c[s] for c in curves]) for s in steps], len(curves)


def control_mean(results: Sequence[Result], metric: str) -> float | None:
  """The mean over finished members of `random_<metric>` (the random-encoder control), if any."""
  vals = [v for v in (r.final(f'random_{metric}') for r in results if r.finished) if v is not None]
  return sum(vals) / len(vals) if vals else None


def curves_markdown(results: Sequence[Result], metric: str) -> str:
  """One row per arm: mean ± std over finished seeds of `metric` at every readout step."""
  arms = {name: _arm_curve(rs, metric) for name, rs in groups(results).items()}
  steps = sorted({s for st, _, _ in arms.values() for s in st})
  if not steps:
    return ''
  lines = ['| arm | ' + ' | '.join(f'step {s}' for s in steps) + ' |',
           '|---|' + '---|' * len(steps)]
  for name, (st, stats, _) in arms.items():
    at = dict(zip(st, stats))
    lines.append(f'| {name} | ' + ' | '.join(
        f'{at[s][0]:.1f} ± {at[s][1]:.1f}' if s in at else '' for s in steps) + ' |')
  control = control_mean(results, metric)
  if control is not None:
    lines.append(f'| random encoder (`random_{metric}`, all members) | '
                 + ' | '.join(f'{control:.1f}' for _ in steps) + ' |')
  return '\n'.join(lines) + '\n'


def plot(results: Sequence[Result], metric: str, path: str, title: str = '') -> None:
  """Metric vs step per arm: the mean over finished seeds, error bars one std (PNG), and the
  random-encoder control (`random_<metric>`, mean over members) as a dashed line if logged."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
  for name, rs in groups(results).items():
    steps, stats, n = _arm_curve(rs, metric)
    if not n:
      continue
    ax.errorbar(steps, [m for m, _ in stats], yerr=[s for _, s in stats], marker='o', ms=3,
                capsize=3, label=f'{name} (n={n})')
  control = control_mean(results, metric)
  if control is not None:
    ax.axhline(control, color='0.4', ls='--', lw=1, label='random encoder (mean)')
  ax.set_xlabel('pretraining step')
  ax.set_ylabel(metric)
  ax.set_title(title or metric)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc='best')
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  plt.close(fig)
  with fs.open(path, 'wb') as f:
    f.write(buf.getvalue())


def write(root: str, results: Sequence[Result], metrics: Sequence[str] | None = None,
          plot_metric: str | None = None, title: str = '') -> dict[str, str]:
  """Writes ROOT/summary.csv (a row per member), summary.md (arms and members) and, when any
  member has the plotted metric, summary.png; returns their paths."""
  metrics = list(metrics or default_metrics(results))
  out = {'csv': fs.join(root, 'summary.csv'), 'md': fs.join(root, 'summary.md')}
  table = members_csv(results, metrics)
  fs.write_text(out['csv'], table)
  done = sum(r.finished for r in results)
  md = [f'# {title or "Sweep summary"}', '',
        f'{done} of {len(results)} members finished. Final values; arms: mean ± std over seeds.',
        '', groups_markdown(results, metrics)]
  plot_metric = plot_metric or metrics[0]
  curves = curves_markdown(results, plot_metric)
  if curves:
    md += [f'## {plot_metric} at every readout', '', 'Mean ± std over finished seeds.', '', curves]
  md += ['## Members', '',
        '| ' + ' | '.join(next(csv.reader([table.splitlines()[0]]))) + ' |',
        '|' + '---|' * (5 + len(metrics))]
  md += ['| ' + ' | '.join(row) + ' |' for row in csv.reader(table.splitlines()[1:])]
  fs.write_text(out['md'], '\n'.join(md) + '\n')
  if any(r.curve(plot_metric) for r in results if r.finished):
    out['png'] = fs.join(root, 'summary.png')
    plot(results, plot_metric, out['png'], title)
  return out

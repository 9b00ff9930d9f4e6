"""Dataset indexes: Kinetics CSVs, `path,label` CSVs, SSv2 JSON, class folders, flat folders.

Every reader validates before training starts and names the file and line of the first problems:
missing columns, malformed rows, and (by default) paths that do not exist. Kinetics copies often
miss ~10% of their videos; `on_missing='skip'` drops those rows with a logged count instead.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vicmae_jax import fs
from vicmae_jax.data import images

VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov', '.m4v')
KINETICS_COLUMNS = ('label', 'youtube_id', 'time_start', 'time_end')


class IndexFormatError(ValueError):
  """A malformed index; the message gives file:line for each problem found."""


@dataclasses.dataclass(frozen=True)
class Index:
  """Resolved file paths with integer labels (-1 when unlabelled) and the class names."""
  paths: tuple[str, ...]
  labels: tuple[int, ...]
  classes: tuple[str, ...] = ()
  origin: str = ''  # where the index came from, for messages
  # Rows dropped because their file does not exist (on_missing='skip'): (path, 'file:line').
  dropped: tuple[tuple[str, str], ...] = ()

  def __len__(self) -> int:
    return len(self.paths)


def _fail(problems: list[str], what: str) -> None:
  if problems:
    more = f'\n  ... and {len(problems) - 10} more' if len(problems) > 10 else ''
    raise IndexFormatError(f'{len(problems)} problem(s) in {what}:\n  ' + '\n  '.join(problems[:10])
                           + more)


def _finish(rows: list[tuple[str, str, str]], origin: str, on_missing: str,
            check_exists: bool) -> Index:
  """rows: (path, label string or '', 'file:line'); checks existence and numbers the labels."""
  if on_missing not in ('error', 'skip'):
    raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
  dropped: tuple[tuple[str, str], ...] = ()
  if check_exists:
    found = fs.existing(r[0] for r in rows)
    missing = [r for r in rows if r[0] not in found]
    if missing and on_missing == 'error':
      _fail([f'{where}: file does not exist: {p}' for p, _, where in missing],
            f"{origin} (set on_missing='skip' to drop missing files)")
    if missing:
      logging.warning('%s: %d of %d files are missing and were dropped, e.g. %s', origin,
                      len(missing), len(rows), missing[0][0])
      gone = {id(r) for r in missing}
      dropped = tuple((p, where) for p, _, where in missing)
      rows = [r for r in rows if id(r) not in gone]
  if not rows:
    raise IndexFormatError(f'{origin}: no usable entries' + (
        '' if fs.isdir(origin) or not fs.isfile(origin) or fs.size(origin)
        else ' (the file is empty)'))
  names = sorted({lab for _, lab, _ in rows if lab != ''})
  if names and all(re.fullmatch(r'-?\d+', n) for n in names):
    labels = tuple(int(lab) if lab != '' else -1 for _, lab, _ in rows)
    classes: tuple[str, ...] = ()
  else:
    ids = {n: i for i, n in enumerate(names)}
    labels = tuple(ids[lab] if lab != '' else -1 for _, lab, _ in rows)
    classes = tuple(names)
  return Index(tuple(p for p, _, _ in rows), labels, classes, origin, dropped)


def _confine(rows: list[tuple[str, str, str]], root: str, allow_outside: bool,
             problems: list[str]) -> list[tuple[str, str, str]]:
  """The rows whose path stays inside `root` (lexically: `..` and absolute paths that leave it;
  symlinks inside the root are the dataset owner's choice and are followed). The others become
  index problems, unless the source allows paths outside its root."""
  if allow_outside:
    return rows
  base = fs.normpath(root)
  kept = []
  for path, label, where in rows:
    if not fs.is_within(path, base):
      problems.append(f'{where}: {path} is outside the source root {base} (declare the source '
                      f'with allow_outside_root=True to read paths outside it)')
    else:
      kept.append((path, label, where))
  return kept


def _stem_map(root: str, extensions: Iterable[str]) -> dict[str, str]:
  """Maps file stems to paths in `root` and its class folders (one scan, not a stat per row)."""
  out: dict[str, str] = {}
  if not fs.isdir(root):
    return out
  for dirpath, dirnames, filenames in fs.walk(root):
    if fs.relpath(dirpath, root) != '.':
      dirnames[:] = []  # the root and its class folders only
    for f in filenames:
      stem, ext = os.path.splitext(f)
      if ext.lower() in extensions:
        out.setdefault(stem, fs.join(dirpath, f))
  return out


def read_kinetics_csv(csv_path: str, videos_root: str, *, on_missing: str = 'error',
                      allow_outside_root: bool = False) -> Index:
  """Official Kinetics-400/600/700 annotations: `label,youtube_id,time_start,time_end,split[,...]`.

  Clips are expected as `{youtube_id}_{time_start:06d}_{time_end:06d}.{mp4,webm,mkv}` directly in
  `videos_root` or in one folder per class (the layout of the common downloaders). A test CSV
  without a `label` column gives unlabelled entries.
  """
  stems = _stem_map(videos_root, VIDEO_EXTENSIONS)
  rows, problems = [], []
  with io.StringIO(fs.read_text(csv_path), newline='') as f:
    reader = csv.reader(f)
    header = [h.strip() for h in next(reader, [])]
    if not header:
      _fail([f'{csv_path}: the file is empty (expected a header with columns '
             f'{list(KINETICS_COLUMNS)})'], csv_path)
    need = [c for c in KINETICS_COLUMNS[1:] if c not in header]
    if need:
      _fail([f'{csv_path}:1: missing column(s) {need}; header is {header}'], csv_path)
    col = {c: header.index(c) for c in KINETICS_COLUMNS if c in header}
    for line, row in enumerate(reader, start=2):
      where = f'{csv_path}:{line}'
      if not row or all(not x.strip() for x in row):
        continue
      if len(row) != len(header):
        problems.append(f'{where}: expected {len(header)} fields, got {len(row)}')
        continue
      try:
        start, end = int(float(row[col['time_start']])), int(float(row[col['time_end']]))
      except ValueError:
        problems.append(f'{where}: time_start/time_end are not numbers: {row}')
        continue
      yid = row[col['youtube_id']].strip()
      if not yid:
        problems.append(f'{where}: empty youtube_id')
        continue
      stem = f'{yid}_{start:06d}_{end:06d}'
      path = stems.get(stem, fs.join(videos_root, stem + '.mp4'))
      label = row[col['label']].strip() if 'label' in col else ''
      rows.append((path, label, where))
  rows = _confine(rows, videos_root, allow_outside_root, problems)
  _fail(problems, csv_path)
  return _finish(rows, csv_path, on_missing, check_exists=True)


def read_path_csv(csv_path: str, root: str | None = None, *, on_missing: str = 'error',
                  allow_outside_root: bool = False) -> Index:
  """`path,label` CSV (header optional, label optional), or VideoMAE-style `path label` lines.

  Relative paths are resolved against `root` (default: the CSV's folder).
  """
  root = root if root is not None else fs.dirname(fs.normpath(csv_path))
  rows, problems = [], []
  lines = fs.read_text(csv_path).splitlines()
  for line_no, text in enumerate(lines, start=1):
    where = f'{csv_path}:{line_no}'
    if not text.strip():
      continue
    fields = next(csv.reader([text])) if ',' in text else text.rsplit(None, 1)
    fields = [x.strip() for x in fields]
    if line_no == 1 and fields[0].lower() in ('path', 'filename', 'file', 'video', 'image'):
      continue  # header
    if len(fields) == 2 and ',' not in text and not re.fullmatch(r'-?\d+', fields[1]):
      fields = [text.strip()]  # a path containing spaces, no label
    if len(fields) > 2 or not fields[0]:
      problems.append(f'{where}: expected `path[,label]`, got {text!r}')
      continue
    path = fields[0] if fs.isabs(fields[0]) else fs.join(root, fields[0])
    rows.append((path, fields[1] if len(fields) == 2 else '', where))
  rows = _confine(rows, root, allow_outside_root, problems)
  _fail(problems, csv_path)
  return _finish(rows, csv_path, on_missing, check_exists=True)


def read_ssv2_json(json_path: str, videos_root: str, labels_json: str | None = None, *,
                   on_missing: str = 'error', extension: str = '.webm',
                   allow_outside_root: bool = False) -> Index:
  """Something-Something-v2: a list of {"id", "template", ...}; videos are `{id}.webm`.

  `labels_json` (`labels.json`, template -> class id) gives the official class numbering; the
  template's `[something]` brackets are removed before the lookup, as in the official code.
  """
  try:
    items = json.loads(fs.read_text(json_path))
  except json.JSONDecodeError as e:
    raise IndexFormatError(f'{json_path}:{e.lineno}: invalid JSON: {e.msg}') from None
  classes = {}
  if labels_json:
    classes = {k: str(v) for k, v in json.loads(fs.read_text(labels_json)).items()}
  if not isinstance(items, list):
    raise IndexFormatError(f'{json_path}:1: expected a JSON list of objects')
  rows, problems = [], []
  for n, item in enumerate(items):
    where = f'{json_path}: item {n}'
    if not isinstance(item, dict) or 'id' not in item:
      problems.append(f'{where}: missing "id"')
      continue
    label = ''
    if classes and 'template' in item:
      name = item['template'].replace('[', '').replace(']', '')
      if name not in classes:
        problems.append(f'{where}: template {name!r} not in {labels_json}')
        continue
      label = classes[name]
    rows.append((fs.join(videos_root, f"{item['id']}{extension}"), label, where))
  rows = _confine(rows, videos_root, allow_outside_root, problems)
  _fail(problems, json_path)
  return _finish(rows, json_path, on_missing, check_exists=True)


def scan_folder(root: str, extensions: Iterable[str]) -> Index:
  """All matching files under `root`. Files inside first-level folders are labelled by folder
  (ImageNet, Moments in Time and Kinetics class layouts); a flat folder gives unlabelled entries."""
  if not fs.isdir(root):
    raise IndexFormatError(f'{root}: folder does not exist')
  extensions = tuple(e.lower() for e in extensions)
  rows = []
  for dirpath, dirnames, filenames in fs.walk(root, followlinks=True):
    dirnames.sort()
    rel = fs.relpath(dirpath, root)
    label = '' if rel == '.' else rel.replace(os.sep, '/').split('/')[0]
    for f in sorted(filenames):
      if os.path.splitext(f)[1].lower() in extensions and not f.startswith('.'):
        rows.append((fs.join(dirpath, f), label, fs.join(dirpath, f)))
  if not rows:
    raise IndexFormatError(f'{root}: no files with extensions {extensions}')
  if any(lab == '' for _, lab, _ in rows) and any(lab != '' for _, lab, _ in rows):
    rows = [(p, '', w) for p, _, w in rows]  # mixed layout: treat as unlabelled
  return _finish(rows, root, 'error', check_exists=False)


VIDEO_KINDS = ('kinetics_csv', 'video_csv', 'ssv2', 'mit', 'video_folder')
IMAGE_KINDS = ('image_folder', 'image_csv')


def read_index(spec: Mapping[str, Any], *, classes: Sequence[str] | None = None) -> Index:
  """The one index factory: a source spec {'kind', 'path', 'root', 'labels', 'on_missing'} -> Index.

  Every reader of files takes this dialect: the pretraining sources, the fine-tuning video
  sources (one spec per split) and `tools.extract_frames`. `classes` numbers the labels as
  another split did (a validation split that lacks a class must not shift the others).
  """
  kind, path = spec['kind'], spec['path']
  # Index entries stay inside their source's root unless the source says otherwise.
  kw = dict(on_missing=spec.get('on_missing') or 'error',
            allow_outside_root=bool(spec.get('allow_outside_root', False)))
  if kw['allow_outside_root'] and kind not in ('mit', 'video_folder', 'image_folder'):
    logging.info('%s: entries may name files outside the source root (allow_outside_root)', path)
  if kind in ('mit', 'video_folder'):
    idx = scan_folder(path, VIDEO_EXTENSIONS)
  elif kind == 'image_folder':
    idx = scan_folder(path, images.IMAGE_EXTENSIONS)
  elif kind == 'kinetics_csv':
    idx = read_kinetics_csv(path, spec['root'], **kw)
  elif kind in ('video_csv', 'image_csv'):
    idx = read_path_csv(path, spec.get('root') or None, **kw)
  elif kind == 'ssv2':
    idx = read_ssv2_json(path, spec['root'], spec.get('labels') or None, **kw)
  else:
    raise ValueError(f'unknown index kind {kind!r}; expected one of {VIDEO_KINDS + IMAGE_KINDS}')
  return idx if classes is None else relabel(idx, classes)


def relabel(idx: Index, classes: Sequence[str]) -> Index:
  """`idx` with its class names numbered by their position in `classes`; an index with numeric
  labels (no class names) is returned as it is."""
  if not idx.classes or tuple(idx.classes) == tuple(classes):
    return idx
  ids = {name: i for i, name in enumerate(classes)}
  unknown = sorted(set(idx.classes) - set(ids))
  if unknown:
    raise IndexFormatError(f'{idx.origin}: classes not in the training split: {unknown[:10]}')
  labels = tuple(-1 if y < 0 else ids[idx.classes[y]] for y in idx.labels)
  return dataclasses.replace(idx, labels=labels, classes=tuple(classes))


def read_split(spec: Mapping[str, Any], split: str) -> Index:
  """Split `split` of a labelled spec that names one index per split ({'kind', 'train': ...,
  'val': ..., 'root', ...}: the fine-tuning and probe sources), numbered by the training
  split's classes (a validation split that lacks a class must not shift the others; reading the
  training index again costs seconds, once per run)."""
  def one(name: str, classes=None) -> Index:
    return read_index({**spec, 'path': spec[name]}, classes=classes)
  return one(split, None if split == 'train' else one('train').classes or None)

"""Bad-input policy: deterministic replacement with bounded retries, counters by kind, abort threshold.

Workers (possibly other processes) cannot share counters, so every example carries its own record of
the failures met while producing it (`_bad_kinds`, `_bad_refs`); `BadInputMonitor` in the main process
sums them, keeps the names of the failed files and stops the run above the configured fraction.
Training inputs (pretraining, the fine-tuning train split) follow this policy.

Evaluation never replaces an example (that would change the set being measured): `SkippedInputs`
leaves it out, logs it once with its cause and lists it in the results, whose metrics are over the
readable examples.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

KINDS = ('missing', 'empty', 'unreadable', 'truncated', 'too_short', 'corrupt_image', 'exhausted')
KIND_ID = {k: i for i, k in enumerate(KINDS)}
CAUSE_CHARS = 120                 # a decoder's reason, cut to this length
CAUSE_DTYPE = f'<U{CAUSE_CHARS}'


class BadInput(Exception):
  """An example that cannot be used; `kind` is one of KINDS."""

  def __init__(self, kind: str, path: str, detail: str = ''):
    assert kind in KIND_ID, kind
    super().__init__(f'{kind}: {path}' + (f' ({detail})' if detail else ''))
    self.kind, self.path, self.detail = kind, path, detail


class TooManyBadInputs(RuntimeError):
  """Raised when the fraction of failed examples exceeds the configured maximum."""


def cause_text(kind: str, detail: str = '') -> str:
  """How a failure is named in logs and results: the kind, then the decoder's reason if any."""
  return kind + (f': {detail}' if detail else '')


def load_with_retries(load: Callable[[int, np.random.Generator], dict[str, Any]], index: int,
                      size: int, rng: np.random.Generator, max_retries: int,
                      placeholder: Callable[[], dict[str, Any]]) -> dict[str, Any]:
  """Loads `index`, replacing it by other indices drawn from `rng` when it is bad.

  The replacement sequence depends only on the per-example `rng`, so it is reproduced exactly on
  resume. After `max_retries` failed replacements a placeholder is returned and counted as
  'exhausted' (it only happens when most of a source is unreadable, which the monitor stops anyway).

  Returns the loaded example plus `_bad_kinds` int32[max_retries + 2] (the kind id of every failed
  attempt, then 'exhausted' if it came to that; -1 padded), `_bad_refs` int64[max_retries + 2]
  (the failed indices) and `_bad_causes` (the decoder's reason for each, e.g. "moov atom not
  found", fixed-width text so it batches like the rest), which the monitor turns into counters
  and file names with causes.
  """
  kinds = np.full(max_retries + 2, -1, np.int32)
  refs = np.full(max_retries + 2, -1, np.int64)
  causes = np.full(max_retries + 2, '', CAUSE_DTYPE)
  for attempt in range(max_retries + 1):
    try:
      example = load(index, rng)
      break
    except BadInput as e:
      kinds[attempt], refs[attempt] = KIND_ID[e.kind], index
      causes[attempt] = e.detail[:CAUSE_CHARS]
      index = int(rng.integers(size))
  else:
    kinds[-1] = KIND_ID['exhausted']
    example = placeholder()
  example['_bad_kinds'] = kinds
  example['_bad_refs'] = refs
  example['_bad_causes'] = causes
  return example


class BadInputMonitor:
  """Sums per-example failure records, names the failed files and enforces the abort threshold.

  Args:
    describe: maps (source id, record index) to a file name for messages.
    source_names: one name per source, for the realised-mix metrics.
    max_fraction: stop when failed attempts / all attempts exceeds this (default 1%).
    min_attempts: the fraction is only checked after this many attempts, so one bad file in the
      first batch does not stop a run.
    setting: the config key of `max_fraction`, named in the stop message.
  """

  def __init__(self, describe: Callable[[int, int], str], source_names: Sequence[str],
               max_fraction: float = 0.01, min_attempts: int = 500,
               source_sizes: Sequence[int] | None = None,
               setting: str = 'input.bad_input_max_fraction'):
    self._describe = describe
    self._setting = setting
    self.source_names = list(source_names)
    # Saved with the state: a resume whose index has changed says so (the order differs).
    self.source_sizes = list(source_sizes) if source_sizes is not None else None
    self.max_fraction, self.min_attempts = max_fraction, min_attempts
    self.counts = np.zeros(len(KINDS), np.int64)
    self.per_source = np.zeros(len(source_names), np.int64)
    self.examples = 0
    self.bad_files: dict[str, str] = {}  # file -> kind, first occurrence order

  def update(self, batch: dict[str, np.ndarray]) -> None:
    """Consumes the bookkeeping fields of one batch (removing them) and checks the threshold."""
    kinds, refs = batch.pop('_bad_kinds'), batch.pop('_bad_refs')
    causes = batch.pop('_bad_causes', None)
    units = batch.pop('_unit_source', batch['source'])  # one entry per loaded clip or image
    self.examples += len(units)
    self.per_source += np.bincount(batch['source'], minlength=len(self.source_names))
    if not (kinds >= 0).any():
      return
    self.counts += np.bincount(kinds[kinds >= 0], minlength=len(KINDS))
    for row, col in zip(*np.nonzero(kinds >= 0)):
      if refs[row, col] < 0:
        continue  # the 'exhausted' slot names no file
      name = self._describe(int(units[row]), int(refs[row, col]))
      if name not in self.bad_files:
        cause = str(causes[row, col]) if causes is not None else ''
        self.bad_files[name] = cause_text(KINDS[kinds[row, col]], cause)
        logging.warning('bad input (%s), replaced: %s', self.bad_files[name], name)
    self.check()

  def failed(self) -> int:
    return int(self.counts.sum() - self.counts[KIND_ID['exhausted']])

  def attempts(self) -> int:
    return self.examples + self.failed()

  def check(self) -> None:
    attempts, failed = self.attempts(), self.failed()
    if attempts >= self.min_attempts and failed > self.max_fraction * attempts:
      names = list(self.bad_files)
      listing = '\n  '.join(f'{n} ({self.bad_files[n]})' for n in names[:20])
      more = f'\n  ... and {len(names) - 20} more' if len(names) > 20 else ''
      raise TooManyBadInputs(
          f'{failed} of {attempts} examples ({failed / attempts:.2%}) failed to load, above the '
          f'configured maximum {self.max_fraction:.2%} ({self._setting}). '
          f'Bad files:\n  {listing}{more}')

  def metrics(self) -> dict[str, float]:
    """Scalars for logging: counts per kind, bad fraction, realised share of every source."""
    out = {f'data/bad_{k}': float(c) for k, c in zip(KINDS, self.counts)}  # e.g. data/bad_missing
    attempts = max(self.attempts(), 1)
    out['data/bad_fraction'] = self.failed() / attempts
    out['data/loaded'] = float(self.examples)  # clips/images loaded (k pairs each)
    total = max(int(self.per_source.sum()), 1)
    for name, n in zip(self.source_names, self.per_source):
      out[f'data/mix_{name}'] = float(n) / total
    return out

  def get_state(self) -> dict[str, Any]:
    return {'counts': self.counts.tolist(), 'per_source': self.per_source.tolist(),
            'examples': self.examples, 'bad_files': dict(self.bad_files),
            'source_sizes': self.source_sizes}

  def set_state(self, state: dict[str, Any]) -> None:
    self.counts = np.asarray(state['counts'], np.int64)
    self.per_source = np.asarray(state['per_source'], np.int64)
    self.examples = int(state['examples'])
    self.bad_files = dict(state['bad_files'])
    saved = state.get('source_sizes')
    if saved and self.source_sizes and list(saved) != self.source_sizes:
      changed = ', '.join(f'{n}: {a} -> {b}' for n, a, b in
                          zip(self.source_names, saved, self.source_sizes) if a != b)
      logging.warning('resuming with changed data: records per source at the checkpoint vs now '
                      '(%s); the model state is restored, but the data order from here on is '
                      'not the one the interrupted run would have seen', changed or
                      f'{len(saved)} sources -> {len(self.source_sizes)}')


# What every evaluation result with unreadable inputs says about its metrics.
DENOMINATOR_NOTE = ('metrics are over the readable examples only (the num_examples counts); '
                    'the files listed in unreadable are left out of every count')


class SkippedInputs:
  """Evaluation's record of the examples it could not read: each is left out of the metrics,
  logged once with its cause, and listed by `summary()` for the results file.

  Several processes may each read a share of a split: `gather()` (a collective) merges their
  records, so that every process holds the whole list.
  """

  def __init__(self, name: str = 'eval'):
    self.name = name
    self.files: dict[int, tuple[str, str]] = {}  # example index -> (file, cause)

  def add(self, index: int, error: BadInput) -> None:
    if index in self.files:
      return
    self.files[index] = (error.path or f'example {index}', cause_text(error.kind, error.detail))
    logging.warning('%s: unreadable input (%s), left out: %s', self.name, self.files[index][1],
                    self.files[index][0])

  def __len__(self) -> int:
    return len(self.files)

  def indices(self) -> list[int]:
    return sorted(self.files)

  def gather(self) -> None:
    """Merges every process's records (all processes must call it; one process: nothing)."""
    import jax  # keeps this module importable without jax in data workers
    if jax.process_count() == 1:
      return
    for records in _allgather_json([[i, f, c] for i, (f, c) in self.files.items()]):
      for i, f, c in records:
        self.files.setdefault(int(i), (f, c))

  def summary(self, prefix: str = '') -> dict[str, Any]:
    """The results entries: `{prefix}num_unreadable`, `{prefix}unreadable` ([{'file', 'cause'}]
    in example order) and `metrics_over`, which says what the metrics count; a total above zero
    is logged too."""
    listing = [{'file': f, 'cause': c} for _, (f, c) in sorted(self.files.items())]
    if listing:
      logging.warning('%s: %d unreadable input(s) left out; %s', self.name, len(listing),
                      DENOMINATOR_NOTE)
    return {f'{prefix}num_unreadable': len(listing), f'{prefix}unreadable': listing,
            'metrics_over': DENOMINATOR_NOTE}


def _allgather_json(obj: Any) -> list[Any]:
  """`obj` (JSON-serialisable) of every process, in process order."""
  from jax.experimental import multihost_utils
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int64))).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:len(data)] = data
  rows = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(bytes(row[:int(n)])) for row, n in zip(rows, sizes)]

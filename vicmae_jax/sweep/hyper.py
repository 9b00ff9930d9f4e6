"""Declaring a sweep's members, as big_vision's `get_hyper` does: lists of override dicts.

  def get_sweep(arg):
    return hyper.product([hyper.sweep('config.seed', [0, 1, 2]),
                          hyper.sweep('config.loss.contrastive_weight', [0.0, 1.0])])

Keys are dotted config paths (a leading `config.` is optional); the special keys `name` (the
member's folder), `group` (the arm its seeds are averaged over) and `config_arg` (the text after
the colon of `--config=FILE:ARG`, for changes an override cannot express, e.g. a list of
sources) are not overrides.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

Members = list[dict[str, Any]]


def sweep(key: str, values: Iterable[Any]) -> Members:
  """One member per value of `key`."""
  return [{key: v} for v in values]


def fixed(key: str, value: Any) -> Members:
  """A single member setting `key` (to combine with `product`)."""
  return [{key: value}]


def product(lists: Sequence[Members]) -> Members:
  """Every combination of one member from each list (the last list varies fastest)."""
  out = []
  for combo in itertools.product(*lists):
    merged: dict[str, Any] = {}
    for d in combo:
      clash = set(merged) & set(d)
      if clash:
        raise ValueError(f'product: key(s) {sorted(clash)} set twice')
      merged.update(d)
    out.append(merged)
  return out


def zipit(lists: Sequence[Members]) -> Members:
  """Member i of every list merged (the lists must have one length)."""
  if len({len(x) for x in lists}) > 1:
    raise ValueError(f'zipit: lists of lengths {[len(x) for x in lists]}')
  return [dict(itertools.chain.from_iterable(d.items() for d in ds)) for ds in zip(*lists)]

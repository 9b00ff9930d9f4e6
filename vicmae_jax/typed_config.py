"""Frozen dataclasses from config mappings: the typed boundary of the pretraining settings.

`from_mapping(Cls, mapping)` builds `Cls` from a dict or `ml_collections.ConfigDict`, nested
dataclass fields included; a key that `Cls` does not have is an error naming its full path
(a typo in a config file fails at once instead of being ignored), and keys left out take the
dataclass's defaults, so for a section read this way the dataclass is where its defaults live.
`to_dict(obj)` goes the other way, so a config file can start from the defaults and every key is
settable with `--config.key=value`. Users: `config_lib` (pretraining, and the model section of
every mode), `evaluation.config` (fine-tuning, probe, kNN, features), `data.config.InputConfig`,
`run_lib` (checkpoint settings).
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class UnknownKeyError(ValueError):
  """A config names keys its typed settings do not have."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _plain(mapping: Any) -> dict[str, Any]:
  if dataclasses.is_dataclass(mapping):
    return {f.name: getattr(mapping, f.name) for f in dataclasses.fields(mapping)}
  if hasattr(mapping, "to_dict"):
    return mapping.to_dict()
  return dict(mapping)


def _convert(hint: Any, value: Any, where: str) -> Any:
  if isinstance(hint, type) and dataclasses.is_dataclass(hint):
    return value if isinstance(value, hint) else from_mapping(hint, value, where)
  origin = typing.get_origin(hint)
  if origin is tuple and isinstance(value, (list, tuple)):
    return tuple(_plain(v) if hasattr(v, "to_dict") else v for v in value)
  return value


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | Any, where: str = "") -> T:
  """`cls(**mapping)` with nested dataclasses built too and unknown keys rejected by path."""
  data = _plain(mapping)
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - fields)
  if unknown:
    prefix = f"{where}." if where else ""
    raise UnknownKeyError(
        f"unknown key{'s' if len(unknown) > 1 else ''} "
        f"{', '.join(prefix + k for k in unknown)}; {cls.__name__} has: {', '.join(sorted(fields))}")
  hints = _hints(cls)
  kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
  try:
    return cls(**kwargs)
  except (TypeError, ValueError) as e:  # a dataclass's own checks (__post_init__)
    raise ValueError(f"{where or cls.__name__}: {e}") from e


def check(**conditions: bool) -> None:
  """For a dataclass's `__post_init__`: `check(**{"base_lr > 0": self.base_lr > 0, ...})`
  raises one ValueError naming every condition that does not hold (`from_mapping` adds the
  section's path)."""
  failed = [name for name, ok in conditions.items() if not ok]
  if failed:
    raise ValueError("needs " + ", ".join(failed))


def to_dict(obj: Any) -> dict[str, Any]:
  """A dataclass (nested ones included) as plain dicts and lists, for a ConfigDict."""
  def plain(v):
    if dataclasses.is_dataclass(v):
      return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, tuple):
      return [plain(x) for x in v]
    return v
  return plain(obj)

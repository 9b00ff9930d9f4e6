"""A sweep config's members: what each runs, where, and under which name and arm."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
from typing import Any

import ml_collections

from vicmae_jax import fs, paths

SPECIAL = ('name', 'group', 'config_arg')
_SAFE = re.compile(r'[^A-Za-z0-9._=,+-]')


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a sweep."""
  index: int
  name: str                      # its folder under the sweep's workdir
  group: str                     # its arm: members that differ only in seed share it
  seed: int | None
  config_arg: str | None         # FILE:ARG's ARG for this member
  overrides: tuple[tuple[str, Any], ...]  # (dotted key without `config.`, scalar value)

  def main_args(self, config_file: str, workdir: str) -> list[str]:
    """`python -m vicmae_jax.main` arguments that run this member into `workdir`."""
    config = config_file + (f':{self.config_arg}' if self.config_arg else '')
    return ([f'--config={config}', f'--workdir={workdir}'] +
            [f'--config.{k}={_flag_value(v)}' for k, v in self.overrides])

  def workdir(self, root: str) -> str:
    return fs.join(root, self.name)


def _flag_value(v: Any) -> str:
  return str(v)  # bools as True/False, numbers and strings as written: what absl parses back


def _key(k: str) -> str:
  return k[len('config.'):] if k.startswith('config.') else k


def _arg_items(arg: str | None) -> list[str]:
  return [x for x in (arg or '').split(',') if x]


def _seed(overrides: dict[str, Any], arg: str | None) -> int | None:
  if 'seed' in overrides:
    return int(overrides['seed'])
  for item in _arg_items(arg):
    k, _, v = item.partition('=')
    if k == 'seed' and v.lstrip('-').isdigit():
      return int(v)
  return None


def _default_name(overrides: dict[str, Any], arg: str | None, drop_seed: bool) -> str:
  parts = [x for x in _arg_items(arg) if not (drop_seed and x.partition('=')[0] == 'seed')]
  parts += [f'{k}={v}' for k, v in overrides.items() if not (drop_seed and k == 'seed')]
  name = _SAFE.sub('_', ','.join(parts)) or 'base'
  if len(name) > 120:  # file-name limits: keep a readable head and a hash of the whole
    name = name[:100] + '-' + hashlib.sha1(name.encode()).hexdigest()[:8]
  return name


def from_dicts(dicts: list[dict[str, Any]]) -> list[Member]:
  """Members from `get_sweep`'s list of dicts (hyper.py), with names checked unique."""
  out = []
  for i, d in enumerate(dicts):
    if not isinstance(d, dict):
      raise TypeError(f'sweep member {i} is {type(d).__name__}, not a dict of overrides')
    overrides = {_key(k): v for k, v in d.items() if k not in SPECIAL}
    for k, v in overrides.items():
      if not isinstance(v, (bool, int, float, str)):
        raise TypeError(f'sweep member {i}: {k}={v!r} is not a scalar; set structured values '
                        f'(lists, dicts) in the config from `config_arg` instead')
    arg = d.get('config_arg') or None
    name = d.get('name') or _default_name(overrides, arg, drop_seed=False)
    group = d.get('group') or _default_name(overrides, arg, drop_seed=True)
    out.append(Member(i, _SAFE.sub('_', name), group, _seed(overrides, arg), arg,
                      tuple(overrides.items())))
  names = [m.name for m in out]
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    raise ValueError(f'sweep members share names {twice}; give each a distinct `name`')
  return out


def load_module(config_file: str):
  """The config file as a module (its `configs.*` siblings importable, as for main)."""
  paths.import_configs_beside([f'--config={config_file}'])
  digest = hashlib.sha1(os.path.abspath(config_file).encode()).hexdigest()[:8]
  spec = importlib.util.spec_from_file_location(f'_sweep_config_{digest}', config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(config: str) -> tuple[str, list[Member], Any]:
  """`FILE[:ARG]` -> (FILE, its members from `get_sweep(ARG)`, the module)."""
  config_file, _, arg = config.partition(':')
  module = load_module(config_file)
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'{config_file} declares no sweep: define get_sweep(arg) returning a list of '
                     f'override dicts (vicmae_jax/sweep/hyper.py)')
  return config_file, from_dicts(list(module.get_sweep(arg or None))), module


def member_config(module, member: Member) -> ml_collections.ConfigDict:
  """The config the member runs (get_config(ARG) with the overrides applied)."""
  config = module.get_config(member.config_arg)
  for key, value in member.overrides:
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f'sweep member {member.name}: the config has no key {key!r}')
    node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], (int, float)) and not \
        isinstance(node[leaf], bool) else value
  return config


def describe(member: Member) -> str:
  return json.dumps({'name': member.name, 'group': member.group, 'seed': member.seed,
                     'config_arg': member.config_arg, 'overrides': dict(member.overrides)})

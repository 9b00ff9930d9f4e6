"""The typed config boundary: nested dataclasses from mappings, unknown keys named by path."""
import dataclasses

import ml_collections
import pytest

from vicmae_jax import config_lib, typed_config
from vicmae_jax.data import pipeline
from vicmae_jax.data.config import InputConfig, PairSampling


@dataclasses.dataclass(frozen=True)
class _Inner:
  a: int = 1
  b: tuple[int, ...] = (1, 2)


@dataclasses.dataclass(frozen=True)
class _Outer:
  inner: _Inner = _Inner()
  name: str = "x"


def test_nested_dataclasses_from_a_config_dict_and_back():
  c = ml_collections.ConfigDict(dict(inner=dict(a=3, b=[4, 5]), name="y"))
  out = typed_config.from_mapping(_Outer, c)
  assert out == _Outer(_Inner(3, (4, 5)), "y")
  assert typed_config.to_dict(out) == {"inner": {"a": 3, "b": [4, 5]}, "name": "y"}
  assert typed_config.from_mapping(_Outer, {}) == _Outer()  # defaults fill what is left out


def test_unknown_keys_are_rejected_with_their_path():
  with pytest.raises(typed_config.UnknownKeyError, match=r"cfg\.inner\.c\b.*_Inner has: a, b"):
    typed_config.from_mapping(_Outer, {"inner": {"c": 1}}, "cfg")
  with pytest.raises(typed_config.UnknownKeyError, match=r"input\.num_worker\b"):
    InputConfig.of({"sources": [], "num_worker": 2})


def test_input_config_reads_every_pipeline_key_and_validates_pair_sampling():
  cfg = InputConfig.of({"pair_sampling": {"mode": "fixed_gap", "gap": 4}, "reseek_s": 2.0})
  assert cfg.pair_sampling == PairSampling("fixed_gap", gap=4)
  assert cfg.reseek_s == 2.0 and cfg.num_workers == 0
  assert set(pipeline.DEFAULTS) == {f.name for f in dataclasses.fields(InputConfig)}
  with pytest.raises(ValueError, match="unknown pair sampling mode"):
    InputConfig.of({"pair_sampling": {"mode": "nearest"}})


def test_every_input_key_is_settable_in_a_recipe_and_typos_fail_validation():
  import configs.vitb_k400 as recipe
  c = recipe.get_config()
  # The keys a locked config used to hide are now there to set.
  for key in ("uint8_output", "reseek_s", "bad_input_max_retries"):
    assert key in c.input
  c.input.sources = [dict(kind="demo")]
  with c.unlocked():
    c.input.pair_sampling.mode = "nearest"
  with pytest.raises(config_lib.ConfigError, match="input.pair_sampling: unknown pair sampling mode"):
    config_lib.validate(c, device_count=8)


def test_input_config_resolves_demo_paths_without_writing(tmp_path):
  import configs.demo as demo
  c = demo.get_config("data=clips")
  cfg = config_lib.input_config(c, str(tmp_path))
  assert cfg.sources[0]["path"] == str(tmp_path / "demo_data")
  assert cfg.image_size == c.model.image_size
  assert not (tmp_path / "demo_data").exists()  # the pipeline makes the media, not the config


def test_a_mistyped_probe_optimizer_is_refused_before_training():
  """The in-loop probe first runs at the first readout, steps into training: its optimizer is
  checked with the rest of the config, at start-up."""
  import configs.demo as demo
  c = demo.get_config("data=clips")
  c.knn_eval.probe_optimizer = "adam"
  with pytest.raises(config_lib.ConfigError, match="probe_optimizer"):
    config_lib.validate(c, device_count=8)

"""Frozen-encoder features for a labelled split: cls and mean-pooled, every readable example
exactly once.

Output of `extract_features`: {'cls': [N, D], 'mean': [N, D], 'label': [N], 'index': [N]} as
numpy arrays, in source order; `index` is each row's example, so that rows still map to examples
when unreadable inputs were left out (listed in the caller's `SkippedInputs`). `save_features`
writes them as .npy files and optionally as ArrayRecord.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from vicmae_jax import fs
from vicmae_jax.data import badinput
from vicmae_jax.evaluation import augment
from vicmae_jax.evaluation import data as data_lib
from vicmae_jax.models import pool
from vicmae_jax.models.config import ModelConfig
from vicmae_jax.models.vit import ViTEncoder


def _features(graphdef, state, images):
  tokens = nnx.merge(graphdef, state)(images)
  return {"cls": pool(tokens, "cls"), "mean": pool(tokens, "mean")}


@functools.lru_cache(maxsize=16)
def _jitted_features(graphdef):
  # One jitted function per architecture, so repeated calls (in-loop kNN) reuse the compilation.
  return jax.jit(functools.partial(_features, graphdef))


@dataclasses.dataclass(frozen=True)
class FeatureStep:
  """The frozen encoder's feature step of an evaluation config for one mesh, abstract (see
  `train.CompiledStep`): what linear probing, kNN and feature extraction run per batch."""

  fn: Any
  state: Any
  batch: jax.ShapeDtypeStruct
  model_cfg: ModelConfig
  model_flops: float       # analytic forward FLOPs of one batch


def build_feature_step(config, mesh, batch_size: int) -> FeatureStep:
  """`compile_check`'s view of the frozen-encoder step: the config's architecture, the encoder
  replicated (or FSDP-sharded by the usual rules), a batch of images sharded over the mesh."""
  from vicmae_jax import flops, hardware, sharding
  from vicmae_jax.evaluation.config import eval_config
  config = eval_config(config)
  cfg = config.model
  graphdef, state = nnx.split(nnx.eval_shape(lambda: ViTEncoder(cfg, rngs=nnx.Rngs(0))))
  shardings = sharding.tree_shardings(state, mesh, config.mesh.fsdp_min_mb)
  state = sharding.skeleton(state, shardings)
  batch_sharding = sharding.batch_sharding(mesh)
  images = jax.ShapeDtypeStruct((batch_size, cfg.image_size, cfg.image_size, 3), jnp.float32,
                                sharding=batch_sharding)
  fn = jax.jit(hardware.bind(functools.partial(_features, graphdef), mesh),
               in_shardings=(shardings, batch_sharding), out_shardings=sharding.replicated(mesh))
  return FeatureStep(fn=fn, state=state, batch=images, model_cfg=cfg,
                     model_flops=batch_size * flops.encoder_fwd(cfg, cfg.num_patches))


def feature_fn(encoder: ViTEncoder):
  """(jitted fn(state, images) -> {'cls', 'mean'}, encoder state)."""
  graphdef, state = nnx.split(encoder)
  return _jitted_features(graphdef), state


def _host(x: jax.Array) -> np.ndarray:
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def extract_features(encoder: ViTEncoder, source: data_lib.LabelledSource, *, batch_size: int,
                     image_size: int, crop_pct: float = 0.875, sharding=None,
                     threads: int = 1, skipped: badinput.SkippedInputs | None = None,
                     name: str = "features") -> dict[str, np.ndarray]:
  """Features of every readable example of `source` (resize + centre crop), checked to be
  exactly once; unreadable ones are left out and recorded in `skipped` (every process's)."""
  fn, state = feature_fn(encoder)
  skipped = skipped if skipped is not None else badinput.SkippedInputs(name)
  out: dict[str, list[np.ndarray]] = {"cls": [], "mean": [], "label": [], "index": []}
  transform = lambda img: augment.eval_transform(img, size=image_size, crop_pct=crop_pct)  # noqa
  for batch in data_lib.eval_iterator(source, batch_size, transform=transform, sharding=sharding,
                                      threads=threads, skipped=skipped, name=name):
    feats = fn(state, batch["image"])
    keep = _host(batch["mask"]) > 0
    for k in ("cls", "mean"):
      out[k].append(_host(feats[k])[keep])
    out["label"].append(_host(batch["label"])[keep])
    out["index"].append(_host(batch["index"])[keep])
  result = {k: np.concatenate(v) for k, v in out.items()}
  skipped.gather()
  readable = np.setdiff1d(np.arange(len(source)), skipped.indices())
  if not np.array_equal(result["index"], readable):
    raise AssertionError(f"feature extraction covered {len(result['index'])} examples, not each "
                         f"of the {len(readable)} readable ones of {len(source)} exactly once")
  return result


def feature_batches(encoder: ViTEncoder, batches: Iterator[dict[str, Any]]
                    ) -> Iterator[tuple[dict[str, jax.Array], jax.Array]]:
  """({'cls', 'mean'} features, labels) of each batch of a (typically augmenting) train
  iterator, left sharded on the devices as the batch was."""
  fn, state = feature_fn(encoder)
  for batch in batches:
    yield fn(state, batch["image"]), batch["label"]


def save_features(directory: str, split: str, feats: dict[str, np.ndarray],
                  array_record: bool = False) -> list[str]:
  """Writes {split}_{cls,mean,label,index}.npy (and {split}_{readout}.array_record); returns paths.

  ArrayRecord records are `int64 label` followed by the float32 feature vector (little-endian),
  one record per example, in source order.
  """
  fs.makedirs(directory)
  paths = []
  for key, value in feats.items():
    path = fs.join(directory, f"{split}_{key}.npy")
    with fs.open(path, "wb") as f:
      np.save(f, value)
    paths.append(path)
  if array_record:
    from array_record.python.array_record_module import ArrayRecordWriter
    for key in ("cls", "mean"):
      path = fs.join(directory, f"{split}_{key}.array_record")
      # ArrayRecord writes local files only: staged, then copied when the workdir is remote.
      local = fs.local_staging(".array_record") if fs.is_url(path) else path
      writer = ArrayRecordWriter(local, "group_size:1")
      for label, vec in zip(feats["label"], feats[key]):
        writer.write(np.int64(label).tobytes() + vec.astype("<f4").tobytes())
      writer.close()
      if local != path:
        fs.copy_file(local, path)
        os.remove(local)
      paths.append(path)
  logging.info("features of %s written: %s", split, paths)
  return paths


def read_array_record(path: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
  """Inverse of the ArrayRecord layout above: (features [N, dim], labels [N])."""
  from array_record.python.array_record_module import ArrayRecordReader
  reader = ArrayRecordReader(path)
  records = reader.read_all()
  reader.close()
  labels = np.array([np.frombuffer(r[:8], np.int64)[0] for r in records])
  feats = np.stack([np.frombuffer(r[8:], "<f4") for r in records]) if records else \
      np.zeros((0, dim), np.float32)
  return feats, labels


def features_to_dict(x: Any) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in x.items()}

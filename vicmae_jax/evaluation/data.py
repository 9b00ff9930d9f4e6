"""Labelled image data for evaluation: sources, a resumable train iterator, exact-once eval batches.

Sources give `(uint8 HxWx3 image, int label)` by index:
  ArraySource        in-memory arrays (tests, small data sets)
  ImageFolderSource  ImageNet layout: root/<class name>/<image>; classes sorted by name
  TfdsLabelledSource `tfds.data_source` (imagenet2012, places365_small, ...), decoded here

The train iterator is a pure function of (seed, step): batch `s` takes positions
[s*V, (s+1)*V) of an infinite sequence of per-epoch permutations (V = B / repeats examples per
batch, each giving `repeats` rows: repeated augmentation), and every random choice comes from a
generator seeded with (seed, step, slot). Its state is just the step, so resuming a fine-tune
reproduces the uninterrupted run exactly.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
from typing import Any, Callable, Protocol

import jax
import numpy as np

from vicmae_jax.data import images as images_lib
from vicmae_jax.evaluation import augment, metrics
from vicmae_jax.sharding import local_rows, to_global


class LabelledSource(Protocol):
  num_classes: int

  def __len__(self) -> int: ...

  def get(self, i: int) -> tuple[np.ndarray, int]: ...


class ArraySource:
  def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int | None = None):
    self.images, self.labels = np.asarray(images), np.asarray(labels, np.int32)
    self.num_classes = int(num_classes or self.labels.max() + 1)

  def __len__(self) -> int:
    return len(self.labels)

  def get(self, i: int) -> tuple[np.ndarray, int]:
    return self.images[i], int(self.labels[i])


class ImageFolderSource:
  """root/<class>/<file> (ImageNet layout); `classes` fixes the label order across splits."""

  def __init__(self, root: str, classes: list[str] | None = None, max_side: int | None = 1024):
    self.root, self.max_side = root, max_side
    self.classes = classes or sorted(d for d in os.listdir(root)
                                     if os.path.isdir(os.path.join(root, d)))
    self.num_classes = len(self.classes)
    self.items: list[tuple[str, int]] = []
    for label, name in enumerate(self.classes):
      folder = os.path.join(root, name)
      if not os.path.isdir(folder):
        continue
      for f in sorted(os.listdir(folder)):
        if images_lib.is_image_file(f):
          self.items.append((os.path.join(folder, f), label))
    if not self.items:
      raise FileNotFoundError(f"No labelled images under {root} (expected root/<class>/<image>).")

  def __len__(self) -> int:
    return len(self.items)

  def get(self, i: int) -> tuple[np.ndarray, int]:
    path, label = self.items[i]
    return images_lib.read_image(path, self.max_side), label


class TfdsLabelledSource:
  def __init__(self, name: str, split: str, data_dir: str | None = None, *,
               image_key: str = "image", label_key: str = "label", max_side: int | None = 1024):
    import tensorflow_datasets as tfds  # lazy: slow import
    self.name, self.split = name, split
    self.image_key, self.label_key, self.max_side = image_key, label_key, max_side
    self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                                    decoders={image_key: tfds.decode.SkipDecoding()})
    self.num_classes = int(self._source.dataset_info.features[label_key].num_classes)

  def __len__(self) -> int:
    return len(self._source)

  def get(self, i: int) -> tuple[np.ndarray, int]:
    ex = self._source[i]
    img = images_lib.decode_image(ex[self.image_key], self.max_side, f"tfds:{self.name}[{i}]")
    return img, int(ex[self.label_key])


def build_source(spec: dict[str, Any], split: str) -> LabelledSource:
  """{'kind': 'image_folder', 'train': DIR, 'val': DIR},
  {'kind': 'toy', 'toy': 'color' | 'position', 'train_size': N, 'val_size': N} or
  {'kind': 'tfds', 'name': ..., 'train': 'train', 'val': 'validation', 'data_dir': ...}."""
  kind = spec["kind"]
  if kind == "toy":
    from vicmae_jax.evaluation import toy
    n = spec.get(f"{split}_size", 64)
    imgs, labels = toy.make_toy(spec.get("toy", "color"), n, num_classes=spec.get("num_classes", 4),
                                size=spec.get("size", 32), seed=spec.get("seed", 0) + (split != "train"))
    return ArraySource(imgs, labels, spec.get("num_classes", 4))
  if kind == "image_folder":
    classes = None
    if split != "train" and spec.get("train"):
      classes = sorted(d for d in os.listdir(spec["train"])
                       if os.path.isdir(os.path.join(spec["train"], d)))
    return ImageFolderSource(spec[split], classes=classes)
  if kind == "tfds":
    return TfdsLabelledSource(spec["name"], spec[split], spec.get("data_dir") or None,
                              image_key=spec.get("image_key", "image"),
                              label_key=spec.get("label_key", "label"))
  raise ValueError(f"Unknown labelled source kind {kind!r} (image_folder or tfds).")


class TrainIterator:
  """Infinite augmented, mixed batches {'image', 'target', 'label'} with step-only state.

  `transform(img, rng) -> float image` and `mix(images, labels, rng) -> (images, targets)`.
  Or `sample_fn(index, rng) -> [(float array, label)] * repeats`, which loads example `index`
  itself and returns `repeats` rows (repeated augmentation: a video decoded once, augmented
  `repeats` times); the rows of one example are adjacent in the batch.
  Works with `checkpointing.Checkpointer` (get_state / set_state, JSON-serialisable).
  """

  def __init__(self, source: LabelledSource, global_batch: int, seed: int, *,
               transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
               mix: Callable | None = None, sharding=None, threads: int = 1,
               sample_fn: Callable[[int, np.random.Generator], list[tuple[np.ndarray, int]]]
               | None = None, repeats: int = 1):
    if (transform is None) == (sample_fn is None):
      raise ValueError("give exactly one of transform and sample_fn")
    if repeats < 1 or (global_batch // jax.process_count()) % repeats:
      raise ValueError(f"the per-process batch {global_batch // jax.process_count()} is not a "
                       f"multiple of repeats={repeats}")
    self.source, self.batch, self.seed = source, global_batch, seed
    self.transform, self.mix, self.sharding = transform, mix, sharding
    self.sample_fn, self.repeats = sample_fn, repeats
    self.examples_per_batch = global_batch // repeats
    self.step = 0
    self._pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None
    self.num_examples = len(source)
    self._perm_cache: dict[int, np.ndarray] = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perm_cache:
      self._perm_cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(
          self.num_examples)}
    return self._perm_cache[epoch]

  def indices(self, step: int) -> np.ndarray:
    """The source indices of batch `step` (B / repeats of them)."""
    v = self.examples_per_batch
    pos = np.arange(step * v, (step + 1) * v)
    epochs, offs = pos // self.num_examples, pos % self.num_examples
    return np.array([self._perm(int(e))[o] for e, o in zip(epochs, offs)])

  def _load(self, args: tuple[int, int, int]) -> list[tuple[np.ndarray, int]]:
    step, slot, idx = args
    rng = np.random.default_rng([self.seed, step, slot, 1])
    if self.sample_fn is not None:
      rows = self.sample_fn(int(idx), rng)
      if len(rows) != self.repeats:
        raise ValueError(f"sample_fn gave {len(rows)} rows, expected repeats={self.repeats}")
      return rows
    img, label = self.source.get(int(idx))
    return [(self.transform(img, rng), label)]

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, Any]:
    step = self.step
    rows = local_rows(self.batch)
    slots = slice(rows.start // self.repeats, rows.stop // self.repeats)
    idx = self.indices(step)[slots]
    jobs = [(step, slots.start + r, i) for r, i in enumerate(idx)]
    groups = list(self._pool.map(self._load, jobs)) if self._pool else [self._load(j) for j in jobs]
    loaded = [row for group in groups for row in group]
    images = np.stack([x for x, _ in loaded]).astype(np.float32)
    labels = np.array([y for _, y in loaded], np.int32)
    if self.mix is not None:
      images, targets = self.mix(images, labels,
                                 np.random.default_rng([self.seed, step, jax.process_index(), 2]))
    else:
      targets = augment.smooth_one_hot(labels, self.source.num_classes, 0.0)
    self.step += 1
    return to_global({"image": images, "target": targets, "label": labels}, self.sharding)

  # Grain's Orbax handler stores non-DatasetIterator states as JSON bytes.
  def get_state(self) -> bytes:
    return json.dumps({"step": self.step, "seed": self.seed}).encode()

  def set_state(self, state: bytes | dict[str, Any]) -> None:
    if isinstance(state, (bytes, str)):
      state = json.loads(state)
    self.step = int(state["step"])

  def start_prefetch(self) -> None:
    """Called by Grain's checkpoint handler after a restore; nothing is prefetched here."""

  def close(self) -> None:
    if self._pool:
      self._pool.shutdown()


def eval_iterator(source: LabelledSource, global_batch: int, *,
                  transform: Callable[[np.ndarray], np.ndarray], sharding=None, threads: int = 1):
  """ceil(N / B) batches {'image', 'label', 'mask', 'index'} covering every example once.

  Each process decodes only its own rows of each global batch (`local_rows`); rows past the
  end of the split are zeros with mask 0, as `metrics.pad_batch` makes them.
  """
  pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None

  def load(idx: np.ndarray) -> dict[str, np.ndarray]:
    def one(i):
      img, label = source.get(int(i))
      return transform(img), label
    items = list(pool.map(one, idx)) if pool else [one(i) for i in idx]
    return {"image": np.stack([x for x, _ in items]).astype(np.float32),
            "label": np.array([y for _, y in items], np.int32),
            "index": np.asarray(idx, np.int64)}

  rows, n = local_rows(global_batch), len(source)
  template = None  # an empty batch of the right shapes, for a process with no real rows left
  try:
    for start in range(0, n, global_batch):
      positions = np.arange(start, start + global_batch)[rows]
      real = positions[positions < n]
      if len(real):
        local = load(real)
        template = {k: v[:0] for k, v in local.items()}
      else:
        if template is None:
          template = {k: v[:0] for k, v in load(np.zeros((1,), np.int64)).items()}
        local = template
      yield to_global(metrics.pad_batch(local, len(positions)), sharding)
  finally:
    if pool:
      pool.shutdown()

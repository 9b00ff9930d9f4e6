"""Labelled image data for evaluation: sources, a resumable Grain train input, exact-once eval batches.

Sources give `(uint8 HxWx3 image, int label)` by index (`get`):
  ArraySource                 in-memory arrays (tests, small data sets)
  data.sources.ImageFileSource  the pretraining image reader over a `data.index.Index`
                              (`image_folder` ImageNet layout, `image_csv` path,label lists)
  data.sources.TfdsImageSource  `tfds.data_source` (imagenet2012, places365_small, ...)

The train input is a pure function of (seed, step): batch `s` takes positions [s*V, (s+1)*V) of
an infinite sequence of per-epoch permutations (V = B / repeats examples per batch, each giving
`repeats` rows: repeated augmentation), and every random choice comes from a generator seeded
with (seed, step, slot). It runs on Grain as pretraining does (read threads, `mp_prefetch`
worker processes); the batches do not depend on the number of workers or threads, and the
saved state is just the step, so a resume replays the uninterrupted run exactly, with any
number of workers or threads.

Unreadable inputs (data/badinput.py): the train input replaces, counts and caps them as
pretraining does; the eval batches leave them out (mask 0) and record them for the results.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
from typing import Any, Callable, Protocol

import grain
import jax
import numpy as np

from vicmae_jax.data import badinput, index as index_lib, sources as sources_lib
from vicmae_jax.data.pipeline import start_workers
from vicmae_jax.evaluation import augment, metrics
from vicmae_jax.evaluation.progress import PassProgress
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


def describe(source: Any, i: int) -> str:
  """The file behind example `i` of a source, for messages (`example i` for in-memory ones)."""
  name = getattr(source, "describe", None)
  return name(i) if name is not None else f"example {i}"


def build_source(spec: dict[str, Any], split: str) -> LabelledSource:
  """The labelled split `split` of a spec naming one index per split (docs/evaluation.md):
  {'kind': 'image_folder' | 'image_csv', 'train': PATH, 'val': PATH, 'root': ...} (read by
  `data.index.read_split`, the pretraining sources' index readers),
  {'kind': 'tfds', 'name': ..., 'train': 'train', 'val': 'validation', 'data_dir': ...} or
  {'kind': 'toy', 'toy': 'color' | 'position', 'train_size': N, 'val_size': N} or
  {'kind': 'study', 'path': ROOT or '', 'data_scale': 1.0} (the study dataset's probe splits)."""
  kind = spec["kind"]
  if kind == "toy":
    from vicmae_jax.evaluation import toy
    n = spec.get(f"{split}_size", 64)
    imgs, labels = toy.make_toy(spec.get("toy", "color"), n, num_classes=spec.get("num_classes", 4),
                                size=spec.get("size", 32), seed=spec.get("seed", 0) + (split != "train"))
    return ArraySource(imgs, labels, spec.get("num_classes", 4))
  if kind == "study":  # the study dataset's probe splits (data/study_sources.py), made on first use
    from vicmae_jax.data import study_sources
    return sources_lib.ImageFileSource(study_sources.labelled_index(spec, split))
  if kind in index_lib.IMAGE_KINDS:
    index = index_lib.read_split(spec, split)
    if any(y < 0 for y in index.labels):
      raise index_lib.IndexFormatError(
          f"{index.origin}: unlabelled images; a labelled split needs class folders "
          "(root/<class>/<image>) or a path,label list")
    return sources_lib.ImageFileSource(index)
  if kind == "tfds":
    return sources_lib.TfdsImageSource(spec["name"], spec[split], spec.get("data_dir") or None,
                                       image_key=spec.get("image_key", "image"),
                                       label_key=spec.get("label_key", "label"))
  raise ValueError(f"Unknown labelled source kind {kind!r} "
                   f"({', '.join(index_lib.IMAGE_KINDS)} or tfds).")


# --- the train input ------------------------------------------------------------------------------
_BOOKKEEPING = ("_bad_kinds", "_bad_refs", "_bad_causes")  # load_with_retries' failure record

@dataclasses.dataclass
class _Slots:
  """Element e of this process's input -> (step, slot, source index): a random-access sequence
  Grain reads (picklable: worker processes compute their own permutations).

  Grain's `mp_prefetch` gives worker w the elements e = w, w + W, ... and takes whole batches
  from the workers in turn. So that a batch never depends on W, element e is row k % L of batch
  (k // L) * W + w (k = e // W, L rows per process and batch): worker w assembles batches
  w, w + W, ... and the round robin returns them in order. Rows are this process's block of
  slots, `process_index` * L onwards, of each global batch of V slots."""

  num_examples: int
  seed: int
  per_step: int        # V: examples per global batch
  local: int           # L: examples per process and batch
  process_index: int
  start_step: int
  workers: int = 1

  def __post_init__(self):
    self._perm = (-1, None)   # (epoch, permutation): one tuple, swapped whole (read threads)

  def __len__(self) -> int:
    return 2**62        # endless: epochs follow each other

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if not k.startswith("_perm")}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self.__post_init__()

  def index(self, step: int, slot: int) -> int:
    """The source index at global slot `slot` of batch `step` (per-epoch permutations)."""
    epoch, offset = divmod(step * self.per_step + slot, self.num_examples)
    cached = self._perm
    if cached[0] != epoch:
      cached = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_examples))
      self._perm = cached
    return int(cached[1][offset])

  def __getitem__(self, e: int) -> tuple[int, int, int]:
    w, k = e % self.workers, e // self.workers
    step = self.start_step + (k // self.local) * self.workers + w
    slot = self.process_index * self.local + k % self.local
    return step, slot, self.index(step, slot)


@dataclasses.dataclass
class _Load:
  """Grain map: (step, slot, index) -> {'image' [repeats, ...], 'label' [repeats], 'step'} plus
  the failure record of `badinput.load_with_retries` (a bad example is replaced by another
  drawn from the slot's own generator, as in pretraining: the same replacement on resume)."""

  source: Any
  seed: int
  repeats: int
  transform: Callable | None
  sample_fn: Callable | None
  max_retries: int = 5
  example_shape: tuple[int, ...] | None = None   # one row's shape, for the placeholder

  def _rows(self, idx: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if self.sample_fn is not None:
      rows = self.sample_fn(idx, rng)
      if len(rows) != self.repeats:
        raise ValueError(f"sample_fn gave {len(rows)} rows, expected repeats={self.repeats}")
    else:
      img, label = self.source.get(idx)
      rows = [(self.transform(img, rng), label)]
    return {"image": np.stack([x for x, _ in rows]).astype(np.float32),
            "label": np.array([y for _, y in rows], np.int32)}

  def _placeholder(self) -> dict[str, np.ndarray]:
    """Every retry failed: zero images with label -1, whose soft target is all zeros, so the
    rows add nothing to the loss (the monitor stops a run that gets here often)."""
    if self.example_shape is None:
      raise badinput.TooManyBadInputs(
          f"{self.max_retries + 1} inputs in a row failed to load for one example")
    return {"image": np.zeros((self.repeats,) + tuple(self.example_shape), np.float32),
            "label": np.full(self.repeats, -1, np.int32)}

  def __call__(self, item: tuple[int, int, int]) -> dict[str, np.ndarray]:
    step, slot, idx = item
    rng = np.random.default_rng([self.seed, step, slot, 1])
    out = badinput.load_with_retries(lambda i, r: self._rows(int(i), r), int(idx),
                                     len(self.source), rng, self.max_retries, self._placeholder)
    out["step"] = np.int64(step)
    return out


class TrainIterator:
  """Infinite augmented, mixed batches {'image', 'target', 'label'} with step-only state.

  `transform(img, rng) -> float image` and `mix(images, labels, rng) -> (images, targets)`.
  Or `sample_fn(index, rng) -> [(float array, label)] * repeats`, which loads example `index`
  itself and returns `repeats` rows (repeated augmentation: a video decoded once, augmented
  `repeats` times); the rows of one example are adjacent in the batch. `threads` read threads
  and `workers` Grain worker processes (0: in this process) load the examples.
  Works with `checkpointing.Checkpointer` (get_state / set_state, JSON-serialisable).

  Bad inputs follow pretraining's policy (data/badinput.py): an example that fails to load
  (`BadInput`: missing, corrupt, truncated file) is replaced by another drawn from its slot's
  generator, up to `max_retries` times (then a placeholder of `example_shape` that adds no loss);
  failures are counted by kind, each file logged once with its cause, and above `max_fraction`
  of the loads (checked after `min_examples`) the input stops with `TooManyBadInputs`. The
  counters are saved with the step.
  """

  def __init__(self, source: LabelledSource, global_batch: int, seed: int, *,
               transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
               mix: Callable | None = None, sharding=None, threads: int = 1, workers: int = 0,
               sample_fn: Callable[[int, np.random.Generator], list[tuple[np.ndarray, int]]]
               | None = None, repeats: int = 1, example_shape: tuple[int, ...] | None = None,
               max_retries: int = 5, max_fraction: float = 0.01, min_examples: int = 500):
    if (transform is None) == (sample_fn is None):
      raise ValueError("give exactly one of transform and sample_fn")
    if repeats < 1 or (global_batch // jax.process_count()) % repeats:
      raise ValueError(f"the per-process batch {global_batch // jax.process_count()} is not a "
                       f"multiple of repeats={repeats}")
    self.source, self.batch, self.seed = source, global_batch, seed
    self.mix, self.sharding, self.repeats = mix, sharding, repeats
    self.threads, self.workers = max(threads, 1), workers
    self.examples_per_batch = global_batch // repeats
    self.num_examples = len(source)
    self._load = _Load(source, seed, repeats, transform, sample_fn, max_retries, example_shape)
    self._monitor = badinput.BadInputMonitor(
        lambda _, i: describe(source, i), ["train"], max_fraction=max_fraction,
        min_attempts=min_examples, setting="data.bad_input_max_fraction")
    self._inner = None
    self.step = 0

  def indices(self, step: int) -> np.ndarray:
    """The source indices of batch `step` (B / repeats of them)."""
    v = self.examples_per_batch
    slots = _Slots(self.num_examples, self.seed, v, v, 0, step)
    return np.array([slots.index(step, j) for j in range(v)])

  def _open(self) -> Any:
    """The Grain iterator of this process's batches from `self.step` on."""
    local = self.examples_per_batch // jax.process_count()
    slots = _Slots(self.num_examples, self.seed, self.examples_per_batch, local,
                   jax.process_index(), self.step, max(self.workers, 1))
    ds = grain.MapDataset.source(slots).map(self._load)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=self.threads,
                                              prefetch_buffer_size=max(4 * self.threads, 2)))
    it = it.batch(local, drop_remainder=True)
    if self.workers > 0:
      it = start_workers(it, self.workers, buffer_size=2)
    return iter(it)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, Any]:
    if self._inner is None:
      self._inner = self._open()
    batch = next(self._inner)
    step = self.step
    if int(batch["step"][0]) != step:
      raise AssertionError(f"the input is at step {int(batch['step'][0])}, expected {step}")
    images = batch["image"].reshape((-1,) + batch["image"].shape[2:])
    labels = batch["label"].reshape(-1)
    if self.workers > 0:  # out of the workers' shared memory (see data.pipeline: _copy_out)
      images, labels = np.array(images), np.array(labels)
    self.step += 1  # as pretraining: the position is past a batch whose bad inputs stop the run
    units = len(batch["_bad_kinds"])
    self._monitor.update({key: np.array(batch[key]) for key in _BOOKKEEPING}
                         | {"source": np.zeros(len(labels), np.int32),
                            "_unit_source": np.zeros(units, np.int32)})
    if self.mix is not None:
      images, targets = self.mix(images, labels,
                                 np.random.default_rng([self.seed, step, jax.process_index(), 2]))
    else:
      targets = augment.smooth_one_hot(labels, self.source.num_classes, 0.0)
    return to_global({"image": images, "target": targets, "label": labels}, self.sharding)

  # Grain's Orbax handler stores non-DatasetIterator states as JSON bytes.
  def get_state(self) -> bytes:
    return json.dumps({"step": self.step, "seed": self.seed,
                       "bad_input": self._monitor.get_state()}).encode()

  def set_state(self, state: bytes | dict[str, Any]) -> None:
    if isinstance(state, (bytes, str)):
      state = json.loads(state)
    self.close()
    self.step = int(state["step"])
    if "bad_input" in state:  # absent from states saved before bad inputs were counted
      self._monitor.set_state(state["bad_input"])

  def metrics(self) -> dict[str, float]:
    """Bad-input counters by kind (`data/bad_missing`, ...), bad fraction, examples loaded."""
    return {k: v for k, v in self._monitor.metrics().items() if not k.startswith("data/mix_")}

  @property
  def bad_files(self) -> dict[str, str]:
    """Every file that failed to load so far -> its cause."""
    return dict(self._monitor.bad_files)

  def start_prefetch(self) -> None:
    """Called by Grain's checkpoint handler after a restore; the input opens on first use."""

  def close(self) -> None:
    inner, self._inner = self._inner, None
    if inner is not None and hasattr(inner, "close"):
      inner.close()


def eval_iterator(source: LabelledSource, global_batch: int, *,
                  transform: Callable[[np.ndarray], np.ndarray], sharding=None, threads: int = 1,
                  skipped: badinput.SkippedInputs | None = None, name: str = "eval"):
  """ceil(N / B) batches {'image', 'label', 'mask', 'index'} covering every readable example once.

  Each process decodes only its own rows of each global batch (`local_rows`); rows past the
  end of the split are zeros with mask 0, as `metrics.pad_batch` makes them, and so are the rows
  whose input cannot be read (`BadInput`), which are recorded in `skipped` (this process's share:
  `skipped.gather()` merges them). Progress lines are logged as `name`.
  """
  skipped = skipped if skipped is not None else badinput.SkippedInputs(name)
  progress = PassProgress(name, len(source))
  pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None
  rows, n = local_rows(global_batch), len(source)
  blank = None  # a zero row of the transform's output, for unreadable rows

  def row(i: int) -> tuple[np.ndarray, int]:
    img, label = source.get(i)
    return np.asarray(transform(img), np.float32), label

  def one(i: int) -> tuple[np.ndarray, int] | None:
    try:
      return row(int(i))
    except badinput.BadInput as e:
      skipped.add(int(i), e)
      return None

  def first_readable() -> np.ndarray:
    for i in range(n):
      try:
        return row(i)[0]
      except badinput.BadInput:
        continue
    raise badinput.TooManyBadInputs(f"{name}: none of the {n} examples can be read")

  def load(idx: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    nonlocal blank
    items = list(pool.map(one, idx)) if pool else [one(i) for i in idx]
    if blank is None:
      good = next((item[0] for item in items if item is not None), None)
      blank = np.zeros_like(good if good is not None else first_readable())
    # `blank` leads so that a process with no rows left still stacks to shape [0, ...].
    image = np.stack([blank] + [item[0] if item is not None else blank for item in items])[1:]
    label = np.array([item[1] if item is not None else 0 for item in items], np.int32)
    readable = np.array([item is not None for item in items], bool)
    return {"image": image, "label": label, "index": np.asarray(idx, np.int64)}, readable

  try:
    for start in range(0, n, global_batch):
      positions = np.arange(start, start + global_batch)[rows]
      local, readable = load(positions[positions < n])
      batch = metrics.pad_batch(local, len(positions))
      batch["mask"][:len(readable)] *= readable
      progress.update(min(start + global_batch, n) - start)
      yield to_global(batch, sharding)
    progress.finish()
  finally:
    if pool:
      pool.shutdown()

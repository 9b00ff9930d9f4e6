"""The pre-training input pipeline: weighted mixing, per-process sharding, batching, workers, resume.

    per source: index range -> shuffle(seed) -> repeat (reshuffled every epoch)
    mix(sources, weights)                       # deterministic interleave at the configured ratio
    random_map(load + two-view augment)         # Grain's per-index RNG: exact replay on resume
    ProcessBlocks(process_index, process_count) # a contiguous block of every global batch
    to_iter_dataset -> batch(drop_remainder) -> flatten k -> mp_prefetch(workers)
    PretrainIterator: bad-input monitor, optional global jax.Array assembly with device prefetch

Batch contract, per process (B = global_batch_size / process_count):
    view1, view2  float32 [B, H, W, 3], ImageNet-normalised (uint8 un-normalised with uint8_output)
    is_video      int32 [B]  1 = two frames of one video, 0 = two views of one image
    source        int32 [B]  index of the source in config.sources

Config keys (a dict, a ConfigDict or a data.config.InputConfig, where the defaults live; unknown
keys are errors):
    sources: list of {kind, path, weight, name, root, split, data_dir, labels, on_missing,
                      allow_outside_root (index entries may leave `root`; default: an error)}
      kind: 'kinetics_csv' (path = CSV, root = videos), 'video_csv' (path,label CSV), 'ssv2'
            (path = train JSON, root = webm folder, labels = labels.json), 'mit' / 'video_folder'
            (folder, class subfolders optional), 'image_folder' (ImageNet layout or flat),
            'image_csv', 'tfds' (path = dataset name, split, data_dir), 'frames' (ArrayRecord
            shards from extract_frames: a directory, glob or comma list)
      weight: mixing weight (default: the source's size, i.e. natural proportions)
    image_size: output side (224)
    pair_sampling: {mode: distant | fixed_gap | random_gap, gap, gap_max, unit: frames | seconds}
    repeated_sampling: k pairs (or image view pairs) per decoded clip/image; divides the batch
    video_spatial_only: frames get crop 0.5-1 + flip only (docs/decisions.md, D7)
    uint8_output: views as uint8 0-255 (normalise on device with augment.normalize)
    num_workers: mp_prefetch processes (0 = in-process); read_threads: threads per worker;
    worker_buffer_size: batches buffered per worker (2)
    decode_threads: FFmpeg threads per decode (1 is best with one worker per core)
    max_side: images/frames larger than this are downscaled before augmentation (1024)
    max_pixels: an image whose decode (after JPEG draft scaling) would exceed this many pixels is
      refused as a decompression bomb (200 M)
    reseek_s: seek instead of demuxing forward when the next frame is this far ahead (5 s)
    bad_input_max_fraction (0.01), bad_input_min_examples (500), bad_input_max_retries (5)
    device_prefetch: batches assembled on device ahead of use when a sharding is given (2)
    on_layout_change: a resume whose data position was saved with other num_workers or process
      count: 'error' (default: say what changed) or 'restart' (keep the model state, restart
      the data order)

Determinism: batches depend only on (config, seed, process_index, process_count, num_workers);
restoring `get_state()` into a fresh iterator replays the same batches bit for bit.
"""
from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from vicmae_jax import hardware, typed_config
from vicmae_jax.data import augment, badinput, sources as sources_lib, workers as workers_lib
from vicmae_jax.data.config import InputConfig
from vicmae_jax.sharding import to_global

# Every key with its default, as plain values (the defaults themselves live in InputConfig).
DEFAULTS: dict[str, Any] = typed_config.to_dict(InputConfig())

_BOOKKEEPING = ('_bad_kinds', '_bad_refs', '_bad_causes', '_unit_source', '_record')


def _plain(obj: Any) -> Any:
  return obj.to_dict() if hasattr(obj, 'to_dict') else dict(obj)


class LoadAndAugment:
  """Grain random_map transform: (source id, record) -> k augmented view pairs + failure record."""

  def __init__(self, sources: Sequence[sources_lib.PairSource], image_aug: augment.AugmentConfig,
               video_aug: augment.AugmentConfig, k: int, max_retries: int):
    self.sources, self.image_aug, self.video_aug = list(sources), image_aug, video_aug
    self.k, self.max_retries = k, max_retries

  def _placeholder(self) -> dict[str, Any]:
    return {'pairs': None}

  def _constant_views(self) -> list[tuple[np.ndarray, np.ndarray]]:
    """Mean-gray views (0 after normalisation) for an example whose retries were all bad."""
    size, cfg = self.image_aug.size, self.image_aug
    view = (np.full((size, size, 3), (124, 116, 104), np.uint8) if cfg.uint8_output
            else np.zeros((size, size, 3), np.float32))
    return [(view, view)] * self.k

  def __call__(self, element: tuple[int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    src_id, record = int(element[0]), int(element[1])
    src = self.sources[src_id]
    out = badinput.load_with_retries(lambda i, r: {'pairs': src.load(i, r, self.k)}, record,
                                     len(src), rng, self.max_retries, self._placeholder)
    cfg = self.video_aug if src.is_video else self.image_aug
    pairs = out.pop('pairs')
    views = (self._constant_views() if pairs is None
             else [augment.two_views(a, b, rng, cfg) for a, b in pairs])
    out['view1'] = np.stack([v[0] for v in views])
    out['view2'] = np.stack([v[1] for v in views])
    out['is_video'] = np.full(self.k, int(src.is_video), np.int32)
    out['source'] = np.full(self.k, src_id, np.int32)
    out['_unit_source'] = np.int32(src_id)
    out['_record'] = np.int64(record)  # requested record (before any replacement), for debugging
    return out


def _flatten_repeats(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """[units, k, ...] -> [units * k, ...] for the contract keys; bookkeeping stays per unit."""
  return {key: (x if key in _BOOKKEEPING else x.reshape((-1,) + x.shape[2:]))
          for key, x in batch.items()}


def ensure_absl_flags_parsed() -> None:
  # grain 0.2.18's mp_prefetch reads an absl flag; outside absl.app.run (scripts, notebooks,
  # pytest) that raises UnparsedFlagAccessError. Marking flags parsed is what app.run would do.
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def build_sources(config: Any) -> tuple[list[sources_lib.PairSource], list[str], list[float]]:
  """Creates (and validates) every source; returns them with their names and mixing weights."""
  config = InputConfig.of(config)
  srcs, names, weights = [], [], []
  specs = []
  for spec in map(_plain, config.sources):
    # `demo` and `study`: media the project makes itself (clips it encodes, photos scikit-image
    # ships), written under the spec's path on first use.
    if spec.get('kind') == 'demo':
      specs += demo_sources(spec['path'])
    elif spec.get('kind') == 'study':
      from vicmae_jax.data import study_sources
      specs.append(study_sources.pretrain_source(spec))
    else:
      specs.append(spec)
  for n, spec in enumerate(specs):
    src = sources_lib.build_source(spec, sampling=config.pair_sampling,
                                   threads=config.decode_threads, max_side=config.max_side,
                                   max_pixels=config.max_pixels,
                                   reseek_s=config.reseek_s)
    srcs.append(src)
    names.append(spec.get('name') or f'{n}_{spec["kind"]}')
    weights.append(float(spec['weight']) if spec.get('weight') is not None else float(len(src)))
    logging.info('data source %s: %d %s, weight %.3g', names[-1], len(src),
                 'videos' if src.is_video else 'images', weights[-1])
  if not srcs:
    raise ValueError('config.sources is empty')
  return srcs, names, weights


class ProcessBlocks(grain.MapDataset):
  """This process's share of every global batch: a contiguous block of `block` elements.

  A strided slice `[p::P]` would alias with the mixture's interleave (sources alternate
  v, i, v, i, ...), giving each process one source only; contiguous blocks keep every process's
  share at the configured ratio. Blocks of consecutive global batches are disjoint and together
  cover the stream, as a strided slice does.
  """

  def __init__(self, parent: grain.MapDataset, block: int, index: int, count: int):
    super().__init__(parent)
    self._block, self._index, self._count = block, index, count
    self._length = len(parent) // count

  def __len__(self) -> int:
    return self._length

  def _global(self, j: int) -> int:
    window, offset = divmod(j, self._block)
    return (window * self._count + self._index) * self._block + offset

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._global(index)]

  def _getitems(self, indices: Sequence[int]):
    return self._parent._getitems([self._global(j) for j in indices])  # pylint: disable=protected-access

  def __str__(self) -> str:
    return f"ProcessBlocks(block={self._block}, {self._index} of {self._count})"


def make_dataset(config: Any, srcs: Sequence[sources_lib.PairSource], weights: Sequence[float], *,
                 global_batch_size: int, seed: int, process_index: int, process_count: int):
  """The Grain IterDataset of per-process batches (bookkeeping fields included)."""
  config = InputConfig.of(config)
  k = config.repeated_sampling
  if global_batch_size % process_count:
    raise ValueError(f'global batch {global_batch_size} is not divisible by {process_count} processes')
  local = global_batch_size // process_count
  if local % k:
    raise ValueError(f'per-process batch {local} is not divisible by repeated_sampling={k}')
  parts = []
  for i, src in enumerate(srcs):
    ds = grain.MapDataset.range(len(src)).shuffle(seed=(seed * 1_000_003 + 7919 * (i + 1)) % 2**32)
    parts.append(ds.repeat().map(lambda r, i=i: (i, r)))
  mixed = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, list(weights))
  image_aug = augment.AugmentConfig(size=config.image_size, uint8_output=config.uint8_output)
  video_aug = augment.AugmentConfig(size=image_aug.size, uint8_output=image_aug.uint8_output,
                                    spatial_only=config.video_spatial_only)
  loader = LoadAndAugment(srcs, image_aug, video_aug, k, config.bad_input_max_retries)
  # The per-index RNG is drawn before the process split, so every example's randomness is a
  # function of its global index only (the same across process counts and worker counts).
  ds = ProcessBlocks(mixed.random_map(loader, seed=seed % 2**32), local // k, process_index,
                     process_count)
  threads = config.read_threads
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                            prefetch_buffer_size=max(4 * threads, 2)))
  it = it.batch(local // k, drop_remainder=True).map(_flatten_repeats)
  workers = config.num_workers
  if workers > 0:
    it = start_workers(it, workers, config.worker_buffer_size)
  return it


_CLEANED = False


def start_workers(it: grain.IterDataset, workers: int, buffer_size: int) -> grain.IterDataset:
  """`it` on `workers` Grain processes that exit with their parent; the first time in a process,
  the shared memory that killed runs left behind is freed (data/workers.py)."""
  global _CLEANED
  ensure_absl_flags_parsed()
  if not _CLEANED:
    workers_lib.remove_orphaned_shared_memory()
    _CLEANED = True
  return it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                     per_worker_buffer_size=buffer_size),
                        worker_init_fn=functools.partial(workers_lib.worker_init,
                                                         parent=os.getpid()))


class DataLayoutChanged(RuntimeError):
  """A checkpoint's data position was saved with other workers or processes than this run has.

  The checkpoint itself is sound (`not_a_torn_checkpoint`: the checkpointer must not fall back to
  an older step, which would have the same layout)."""

  not_a_torn_checkpoint = True


class PretrainIterator(grain.DatasetIterator):
  """Iterator over contract batches with bad-input monitoring and Grain-compatible state.

  `get_state()` / `set_state()` return/accept a JSON-serialisable dict (the Grain pipeline state
  plus the bad-input counters). Being a `grain.DatasetIterator`, it is saved in the same Orbax
  checkpoint as the model with `grain.checkpoint.CheckpointSave(it)` /
  `CheckpointRestore(it)` (one JSON file per process). With a sharding, batches are global
  jax.Arrays assembled `device_prefetch`
  steps ahead in a thread; the saved state is always the one right after the last batch returned.
  """

  def __init__(self, dataset, monitor: badinput.BadInputMonitor, sharding=None,
               device_prefetch: int = 0, layout: dict[str, int] | None = None,
               on_layout_change: str = 'error'):
    # Thread fields first: close() (also run by Grain at garbage collection) must always work.
    self._queue: queue.Queue | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self._dataset = dataset
    self._inner = iter(dataset)
    super().__init__(self._inner)
    self._monitor, self._sharding = monitor, sharding
    self._depth = device_prefetch if sharding is not None else 0
    self._state = self._inner.get_state()
    self.last_records: tuple[np.ndarray, np.ndarray] | None = None
    # What the pipeline position depends on besides the config and seed (Grain's per-worker
    # state): saved with it, compared on restore.
    self._layout = dict(layout or {})
    self._on_layout_change = on_layout_change
    # With workers, a batch arrives in shared memory, unlinked once its arrays are collected. On
    # an accelerator the copy to the devices lets them go at once; a CPU jax.Array (or a numpy
    # batch handed to the caller) may alias them and keep every segment alive, so those batches
    # are copied out first.
    self._copy_out = bool(self._layout.get('num_workers')) and (
        sharding is None or hardware.platform_of(list(sharding.device_set)) == 'cpu')

  # -- producer -------------------------------------------------------------------------------
  def _produce_one(self) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
    batch = next(self._inner)
    state = self._inner.get_state()
    # Copies: with workers these arrays live in shared memory, and one kept past its batch (as
    # `last_records` is) would keep its segment from being unlinked until the interpreter exits.
    books = {key: np.array(batch.pop(key)) for key in _BOOKKEEPING}
    books['source'] = np.array(batch['source'])
    if self._copy_out:
      batch = {key: np.array(value) for key, value in batch.items()}
    if self._sharding is not None:
      batch = to_global(batch, self._sharding)
    return batch, books, state

  def _run(self) -> None:
    while not self._stop.is_set():
      try:
        item = ('ok', self._produce_one())
      except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
        item = ('error', e)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if item[0] == 'error':
        return

  def _stop_thread(self) -> None:
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread, self._queue = None, None
      self._stop.clear()
      self._inner.set_state(self._state)  # drop batches produced ahead of the consumer

  # -- public API ---------------------------------------------------------------------------
  def __iter__(self):
    return self

  def __next__(self) -> dict[str, Any]:
    if self._depth:
      if self._thread is None:
        self._queue = queue.Queue(maxsize=self._depth)
        self._thread = threading.Thread(target=self._run, daemon=True, name='device_prefetch')
        self._thread.start()
      status, item = self._queue.get()
      if status == 'error':
        self._thread.join()
        self._thread, self._queue = None, None
        raise item
      batch, books, state = item
    else:
      batch, books, state = self._produce_one()
    self._state = state
    self.last_records = (books['_unit_source'], books['_record'])  # which records made this batch
    self._monitor.update({'_bad_kinds': books['_bad_kinds'], '_bad_refs': books['_bad_refs'],
                          '_bad_causes': books['_bad_causes'],
                          'source': books['source'], '_unit_source': books['_unit_source']})
    return batch

  def get_state(self) -> dict[str, Any]:
    return {'pipeline': self._state, 'monitor': self._monitor.get_state(),
            'layout': dict(self._layout)}

  def set_state(self, state: dict[str, Any]) -> None:
    self._stop_thread()
    saved = state.get('layout')
    problem = ''
    if saved is not None and saved != self._layout:
      problem = ', '.join(f'{k} {saved.get(k)} -> {v}' for k, v in self._layout.items()
                          if saved.get(k) != v)
    else:
      try:
        self._inner.set_state(state['pipeline'])
        self._state = state['pipeline']
      except (KeyError, ValueError, TypeError, IndexError) as e:  # an older checkpoint's layout
        problem = f'the saved position does not fit this pipeline ({type(e).__name__}: {e})'
    if problem:
      message = (f'the data position in the checkpoint was saved with another input layout '
                 f'({problem}).')
      if self._on_layout_change != 'restart':
        raise DataLayoutChanged(
            f'{message} Resume with the same input.num_workers and process count, or pass '
            f'--config.input.on_layout_change=restart to keep the model state and restart the '
            f'data order.')
      logging.warning('%s input.on_layout_change=restart: the model state is restored; the data '
                      'order starts again from its beginning.', message)
    self._monitor.set_state(state['monitor'])

  def metrics(self) -> dict[str, float]:
    """Bad-input counters by kind, bad fraction and the realised share of every source."""
    return self._monitor.metrics()

  def close(self) -> None:
    if getattr(self, '_inner', None) is None:
      return
    self._stop_thread()
    close = getattr(self._inner, 'close', None)
    if close is not None:
      close()
    # Let the closed Grain iterators go now: left to the interpreter's exit, their own __del__
    # runs after the modules it needs are gone and prints tracebacks.
    self._inner = self._dataset = None
    self._parents = ()
    self.last_records = None


def make_pretrain_iterator(config: Any, *, global_batch_size: int, seed: int,
                           process_index: int | None = None, process_count: int | None = None,
                           sharding=None) -> PretrainIterator:
  """Builds the pre-training iterator (see the module docstring for config keys and the contract).

  Args:
    config: dict or ConfigDict with at least `sources`.
    global_batch_size: examples per step over all processes.
    seed: data seed (shuffles, mixing, per-example randomness).
    process_index, process_count: this process's shard; default jax.process_index()/count().
    sharding: a jax.sharding.Sharding over the batch axis; when given, batches are global
      jax.Arrays built with jax.make_array_from_process_local_data.
  """
  if process_index is None or process_count is None:
    import jax
    process_index, process_count = jax.process_index(), jax.process_count()
  config = InputConfig.of(config)
  srcs, names, weights = build_sources(config)
  ds = make_dataset(config, srcs, weights, global_batch_size=global_batch_size, seed=seed,
                    process_index=process_index, process_count=process_count)
  monitor = badinput.BadInputMonitor(lambda s, i: srcs[s].describe(i), names,
                                     max_fraction=config.bad_input_max_fraction,
                                     min_attempts=config.bad_input_min_examples,
                                     source_sizes=[len(s) for s in srcs])
  it = PretrainIterator(ds, monitor, sharding, config.device_prefetch,
                        layout=dict(num_workers=config.num_workers, process_count=process_count),
                        on_layout_change=config.on_layout_change)
  # One epoch = one pass over every source once (the trainer derives steps per epoch from it).
  it.num_examples = sum(len(s) for s in srcs)
  it.source_names = list(names)
  return it


def data_metrics(iterator: PretrainIterator) -> dict[str, float]:
  """Scalars for the trainer's metric writer: bad inputs by kind and the realised mix ratio."""
  return iterator.metrics()


def demo_sources(root: str) -> list[dict[str, Any]]:
  """Source specs of the demo media under `root` (written there first if missing): synthetic
  H.264 clips plus scikit-image sample photos, no download. The clips are read as frames
  pre-extracted from them once (`synthetic.write_demo_data`, every frame kept), the production
  fast path: a pair is two small JPEG decodes, not an H.264 open, seek and decode."""
  from vicmae_jax.data import synthetic
  paths = synthetic.write_demo_data(root)
  return [dict(kind='frames', path=paths['frames'], weight=1.0, name='demo_videos'),
          dict(kind='image_folder', path=paths['images'], weight=1.0, name='demo_images')]


def demo_config(root: str, *, image_size: int = 224) -> dict[str, Any]:
  """A fully local config of the demo media (see `demo_sources`)."""
  return dict(sources=demo_sources(root), image_size=image_size, num_workers=0, read_threads=1,
              bad_input_min_examples=50)

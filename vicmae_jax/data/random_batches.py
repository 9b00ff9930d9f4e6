"""Random-tensor batches with the pipeline's contract, as a checkpointable Grain iterator.

For benchmarks and tests that need the trainer without decoding media: every batch is a
function of (seed, batch index), and the iterator's state restores like the real pipeline's.
"""
from __future__ import annotations

from typing import Any

import grain
import numpy as np

from vicmae_jax.sharding import to_global


class _MakeBatch(grain.transforms.Map):
  def __init__(self, local_batch: int, image_size: int, seed: int, process_index: int):
    self.shape = (local_batch, image_size, image_size, 3)
    self.seed, self.process_index = seed, process_index

  def map(self, index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((self.seed, self.process_index, int(index)))
    n = self.shape[0]
    return {"view1": rng.standard_normal(self.shape, dtype=np.float32),
            "view2": rng.standard_normal(self.shape, dtype=np.float32),
            "is_video": (np.arange(n) % 2).astype(np.int32),
            "source": np.zeros(n, np.int32)}


class RandomBatchIterator(grain.DatasetIterator):
  """Endless random batches; `get_state`/`set_state` as any Grain iterator."""

  def __init__(self, *, global_batch_size: int, image_size: int, seed: int, sharding=None,
               process_index: int = 0, process_count: int = 1, epoch_examples: int = 0):
    super().__init__()
    local = global_batch_size // process_count
    ds = grain.MapDataset.range(2**31 - 1).map(_MakeBatch(local, image_size, seed, process_index))
    self._inner = iter(ds.to_iter_dataset())
    self._sharding = sharding
    self.num_examples = epoch_examples or global_batch_size
    self.source_names = ["random"]

  def __next__(self) -> dict[str, Any]:
    batch = next(self._inner)
    return to_global(batch, self._sharding)

  def get_state(self) -> dict[str, Any]:
    return self._inner.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._inner.set_state(state)

  def metrics(self) -> dict[str, float]:
    return {}

  def close(self) -> None:
    pass

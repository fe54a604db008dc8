"""Examples from a TFDS builder, and a deterministic, resumable, shardable batch iterator.

The iterator draws global batches from a stream that concatenates one seeded
permutation of the examples per epoch; batch k is a pure function of (seed, k),
so a run resumes exactly from a saved position. With several processes each
takes its own contiguous slice of every global batch.
"""
import os

import numpy as np
import tensorflow_datasets as tfds

from hybrid_rl.data import builders

tfds.disable_progress_bar()

# Decoded splits by (builder directory, split): TFDS decodes ~3k rows/s, and one
# quickstart process has 30 or more stages reading the same 15000-row train slice.
_LOADED: dict[tuple[str, str], tuple[dict, ...]] = {}


def _decode(row: dict) -> dict:
  out = {k: (v.decode("utf-8") if isinstance(v, bytes) else v) for k, v in row.items()}
  out["level"] = int(out["level"])
  return out


def load_examples(name: str, split: str, data_dir: str, *, manual_dir: str | None = None,
                  **config) -> list[dict]:
  """All examples of one split as dicts of Python values, in the builder's order.

  `split` takes TFDS slicing ("train[:40%]", "train[40%:]"), so stages can
  use disjoint parts of one split (SFT, RL and reward-model data).

  Builds the dataset on first use (synthetic_math: generated; gsm8k / math:
  from manual_dir, once per content of its files) and reuses it afterwards;
  a split read once is kept for the process, so callers must not modify the dicts.
  """
  download_config = None
  if manual_dir is not None:
    manual_dir = os.path.expanduser(manual_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder = builders.make_builder(name, data_dir, manual_dir, **config)
  builder.download_and_prepare(download_config=download_config)
  base = split.split("[", 1)[0]
  if base not in builder.info.splits:
    raise ValueError(f"dataset {name!r} has no split {base!r} (has {', '.join(builder.info.splits)})")
  key = (builder.data_dir, split)
  if key not in _LOADED:
    source = builder.as_data_source(split=split)
    _LOADED[key] = tuple(_decode(row) for row in source.__getitems__(range(len(source))))
  return list(_LOADED[key])


def batch_indices(num_examples: int, global_batch: int, seed: int, position: int,
                  shard_index: int = 0, shard_count: int = 1) -> np.ndarray:
  """Example indices of this shard's slice of global batch number `position`.

  Returns an int64 array of global_batch // shard_count indices.
  """
  if global_batch % shard_count:
    raise ValueError(f"global batch {global_batch} does not split over {shard_count} processes")
  if num_examples <= 0:
    raise ValueError("cannot draw batches from an empty dataset")
  per_shard = global_batch // shard_count
  start = position * global_batch + shard_index * per_shard
  stream = np.arange(start, start + per_shard)
  epochs, offsets = np.divmod(stream, num_examples)
  out = np.empty(per_shard, np.int64)
  for epoch in np.unique(epochs):
    perm = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    out[epochs == epoch] = perm[offsets[epochs == epoch]]
  return out


class BatchIterator:
  """Iterates batches of examples; `position` is the number of batches drawn."""

  def __init__(self, examples: list[dict], global_batch: int, *, seed: int, position: int = 0,
               shard_index: int = 0, shard_count: int = 1):
    self.examples = examples
    self.global_batch = global_batch
    self.seed = seed
    self.position = position
    self.shard_index = shard_index
    self.shard_count = shard_count
    batch_indices(len(examples), global_batch, seed, 0, shard_index, shard_count)  # validate

  def __iter__(self):
    return self

  def __next__(self) -> list[dict]:
    idx = batch_indices(len(self.examples), self.global_batch, self.seed, self.position,
                        self.shard_index, self.shard_count)
    self.position += 1
    return [self.examples[i] for i in idx]

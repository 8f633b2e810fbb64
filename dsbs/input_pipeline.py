"""SeqIO task or mixture -> converted, batched global batches with a restorable position.

Input shards. The train split is read as `num_shards` disjoint shards (`seqio.ShardInfo`: shard
s holds every num_shards-th record from s, so the union of the shards is the whole split, in
every epoch), each a tf.data pipeline that batches `global_batch // num_shards` rows. A global
batch is the concatenation of the shards' batches in shard order: shard s fills rows
[s * rows, (s + 1) * rows). A process reads exactly the shards whose rows its devices hold
(`dsbs.multihost.local_rows`), so each host reads its own part of the split; with one shard per
data-parallel host (the default, T5X's rule) no two hosts read the same example. The data order
depends on the number of shards, not on the number of processes: one process reading 2 shards
builds the same global batches as 2 processes reading one each.

Restoring the position: `TrainInput.save(dir)` writes each of its shards' tf.data iterator
state (`tf.train.Checkpoint(iterator=...)`: shuffle buffers, prefetched batches and all) beside
the Orbax step, and `restore(dir)` reads it back, so a resumed run continues with the very next
batch without re-reading what it consumed. Measured on `arith` (2 CPU cores shared with other
work; `python -m dsbs.bench --input_resume=N`, batch 16): back at batch 1,000 in 2.2 s by
restoring against 6.7 s by skipping the consumed batches, at batch 4,000 in 2.9 s against
34.8 s; with default.gin's batch of 32, 2.8 s against 13.1 s at batch 1,000. Skipping grows
with the position, restoring does not.

Evaluation (`eval_batches`): every process reads the whole (small) split in order and supplies
its rows of each global batch; the last batch is padded with rows whose loss weights are zero,
so every process runs the same number of batches.

SeqIO and TensorFlow (~6 s to import) are imported by the functions that build a pipeline: the
runner and the benchmark import this module, and the benchmark runs where neither is installed.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """Where batches come from; `converter` is the feature converter instance."""
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  global_batch_size: int
  converter: Any
  split: str = "train"
  seed: int = 0
  shuffle: bool = True


def _task_dataset(config: InputConfig, shard: tuple[int, int] | None, num_epochs: int | None):
  """The preprocessed examples of `config` (shard = (index, count), or None for all)."""
  import seqio  # pylint: disable=g-import-not-at-top  (see the module docstring)
  provider = seqio.get_mixture_or_task(config.mixture_or_task_name)
  kwargs = {}
  if isinstance(provider, seqio.Mixture):
    # Mixtures drop features that are not output features; the converter needs `task_kind`.
    kwargs["passthrough_features"] = ["task_kind"]
  info = None if shard is None else seqio.ShardInfo(index=shard[0], num_shards=shard[1])
  return provider.get_dataset(
      sequence_length=dict(config.task_feature_lengths), split=config.split,
      shuffle=config.shuffle, seed=config.seed, shard_info=info, num_epochs=num_epochs,
      use_cached=False, **kwargs)


def examples(config: InputConfig, shard: tuple[int, int] | None = None,
             num_epochs: int | None = 1):
  """The task's examples before conversion (ids and texts kept), one shard or all."""
  return _task_dataset(config, shard, num_epochs)


def converted_dataset(config: InputConfig, *, shard: tuple[int, int] | None, rows: int,
                      num_epochs: int | None, drop_remainder: bool):
  """The tf.data dataset of one shard's (or, with shard None, all) batches of `rows` rows."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (see the module docstring)
  ds = _task_dataset(config, shard, num_epochs)
  ds = config.converter(ds, dict(config.task_feature_lengths))
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  return ds.batch(rows, drop_remainder=drop_remainder)


class InputShardError(ValueError):
  """Input shards that do not fit the batch or the rows a process holds."""


def shards_for_rows(rows: Sequence[int], global_batch_size: int, num_shards: int) -> list[int]:
  """The input shards whose rows of a global batch are exactly `rows` (this process's)."""
  if num_shards < 1 or global_batch_size % num_shards:
    raise InputShardError(f"BATCH_SIZE={global_batch_size} does not split into {num_shards} "
                          "input shards (TrainConfig.input_shards)")
  per = global_batch_size // num_shards
  mine = set(int(r) for r in rows)
  shards = [s for s in range(num_shards) if mine & set(range(s * per, (s + 1) * per))]
  covered = set().union(*(range(s * per, (s + 1) * per) for s in shards)) if shards else set()
  if covered != mine:
    raise InputShardError(f"this process holds rows {sorted(mine)[:4]}... of the batch of "
                          f"{global_batch_size}, which do not fall on whole input shards of {per} "
                          "rows; set TrainConfig.input_shards to a multiple of the data-parallel "
                          "processes")
  return shards


class TrainInput:
  """Endless local batches of this process's input shards, with a checkpointable position."""

  def __init__(self, config: InputConfig, num_shards: int, rows: Sequence[int] | None = None):
    """`rows`: the global batch rows this process supplies (default: all)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (see the module docstring)
    self._tf = tf
    rows = range(config.global_batch_size) if rows is None else rows
    self.num_shards = num_shards
    self.shards = shards_for_rows(rows, config.global_batch_size, num_shards)
    per = config.global_batch_size // num_shards
    self._iters = [
        iter(converted_dataset(config, shard=(s, num_shards), rows=per, num_epochs=None,
                               drop_remainder=True).prefetch(2))
        for s in self.shards]

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    parts = [next(it) for it in self._iters]
    return {k: np.concatenate([p[k].numpy() for p in parts]) if len(parts) > 1
            else parts[0][k].numpy() for k in parts[0]}

  def _prefix(self, directory: str, shard: int) -> str:
    return os.path.join(directory, f"shard-{shard:05d}-of-{self.num_shards:05d}")

  def save(self, directory: str) -> None:
    """Writes this process's shards' iterator states into `directory` (which exists)."""
    for s, it in zip(self.shards, self._iters):
      self._tf.train.Checkpoint(iterator=it).write(self._prefix(directory, s))

  def restore(self, directory: str) -> None:
    """Continues each shard where `save` left it."""
    for s, it in zip(self.shards, self._iters):
      prefix = self._prefix(directory, s)
      if not self._tf.io.gfile.exists(prefix + ".index"):
        raise FileNotFoundError(f"{directory}: no saved position of input shard {s} of "
                                f"{self.num_shards}")
      self._tf.train.Checkpoint(iterator=it).read(prefix).assert_consumed()


def train_batches(config: InputConfig, num_shards: int = 1) -> Iterator[Batch]:
  """Endless global batches from the start, read by this one process."""
  return TrainInput(config, num_shards)


def eval_batches(config: InputConfig, rows: Sequence[int] | None = None) -> Iterator[Batch]:
  """One pass over a split in order, in global batches; yields this process's `rows` of each.

  The last batch is padded with rows whose loss weights are zero (and zero tokens).
  """
  size = config.global_batch_size
  ds = converted_dataset(dataclasses.replace(config, shuffle=False), shard=None, rows=size,
                         num_epochs=1, drop_remainder=False)
  rows = None if rows is None else np.asarray(rows)
  for batch in ds.as_numpy_iterator():
    batch = pad_batch(dict(batch), size)
    yield batch if rows is None else {k: v[rows] for k, v in batch.items()}


def pad_batch(batch: Batch, size: int) -> Batch:
  """Pads every feature to `size` rows with zeros (zero loss weight, zero tokens)."""
  n = len(next(iter(batch.values())))
  if n == size:
    return batch
  return {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}


def to_global(batch: Batch, shardings: Mapping[str, Any]) -> dict[str, Any]:
  """Builds global arrays from this process's rows (no-op reshaping on one process)."""
  return {k: jax.make_array_from_process_local_data(shardings[k], v) for k, v in batch.items()
          if k in shardings}


def loss_weighting_converter(pack: bool = False, alpha: float = 0.5, loss_mode: str = "paper"):
  """The dsbs feature converter, also emitting `decoder_task_kind` for per-task train metrics."""
  # the converter is a SeqIO class (see the module docstring)
  from dsbs.seqio_ext import feature_converters as fc  # pylint: disable=g-import-not-at-top

  return fc.DsbsEncDecFeatureConverter(pack=pack, alpha=alpha, loss_mode=loss_mode,
                                       emit_task_kind=True)


def subtasks(mixture_or_task: Any) -> list[Any]:
  """The tasks of a SeqIO mixture (or the task itself), by provider or registered name."""
  if isinstance(mixture_or_task, str):
    import seqio  # pylint: disable=g-import-not-at-top  (see the module docstring)
    mixture_or_task = seqio.get_mixture_or_task(mixture_or_task)
  if hasattr(mixture_or_task, "tasks"):
    return list(mixture_or_task.tasks)
  return [mixture_or_task]

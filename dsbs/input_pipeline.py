"""SeqIO task or mixture -> converted, batched, sharded global batches with a restorable position.

Multi-host: each process reads its own shard (`seqio.ShardInfo(index=process_index,
num_shards=process_count)`), batches `global_batch // process_count` rows, and
`jax.make_array_from_process_local_data` assembles the global array over the mesh.

Restoring the position: with a fixed seed a SeqIO dataset is deterministic, so a run that has
consumed N batches resumes by skipping N batches of the same pipeline (`skip_batches`). The
number is saved in every checkpoint's meta (`batches_consumed`). Skipping re-reads the skipped
examples (cheap next to training for these datasets); change the seed, batch size, feature
lengths or process count and the position no longer means the same data, so those are checked
against the checkpoint on resume.

SeqIO and TensorFlow (~6 s to import) are imported by the functions that build a pipeline: the
runner and the benchmark import this module, and the benchmark runs where neither is installed.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping

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


def shard_info():
  import seqio  # pylint: disable=g-import-not-at-top  (see the module docstring)
  return seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())


def local_batch_size(global_batch_size: int) -> int:
  n = jax.process_count()
  if global_batch_size % n:
    raise ValueError(f"BATCH_SIZE={global_batch_size} is not divisible by the {n} processes")
  return global_batch_size // n


def converted_dataset(config: InputConfig, *, num_epochs: int | None, drop_remainder: bool):
  """The tf.data dataset of this process's batches (numpy-ready feature dicts)."""
  import seqio  # pylint: disable=g-import-not-at-top  (see the module docstring)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  provider = seqio.get_mixture_or_task(config.mixture_or_task_name)
  kwargs = {}
  if isinstance(provider, seqio.Mixture):
    # Mixtures drop features that are not output features; the converter needs `task_kind`.
    kwargs["passthrough_features"] = ["task_kind"]
  ds = provider.get_dataset(
      sequence_length=dict(config.task_feature_lengths), split=config.split,
      shuffle=config.shuffle, seed=config.seed, shard_info=shard_info(),
      num_epochs=num_epochs, use_cached=False, **kwargs)
  ds = config.converter(ds, dict(config.task_feature_lengths))
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  return ds.batch(local_batch_size(config.global_batch_size), drop_remainder=drop_remainder)


def train_batches(config: InputConfig, skip_batches: int = 0) -> Iterator[Batch]:
  """Endless local batches, starting after `skip_batches` already consumed ones."""
  ds = converted_dataset(config, num_epochs=None, drop_remainder=True)
  if skip_batches:
    ds = ds.skip(skip_batches)
  ds = ds.prefetch(2)
  for batch in ds.as_numpy_iterator():
    yield dict(batch)


def eval_batches(config: InputConfig) -> Iterator[Batch]:
  """One pass over a split; the last batch is padded with rows whose loss weights are zero."""
  ds = converted_dataset(dataclasses.replace(config, shuffle=False), num_epochs=1,
                         drop_remainder=False)
  size = local_batch_size(config.global_batch_size)
  for batch in ds.as_numpy_iterator():
    yield pad_batch(dict(batch), size)


def pad_batch(batch: Batch, size: int) -> Batch:
  """Pads every feature to `size` rows with zeros (zero loss weight, zero tokens)."""
  n = len(next(iter(batch.values())))
  if n == size:
    return batch
  return {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}


def to_global(batch: Batch, shardings: Mapping[str, jax.sharding.Sharding]) -> dict[str, jax.Array]:
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

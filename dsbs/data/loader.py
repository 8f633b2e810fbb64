"""`load_examples(dataset, split)`: the one entry point for canonical examples of any dataset."""
from __future__ import annotations

from dsbs.data import benchmarks, datadir, released, synthetic
from dsbs.data.record import Example


def load_examples(dataset: str, split: str, data_dir: str | None = None) -> list[Example]:
  """Canonical examples of a released benchmark or of the synthetic `arith` set.

  Args:
    dataset: one of `benchmarks.ALL_DATASETS` ("anli1", "esnli", "cqa", "svamp", "arith").
    split: "train", "validation" or "test".
    data_dir: released-data dir (default: `resolve_data_dir()`); unused for `arith`.

  Raises:
    MissingSplitError: the split's file is not in the data dir.
    RecordError: a malformed row (names file, line and field).
  """
  if split not in benchmarks.SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {benchmarks.SPLITS}")
  if dataset in benchmarks.SYNTHETIC:
    return synthetic.load_split(split)
  benchmarks.get_spec(dataset)  # fail on an unknown name before touching the data dir
  return released.load_released(dataset, split, datadir.resolve_data_dir(data_dir))

"""Lazy SeqIO data sources over canonical records, one per (dataset, variant, fraction).

Nothing is read at registration. The first `get_dataset` or `num_input_examples` call loads the
split through the dataset's loader (for the built-in benchmarks `dsbs.data.load_examples`),
caches it in process, subsets train (`fractions.nested_subset`, BEFORE any filtering so that
label and rationale tasks of one fraction see the same inputs), then selects the records the
variant can use. What each variant reads, per split:

  variant      train                                    validation / test
  label_gt     gold label                                gold label
  finetune     gold label                                gold label
  label_llm    teacher label, parse_status OK only       gold label (students are scored on gold)
  distill      teacher label, parse_status OK only       gold label
  rationale    teacher rationale, parse_status OK only   teacher rationale, OK only
  cot          OK only: rationale + teacher label        gold label (+ rationale when OK, else "")

Records a variant cannot use (no gold label, teacher output not OK) are skipped, counted per
reason and logged once per (task source, split); `skip_counts` returns the counts.

Where the built-in records come from ($DSBS_SOURCE, read on `import dsbs.tasks`):
  "records" (default)  `dsbs.data.load_examples`: parses the released files / generates arith.
  "tfds"               the data layer's TFDS builders (`dsbs_<dataset>`), prepared beforehand with
                       `python -m dsbs.data prepare` into $DSBS_TFDS_DIR (default: TFDS's dir).
Both feed the same RecordSource, so fractions, filters and task names are identical.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import random
import threading
from typing import Callable, Mapping, Sequence

import seqio
import tensorflow as tf

from dsbs.data import record
from dsbs.tasks import fractions

VARIANTS = ("label_gt", "label_llm", "rationale", "cot", "finetune", "distill")
_GOLD_ON_EVAL = ("label_llm", "distill", "cot")
FIELDS = ("id", "input", "label", "rationale")

Loader = Callable[[str], Sequence[record.Example]]

_lock = threading.Lock()
_split_cache: dict[tuple, tuple[record.Example, ...]] = {}
_rows_cache: dict[tuple, tuple[dict[str, list[str]], collections.Counter]] = {}


def clear_cache() -> None:
  """Drops every cached split (e.g. after the data on disk changed)."""
  with _lock:
    _split_cache.clear()
    _rows_cache.clear()


def forget(name: str) -> None:
  """Drops the cached records of one dataset (its files were replaced)."""
  with _lock:
    for cache in (_split_cache, _rows_cache):
      for key in [k for k in cache if k[0] == name]:
        del cache[key]


def _env_key() -> tuple[str, ...]:
  # The built-in loaders resolve the data dir from the environment: key the cache on it.
  return (os.environ.get("DSBS_DATA_DIR", ""),)


def load_split(name: str, loader: Loader, split: str) -> tuple[record.Example, ...]:
  """All records of one split, read once per process (per data dir)."""
  key = (name, split) + _env_key()
  with _lock:
    if key in _split_cache:
      return _split_cache[key]
  examples = tuple(loader(split))
  with _lock:
    _split_cache[key] = examples
  return examples


def select(examples: Sequence[record.Example], variant: str, split: str
           ) -> tuple[dict[str, list[str]], collections.Counter]:
  """Columns (FIELDS) of the records `variant` uses on `split`, and skip counts by reason."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
  cols: dict[str, list[str]] = {f: [] for f in FIELDS}
  skipped: collections.Counter = collections.Counter()
  train = split == "train"
  for ex in examples:
    ok = ex.parse_status == record.OK and ex.rationale and ex.teacher_label
    rationale = ""
    if variant == "rationale":
      if not ok:
        skipped[f"parse_status={ex.parse_status}"] += 1
        continue
      label, rationale = ex.teacher_label, ex.rationale
    elif variant in _GOLD_ON_EVAL and train:
      if not ok:
        skipped[f"parse_status={ex.parse_status}"] += 1
        continue
      label = ex.teacher_label
      rationale = ex.rationale if variant == "cot" else ""
    else:  # gold label
      if ex.label is None or not ex.label.strip():
        skipped["no gold label"] += 1
        continue
      label = ex.label
      if variant == "cot" and ok:
        rationale = ex.rationale
    cols["id"].append(ex.id)
    cols["input"].append(ex.input)
    cols["label"].append(label)
    cols["rationale"].append(rationale or "")
  return cols, skipped


class TfdsLoader:
  """split -> canonical records read from a prepared `dsbs_<dataset>` TFDS dataset."""

  def __init__(self, dataset: str, tfds_data_dir: str | None = None):
    self.dataset, self.tfds_data_dir = dataset, tfds_data_dir

  def __repr__(self) -> str:
    return f"TfdsLoader({self.dataset!r}, tfds_data_dir={self.tfds_data_dir!r})"

  def __call__(self, split: str) -> list[record.Example]:
    # TensorFlow Datasets (seconds to import) only for TFDS-backed sources
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    from dsbs.data import tfds_builders  # pylint: disable=g-import-not-at-top  # registers

    name = tfds_builders.tfds_name(self.dataset)
    builder = tfds.builder(name, data_dir=self.tfds_data_dir)
    if split not in builder.info.splits:
      raise ValueError(
          f"TFDS dataset {name} in {builder.data_dir} has no prepared split {split!r} "
          f"(has {sorted(builder.info.splits)}); build it with `python -m dsbs.data prepare "
          f"--dataset={self.dataset}` or unset DSBS_SOURCE=tfds")
    out = []
    for i, row in enumerate(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))):
      text = {k: v.decode("utf-8") for k, v in row.items()}
      try:
        meta = json.loads(text.pop("meta") or "{}")
      except json.JSONDecodeError as e:
        raise record.RecordError(f"{name}/{split}", i + 1, "meta", f"bad JSON: {e.msg}") from None
      fields = {k: (v or None) for k, v in text.items()}
      fields["parse_status"] = fields["parse_status"] or record.NO_TEACHER
      out.append(record.Example.from_dict({**fields, "meta": meta},
                                          path=f"{name}/{split}", line=i + 1))
    return out


class RecordSource(seqio.DataSource):
  """A SeqIO DataSource over one dataset variant; loads on first use, knows its sizes."""

  def __init__(self, name: str, loader: Loader, variant: str, splits: Sequence[str],
               fraction: float = 100.0):
    super().__init__(splits=tuple(splits), num_input_examples=None, caching_permitted=True)
    if variant not in VARIANTS:
      raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    self._name = name
    self._loader = loader
    self._variant = variant
    self._fraction = fractions.check_fraction(fraction)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True  # get_dataset takes every num_shards-th record itself

  def __repr__(self) -> str:
    return (f"RecordSource({self._name!r}, variant={self._variant!r}, "
            f"fraction={self._fraction:g}, splits={self.splits})")

  def _rows(self, split: str) -> dict[str, list[str]]:
    if split not in self.splits:
      raise ValueError(f"{self._name}: no split {split!r}; available: {self.splits}")
    key = (self._name, self._variant, self._fraction, split) + _env_key()
    with _lock:
      hit = _rows_cache.get(key)
    if hit is None:
      examples = load_split(self._name, self._loader, split)
      if split == "train" and self._fraction < 100.0:
        examples = fractions.nested_subset(examples, self._fraction)
      cols, skipped = select(examples, self._variant, split)
      if skipped:  # a count, not a fault: a noisy teacher leaves some records unusable
        logging.info(
            "dsbs.tasks %s/%s (%g%%) %s: kept %d of %d records; skipped %s", self._name,
            self._variant, self._fraction, split, len(cols["id"]), len(examples),
            ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())))
      hit = (cols, skipped)
      with _lock:
        _rows_cache[key] = hit
    return hit[0]

  def skip_counts(self, split: str) -> Mapping[str, int]:
    """Records of `split` this variant skipped, by reason."""
    self._rows(split)
    key = (self._name, self._variant, self._fraction, split) + _env_key()
    return dict(_rows_cache[key][1])

  def num_input_examples(self, split: str) -> int:
    return len(self._rows(split)["id"])

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *,
                  sequence_length: Mapping[str, int] | None = None, use_cached: bool = False,
                  num_epochs: int | None = 1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # handled by the Task
    cols = self._rows(split)
    order = list(range(len(cols["id"])))
    if shard_info and shard_info.num_shards > 1:  # shard before shuffling: disjoint per host
      order = order[shard_info.index::shard_info.num_shards]
    if shuffle:
      random.Random(None if seed is None else int(seed)).shuffle(order)
    data = {f: tf.constant([cols[f][i] for i in order], dtype=tf.string) for f in FIELDS}
    return tf.data.Dataset.from_tensor_slices(data)

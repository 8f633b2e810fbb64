"""Reader of the released benchmark data (task splits + raw PaLM chain-of-thought outputs).

Layout (upstream `datasets.zip`, unchanged):
  <data_dir>/<ds>/<ds>_{train,valid,test}.json    JSON Lines, one row per example
  <data_dir>/<ds>/llm/{split}_CoT_{i}.json        JSON lists of teacher texts, chunked, i = 0, 1, ..
                                                  in the same row order as the split file

Splits: `validation` is the released `valid` file where one exists (anli1, esnli). cqa and svamp
have none; their validation split is a deterministic slice of train: the rows whose
sha256("dsbs-validation-v1:" + id) sorts in the last 10% (a fixed-seed permutation that does not
depend on any library version or on row order), and `train` then excludes those rows.

Ids: the row's own id where the file has one (anli1 `uid`, cqa `id`), else
`<ds>-<file split>-<row index in that file>` ("esnli-valid-12", "svamp-train-7"), so an id
names its source row whichever canonical split it lands in.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from typing import Any

from dsbs import fileio
from dsbs.data import benchmarks
from dsbs.data.datadir import RELEASE_URL
from dsbs.data.record import NO_TEACHER, Example, RecordError, iter_json_objects

VALIDATION_FRACTION = 0.1
VALIDATION_SALT = "dsbs-validation-v1"
VALIDATION_RULE = (f"the {VALIDATION_FRACTION:.0%} of train whose "
                   f"sha256(\"{VALIDATION_SALT}:\" + id) sorts last (train excludes them)")

_CHUNK = re.compile(r"^(train|valid|test)_CoT_(\d+)\.json$")


class MissingSplitError(FileNotFoundError):
  """A split's file is not in the data dir (e.g. the anli1/esnli train splits)."""

  def __init__(self, dataset: str, split: str, path: str):
    super().__init__(
        f"{dataset} split {split!r} needs {path}, which does not exist. Get the full release "
        f"({RELEASE_URL}), unzip it and point DSBS_DATA_DIR (or the --data_dir flag of "
        f"dsbs.data and dsbs.teacher) at the folder holding "
        f"'{dataset}/'."
    )
    self.dataset, self.split, self.path = dataset, split, path


def split_path(data_dir: str, dataset: str, file_split: str) -> str:
  return os.path.join(data_dir, dataset, f"{dataset}_{file_split}.json")


def read_rows(path: str) -> list[dict[str, Any]]:
  """Reads a JSON Lines split file; a malformed line raises RecordError naming file and line."""
  rows = []
  for line_no, row in iter_json_objects(path):
    rows.append({"__line__": line_no, **row})
  return rows


def teacher_files(data_dir: str, dataset: str, file_split: str) -> list[str]:
  """The chunk files of a split's teacher outputs, in chunk order; [] when there are none."""
  llm_dir = os.path.join(data_dir, dataset, "llm")
  if not fileio.exists(llm_dir):
    return []
  chunks = []
  for name in fileio.listdir(llm_dir):
    m = _CHUNK.match(name)
    if m and m.group(1) == file_split:
      chunks.append((int(m.group(2)), os.path.join(llm_dir, name)))
  chunks.sort()
  indices = [i for i, _ in chunks]
  if indices != list(range(len(chunks))):
    raise RecordError(llm_dir, 0, None, f"{file_split}_CoT chunks are not numbered 0..n-1: {indices}")
  return [p for _, p in chunks]


def read_teacher_outputs(paths: list[str]) -> list[str | None]:
  """Concatenates the chunked JSON lists; each item must be a string (or null)."""
  texts: list[str | None] = []
  for path in paths:
    with fileio.open_text(path) as f:
      try:
        items = json.load(f)
      except json.JSONDecodeError as e:
        raise RecordError(path, e.lineno, None, f"malformed JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(items, list):
      raise RecordError(path, 1, None, f"expected a JSON list of strings, got {type(items).__name__}")
    for i, item in enumerate(items):
      if item is not None and not isinstance(item, str):
        raise RecordError(path, 1, f"[{i}]", f"list item {i}: expected a string, got {type(item).__name__}")
    texts.extend(items)
  return texts


def _holdout_key(example_id: str) -> str:
  return hashlib.sha256(f"{VALIDATION_SALT}:{example_id}".encode()).hexdigest()


def validation_ids(ids: list[str], fraction: float = VALIDATION_FRACTION) -> set[str]:
  """The ids held out of train as validation: the last `fraction` after a keyed-hash sort."""
  n_val = int(round(len(ids) * fraction))
  order = sorted(ids, key=_holdout_key)
  return set(order[len(order) - n_val:]) if n_val else set()


def _example(spec: benchmarks.DatasetSpec, row: dict[str, Any], path: str, file_split: str,
             index: int, text: str | None, has_teacher: bool) -> Example:
  line = row["__line__"]
  try:
    if spec.id_field:
      ex_id = benchmarks._get(row, spec.id_field)  # pylint: disable=protected-access
    else:
      ex_id = f"{spec.name}-{file_split}-{index}"
    inputs = spec.format_input(row)
    gold = spec.gold_label(row)
    meta = {"source": f"{os.path.basename(path)}:{line}", **spec.make_meta(row)}
  except benchmarks.FieldError as e:
    raise RecordError(path, line, e.field, str(e)) from None
  if not has_teacher:
    return Example(ex_id, inputs, gold, None, None, NO_TEACHER, meta)
  result = spec.parse(text, row)
  if result.answer_text is not None:
    meta["teacher_answer"] = result.answer_text[:300]
  return Example(ex_id, inputs, gold, result.label, result.rationale, result.status, meta)


def read_split_file(data_dir: str, dataset: str, file_split: str) -> list[Example]:
  """All examples of one released split file, with their parsed teacher outputs."""
  spec = benchmarks.get_spec(dataset)
  path = split_path(data_dir, dataset, file_split)
  if not fileio.exists(path):
    raise MissingSplitError(dataset, file_split, path)
  rows = read_rows(path)
  chunk_paths = teacher_files(data_dir, dataset, file_split)
  texts: list[str | None] = read_teacher_outputs(chunk_paths) if chunk_paths else []
  if chunk_paths and len(texts) != len(rows):
    raise RecordError(
        os.path.dirname(chunk_paths[0]), 0, None,
        f"{file_split}_CoT_*.json hold {len(texts)} outputs but {path} has {len(rows)} rows")
  if not chunk_paths:
    logging.warning("%s: no teacher outputs (llm/%s_CoT_*.json); all %d rows are %s",
                    dataset, file_split, len(rows), NO_TEACHER)
  examples, seen = [], {}
  for i, row in enumerate(rows):
    ex = _example(spec, row, path, file_split, i, texts[i] if texts else None, bool(chunk_paths))
    if ex.id in seen:
      raise RecordError(path, row["__line__"], spec.id_field or "id",
                        f"duplicate id {ex.id!r} (first on line {seen[ex.id]})")
    seen[ex.id] = row["__line__"]
    examples.append(ex)
  return examples


def load_released(dataset: str, split: str, data_dir: str) -> list[Example]:
  """Examples of a released benchmark split (train / validation / test); see module docstring."""
  spec = benchmarks.get_spec(dataset)
  if split not in benchmarks.SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {benchmarks.SPLITS}")
  file_split = spec.files[split]
  if file_split is not None:
    examples = read_split_file(data_dir, dataset, file_split)
    if split != "train" or spec.files["validation"] is not None:
      return examples
  else:  # validation carved out of train
    examples = read_split_file(data_dir, dataset, spec.files["train"])
  held = validation_ids([ex.id for ex in examples])
  want_held = split == "validation"
  return [ex for ex in examples if (ex.id in held) == want_held]


def available_splits(dataset: str, data_dir: str) -> list[str]:
  """The canonical splits whose files exist in `data_dir`."""
  spec = benchmarks.get_spec(dataset)
  out = []
  for split in benchmarks.SPLITS:
    file_split = spec.files[split] or spec.files["train"]
    if fileio.exists(split_path(data_dir, dataset, file_split)):
      out.append(split)
  return out

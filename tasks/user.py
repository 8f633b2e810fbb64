"""A user's own dataset from JSONL files: the same task family, no edits to dsbs.

Each line is either a canonical record (`dsbs.data.record.Example` fields) or a plain row:

  {"input": "...", "label": "...", "rationale": "...", "teacher_label": "...", "id": "..."}

with only `input` required (plus `label` wherever gold-label tasks or evaluation need it).
A dataset given train but no validation file gets a validation split carved from train, by the
rule of the released cqa and svamp (`dsbs.data.released.VALIDATION_RULE`).
`id` defaults to the line number. Without `parse_status`, it is derived: OK when the row has a
rationale and a teacher label; a rationale without `teacher_label` is taken as explaining the gold
label (human-written rationales), so `teacher_label = label`; otherwise NO_TEACHER. Malformed
rows raise `RecordError` naming the file, line and field.

From Python:   dsbs.tasks.register_dataset("mine", train="train.jsonl", test="test.jsonl",
                                           kind="classification", label_space=["yes", "no"])
From config:   DSBS_USER_DATASETS=/path/datasets.json, read on `import dsbs.tasks`; the file
               holds a JSON list of objects with the keyword arguments of `register_dataset`
               (relative paths are relative to the file), e.g.
               [{"name": "mine", "train": "train.jsonl", "test": "test.jsonl",
                 "kind": "classification", "label_space": ["yes", "no"]}]
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

from dsbs import fileio
from dsbs.data import record
from dsbs.data import released
from dsbs.seqio_ext import arith
from dsbs.seqio_ext import postprocessors
from dsbs.tasks import registry

ENV_VAR = "DSBS_USER_DATASETS"
_PLAIN_FIELDS = ("id", "input", "label", "rationale", "teacher_label")
_CANONICAL_FIELDS = _PLAIN_FIELDS + ("parse_status", "meta")
_CONFIG_KEYS = ("name", "train", "validation", "test", "kind", "label_space", "replace")
CARVED_VALIDATION = f"no validation file: validation is {released.VALIDATION_RULE}"


def _to_example(row: Any, path: str, line: int) -> record.Example:
  if not isinstance(row, dict):
    raise record.RecordError(path, line, None, f"expected a JSON object, got {type(row).__name__}")
  unknown = sorted(set(row) - set(_CANONICAL_FIELDS))
  if unknown:
    raise record.RecordError(path, line, unknown[0],
                             f"unknown field (known: {list(_CANONICAL_FIELDS)})")
  row = dict(row)
  if row.get("id") is None:
    row["id"] = str(line)
  elif isinstance(row["id"], int) and not isinstance(row["id"], bool):
    row["id"] = str(row["id"])
  if "parse_status" not in row:
    rationale, teacher = row.get("rationale"), row.get("teacher_label")
    if rationale and teacher is None and isinstance(row.get("label"), str):
      row["teacher_label"] = teacher = row["label"]
    row["parse_status"] = record.OK if rationale and teacher else record.NO_TEACHER
  ex = record.Example.from_dict(row, path=path, line=line)
  if not ex.input.strip():
    raise record.RecordError(path, line, "input", "empty input")
  return ex


def read_user_jsonl(path: str, *, kind: str = "free",
                    label_space: Sequence[str] | None = None) -> list[record.Example]:
  """Reads canonical or plain JSONL rows, validating types, unique ids and labels."""
  examples: list[record.Example] = []
  seen: dict[str, int] = {}
  space = set(label_space) if label_space else None
  for line_no, row in record.iter_json_objects(path):
    ex = _to_example(row, path, line_no)
    if ex.id in seen:
      raise record.RecordError(path, line_no, "id",
                               f"duplicate id {ex.id!r} (first on line {seen[ex.id]})")
    seen[ex.id] = line_no
    for field in ("label", "teacher_label"):
      value = getattr(ex, field)
      if value is None:
        continue
      if space is not None and value not in space:
        raise record.RecordError(path, line_no, field,
                                 f"{value!r} is not in the label space {sorted(space)}")
      if kind in ("arithmetic", "numeric") and arith.safe_eval(value) is None:
        raise record.RecordError(path, line_no, field,
                                 f"{value!r} is not an arithmetic expression or number")
    examples.append(ex)
  return examples


class _JsonlLoader:
  """split -> examples of the file given for that split (picklable, reads lazily).

  With `carve`, there is no validation file: validation is the 10% of train whose
  sha256("dsbs-validation-v1:" + id) sorts last, as for the released cqa and svamp, and train
  excludes those rows.
  """

  def __init__(self, paths: dict[str, str], kind: str, label_space: Sequence[str] | None,
               carve: bool = False):
    self.paths, self.kind, self.label_space, self.carve = paths, kind, label_space, carve

  def _read(self, split: str) -> list[record.Example]:
    return read_user_jsonl(self.paths[split], kind=self.kind, label_space=self.label_space)

  def __call__(self, split: str) -> list[record.Example]:
    if self.carve and split in ("train", "validation"):
      examples = self._read("train")
      held = released.validation_ids([ex.id for ex in examples])
      return [ex for ex in examples if (ex.id in held) == (split == "validation")]
    if split not in self.paths:
      raise ValueError(f"no file for split {split!r}; given: {sorted(self.paths)}")
    return self._read(split)


def register_dataset(name: str, train: str | None = None, validation: str | None = None,
                     test: str | None = None, kind: str = "classification",
                     label_space: Sequence[str] | None = None, *, replace: bool = False,
                     check_files: bool = True, **grid: Any) -> list[str]:
  """Registers the task family of a user dataset from JSONL files; returns the names.

  Args:
    name: dataset name ([a-z][a-z0-9_]*), the prefix of every task name.
    train, validation, test: JSONL paths (local or gs://); at least one. Without a validation
      file, validation is carved from train (see `_JsonlLoader`).
    kind: "classification", "multiple_choice", "arithmetic", "numeric" or "free".
    label_space: closed label set (classification); labels outside it are errors.
    replace: re-register an existing name.
    check_files: fail now if a given file does not exist (files are read lazily).
    **grid: `vocabs`, `fractions`, `rates` overriding the registered grid (see registry).
  """
  if kind not in postprocessors.LABEL_KINDS:
    raise ValueError(f"dataset {name!r}: kind {kind!r} not in {postprocessors.LABEL_KINDS}")
  paths = {s: p for s, p in (("train", train), ("validation", validation), ("test", test))
           if p is not None}
  if not paths:
    raise ValueError(f"dataset {name!r}: give at least one of train/validation/test")
  for split, p in paths.items():
    if not isinstance(p, str) or not p:
      raise ValueError(f"dataset {name!r}: {split} must be a path string, got {p!r}")
    if check_files and not fileio.exists(p):
      raise FileNotFoundError(f"dataset {name!r}: {split} file {p} does not exist")
  space = tuple(label_space) if label_space else None
  carve = "train" in paths and "validation" not in paths
  splits = tuple(s for s in ("train", "validation", "test") if s in paths or
                 (carve and s == "validation"))
  defn = registry.DatasetDef(name=name, loader=_JsonlLoader(paths, kind, space, carve),
                             splits=splits, kind=kind, label_space=space,
                             validation_origin=CARVED_VALIDATION if carve else None)
  return registry.add_dataset(defn, replace=replace, **grid)


def _config_entries(path: str, text: str) -> list[tuple[int, Any]]:
  """The entries of a JSON list with the line each starts on."""
  decoder = json.JSONDecoder()

  def line_of(pos: int) -> int:
    return text.count("\n", 0, pos) + 1

  def fail(pos: int, msg: str) -> record.RecordError:
    return record.RecordError(path, line_of(pos), None, msg)

  pos = len(text) - len(text.lstrip())
  if pos >= len(text) or text[pos] != "[":
    raise fail(pos, "expected a JSON list of dataset objects")
  pos += 1
  entries = []
  while True:
    while pos < len(text) and text[pos] in " \t\r\n":
      pos += 1
    if pos < len(text) and text[pos] == "]":
      pos += 1
      break
    if entries:
      if pos >= len(text) or text[pos] != ",":
        raise fail(pos, "expected ',' or ']' between dataset objects")
      pos += 1
      while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    try:
      value, end = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      raise record.RecordError(path, e.lineno, None, f"malformed JSON: {e.msg} (column {e.colno})"
                               ) from None
    entries.append((line_of(pos), value))
    pos = end
  if text[pos:].strip():
    raise fail(pos, "unexpected text after the list")
  return entries


def register_from_config(path: str) -> list[str]:
  """Registers every dataset listed in a JSON config file (see the module docstring)."""
  with fileio.open_text(path) as f:
    text = f.read()
  base = os.path.dirname(path)
  names = []
  for line, entry in _config_entries(path, text):
    if not isinstance(entry, dict):
      raise record.RecordError(path, line, None, "each entry must be a JSON object")
    unknown = sorted(set(entry) - set(_CONFIG_KEYS))
    if unknown:
      raise record.RecordError(path, line, unknown[0], f"unknown key (known: {list(_CONFIG_KEYS)})")
    if not isinstance(entry.get("name"), str):
      raise record.RecordError(path, line, "name", "missing or not a string")
    if not registry.NAME_PATTERN.match(entry["name"]):
      raise record.RecordError(path, line, "name",
                               f"{entry['name']!r} must match {registry.NAME_PATTERN.pattern}")
    if entry.get("kind", "classification") not in postprocessors.LABEL_KINDS:
      raise record.RecordError(path, line, "kind",
                               f"{entry.get('kind')!r} not in {postprocessors.LABEL_KINDS}")
    space = entry.get("label_space")
    if space is not None and not (isinstance(space, list) and space
                                  and all(isinstance(l, str) for l in space)):
      raise record.RecordError(path, line, "label_space", "expected a non-empty list of strings")
    kwargs = dict(entry)
    for split in ("train", "validation", "test"):
      p = kwargs.get(split)
      if p is None:
        continue
      if not isinstance(p, str) or not p:
        raise record.RecordError(path, line, split, "expected a path string")
      if not fileio.is_remote(p) and not os.path.isabs(p):
        p = (base.rstrip("/") + "/" + p) if fileio.is_remote(path) else os.path.join(base, p)
      if not fileio.exists(p):
        raise record.RecordError(path, line, split, f"file {p} does not exist")
      kwargs[split] = p
    if not any(kwargs.get(s) for s in ("train", "validation", "test")):
      raise record.RecordError(path, line, "train", "give at least one of train/validation/test")
    try:
      names.extend(register_dataset(**kwargs))
    except ValueError as e:
      raise record.RecordError(path, line, None, str(e)) from None
  return names


def register_from_env() -> list[str]:
  """Registers the datasets of $DSBS_USER_DATASETS, if set."""
  path = os.environ.get(ENV_VAR, "").strip()
  return register_from_config(path) if path else []

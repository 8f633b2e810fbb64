"""The inputs of a teacher run: a released benchmark split, or a user's JSONL file.

A user's file has one JSON object per line with `input` (required), `label` (optional gold),
`id` (optional; default `<file stem>-<line>`), `choices` (a list of strings, for multiple-choice
prompts) and `meta` (an object, kept). Canonical records (`dsbs.data.record`) are accepted too:
their teacher fields are ignored and rewritten. Anything else is an error naming file, line and
field.
"""
from __future__ import annotations

import hashlib
import os
from typing import Sequence

from dsbs import fileio
from dsbs.data import loader, record
from dsbs.data.record import Example, RecordError

_USER_FIELDS = {"id", "input", "label", "choices", "meta"}
_CANONICAL_EXTRA = {"teacher_label", "rationale", "parse_status"}


def read_user_jsonl(path: str, *, label_space: Sequence[str] | None = None,
                    needs_choices: bool = False) -> list[Example]:
  """Reads and validates a user's input file into records without teacher output."""
  if not fileio.exists(path):
    raise RecordError(path, 0, None, "input file not found")
  stem = os.path.splitext(os.path.basename(path))[0]
  out: list[Example] = []
  seen: dict[str, int] = {}
  for line_no, row in record.iter_json_objects(path):
    unknown = sorted(set(row) - _USER_FIELDS - _CANONICAL_EXTRA)
    if unknown:
      raise RecordError(path, line_no, unknown[0],
                        f"unknown field (known: {sorted(_USER_FIELDS)})")
    text = row.get("input")
    if not isinstance(text, str) or not text.strip():
      raise RecordError(path, line_no, "input", "expected a non-empty string")
    ex_id = row.get("id", f"{stem}-{line_no}")
    if isinstance(ex_id, int) and not isinstance(ex_id, bool):
      ex_id = str(ex_id)
    if not isinstance(ex_id, str) or not ex_id:
      raise RecordError(path, line_no, "id", "expected a non-empty string or an integer")
    if ex_id in seen:
      raise RecordError(path, line_no, "id",
                        f"duplicate id {ex_id!r} (first on line {seen[ex_id]})")
    seen[ex_id] = line_no
    label = row.get("label")
    if label is not None:
      if isinstance(label, (int, float)) and not isinstance(label, bool):
        label = str(label)
      if not isinstance(label, str):
        raise RecordError(path, line_no, "label", "expected a string, a number or null")
      if label_space is not None and label not in label_space:
        raise RecordError(path, line_no, "label", f"{label!r} not in the prompt's label space "
                          f"{list(label_space)}")
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
      raise RecordError(path, line_no, "meta", "expected a JSON object")
    choices = row.get("choices", meta.get("choices"))
    if choices is not None:
      if not isinstance(choices, list) or not choices or not all(
          isinstance(c, str) and c for c in choices):
        raise RecordError(path, line_no, "choices", "expected a non-empty list of strings")
      meta = {**meta, "choices": choices}
    elif needs_choices:
      raise RecordError(path, line_no, "choices", "a multiple-choice prompt needs each row's "
                        "choices")
    if choices is not None and label is not None and label not in choices:
      raise RecordError(path, line_no, "label", f"{label!r} is not one of the row's choices")
    out.append(Example(id=ex_id, input=text, label=label, parse_status=record.NO_TEACHER,
                       meta=meta))
  return out


def file_sha256(path: str) -> str:
  """The sha256 of a file's bytes, for provenance."""
  h = hashlib.sha256()
  with fileio.open_bytes(path) as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def load_benchmark(dataset: str, split: str, data_dir: str | None = None) -> list[Example]:
  """A released benchmark split through the data layer (`dsbs.data.load_examples`)."""
  return list(loader.load_examples(dataset, split, data_dir=data_dir))

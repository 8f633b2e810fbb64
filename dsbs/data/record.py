"""The canonical example record: what every data source produces and every task reads.

One record per input. The released PaLM outputs (`dsbs.data.released`), the teacher command
(`dsbs.teacher`), the built-in synthetic set and a user's own JSONL all end as a JSONL file of
these records, so `dsbs.tasks` registers them all the same way.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Iterator

from dsbs import fileio

# Parse status of the teacher output. Only OK records train the rationale / teacher-label tasks;
# the rest are kept, counted and reported (see README, "Unparseable teacher outputs").
OK = "ok"
NO_TEACHER = "no_teacher"  # no teacher output exists for this input (gold-only data)
NO_ANSWER = "no_answer"  # the teacher text has no recognisable answer phrase
UNMAPPED_LABEL = "unmapped_label"  # an answer was found but does not map into the label space
EMPTY_RATIONALE = "empty_rationale"  # an answer was found but nothing explains it
PARSE_STATUSES = (OK, NO_TEACHER, NO_ANSWER, UNMAPPED_LABEL, EMPTY_RATIONALE)

_REQUIRED = ("id", "input")


class RecordError(ValueError):
  """A malformed input row; the message names the file, the line and the field."""

  def __init__(self, path: str, line: int, field: str | None, message: str):
    where = f"{path}:{line}" + (f": field {field!r}" if field else "")
    super().__init__(f"{where}: {message}")
    self.path, self.line, self.field = path, line, field


@dataclasses.dataclass(frozen=True)
class Example:
  """One input with its gold label and the teacher's rationale and label.

  Attributes:
    id: stable identifier, unique within a split.
    input: the formatted model input, without a task prefix ("premise: ... hypothesis: ...").
    label: the gold label in the dataset's label space, or None when the data has none.
    teacher_label: the teacher's label mapped into the label space, or None.
    rationale: the teacher's rationale (the reasoning before its answer), or None.
    parse_status: one of PARSE_STATUSES.
    meta: anything else worth keeping (votes, raw text hash, source file); JSON-serialisable.
  """

  id: str
  input: str
  label: str | None = None
  teacher_label: str | None = None
  rationale: str | None = None
  parse_status: str = NO_TEACHER
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)

  @classmethod
  def from_dict(cls, row: dict[str, Any], *, path: str = "<dict>", line: int = 0) -> "Example":
    if not isinstance(row, dict):
      raise RecordError(path, line, None, f"expected a JSON object, got {type(row).__name__}")
    for name in _REQUIRED:
      if name not in row or row[name] is None:
        raise RecordError(path, line, name, "missing required field")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(row) - known)
    if unknown:
      raise RecordError(path, line, unknown[0], f"unknown field (known: {sorted(known)})")
    for name in ("id", "input", "label", "teacher_label", "rationale", "parse_status"):
      value = row.get(name)
      if value is not None and not isinstance(value, str):
        raise RecordError(path, line, name, f"expected a string, got {type(value).__name__}")
    status = row.get("parse_status", NO_TEACHER)
    if status not in PARSE_STATUSES:
      raise RecordError(path, line, "parse_status", f"{status!r} not in {PARSE_STATUSES}")
    meta = row.get("meta", {})
    if not isinstance(meta, dict):
      raise RecordError(path, line, "meta", "expected a JSON object")
    return cls(**{**row, "parse_status": status, "meta": meta})


def iter_json_objects(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yields (line number, object) from a local or gs:// JSON Lines file, skipping blank lines.

  A line that is not valid JSON, or not a JSON object, raises RecordError naming file and line.
  """
  with fileio.open_text(path) as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise RecordError(path, line_no, None, f"malformed JSON: {e.msg} (column {e.colno})") from None
      if not isinstance(row, dict):
        raise RecordError(path, line_no, None, f"expected a JSON object, got {type(row).__name__}")
      yield line_no, row


def read_jsonl(path: str) -> Iterator[Example]:
  """Reads canonical records from a local or gs:// JSONL file, validating every line."""
  for line_no, row in iter_json_objects(path):
    yield Example.from_dict(row, path=path, line=line_no)


def write_jsonl(path: str, examples: Iterable[Example]) -> int:
  """Writes records atomically (temp file + rename); returns the count."""
  n = 0
  with fileio.atomic_write_text(path) as f:
    for ex in examples:
      f.write(ex.to_json() + "\n")
      n += 1
  return n

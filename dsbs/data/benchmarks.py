"""What each dataset is: kind, label space, input format, gold label, released files.

`SPECS[name]` is the one place the tasks, the teacher and the readers look up a dataset. The
task prefix (`predict:` / `explain:`) is not part of the input; `dsbs.tasks` adds it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from dsbs.data import arithmetic, parse

DATASETS = ("anli1", "esnli", "cqa", "svamp")
SYNTHETIC = ("arith",)
ALL_DATASETS = DATASETS + SYNTHETIC
SPLITS = ("train", "validation", "test")

NLI_LABELS = ("entailment", "neutral", "contradiction")
NLI_ALIASES = {
    "entails": "entailment", "entailed": "entailment", "entail": "entailment",
    "contradicts": "contradiction", "contradictory": "contradiction", "contradict": "contradiction",
}


class FieldError(ValueError):
  """A released row lacks a field or has a bad value; the reader turns it into a RecordError."""

  def __init__(self, field: str, message: str):
    super().__init__(message)
    self.field = field


def _get(row: Mapping[str, Any], field: str, typ: type | tuple[type, ...] = str) -> Any:
  if field not in row or row[field] is None:
    raise FieldError(field, "missing required field")
  value = row[field]
  if not isinstance(value, typ) or isinstance(value, bool):
    names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
    raise FieldError(field, f"expected {names}, got {type(value).__name__}")
  return value


def _nli_input(row: Mapping[str, Any]) -> str:
  return f"premise: {_get(row, 'premise').strip()} hypothesis: {_get(row, 'hypothesis').strip()}"


def _nli_label(row: Mapping[str, Any]) -> str:
  value = _get(row, "label", (int, str))
  if isinstance(value, int):
    if not 0 <= value < len(NLI_LABELS):
      raise FieldError("label", f"unknown label {value!r}; expected 0/1/2 ({', '.join(NLI_LABELS)})")
    return NLI_LABELS[value]
  if value not in NLI_LABELS:
    raise FieldError("label", f"unknown label {value!r}; expected one of {NLI_LABELS}")
  return value


def cqa_choices(row: Mapping[str, Any]) -> list[str]:
  choices = _get(row, "choices", list)
  if not choices or not all(isinstance(c, str) and c.strip() for c in choices):
    raise FieldError("choices", "expected a non-empty list of non-empty strings")
  if len(choices) > 26:
    raise FieldError("choices", f"{len(choices)} choices; at most 26 can be lettered")
  return choices


def format_choices(choices: list[str]) -> str:
  return " ".join(f"({chr(ord('a') + i)}) {c.strip()}" for i, c in enumerate(choices))


def _cqa_input(row: Mapping[str, Any]) -> str:
  question = _get(row, "question").strip()
  return f"question: {question} answer choices: {format_choices(cqa_choices(row))}"


def _cqa_label(row: Mapping[str, Any]) -> str:
  answer, choices = _get(row, "answer"), cqa_choices(row)
  if answer not in choices:
    raise FieldError("answer", f"unknown label {answer!r}: not one of the choices {choices}")
  return answer


def _svamp_input(row: Mapping[str, Any]) -> str:
  return " ".join(part.strip() for part in _get(row, "input").split("\n") if part.strip())


def _svamp_label(row: Mapping[str, Any]) -> str:
  label = _get(row, "label").strip()
  try:
    arithmetic.evaluate(label)
  except arithmetic.ExpressionError as e:
    raise FieldError("label", f"unknown label {label!r}: not an arithmetic expression ({e})") from None
  return label


def _nli_meta(row: Mapping[str, Any]) -> dict[str, Any]:
  meta: dict[str, Any] = {}
  expl = [row[k] for k in ("explanation_1", "explanation_2", "explanation_3") if row.get(k)]
  if expl:
    meta["human_explanations"] = expl
  if row.get("reason"):
    meta["human_explanations"] = [row["reason"]]
  return meta


def _cqa_meta(row: Mapping[str, Any]) -> dict[str, Any]:
  meta: dict[str, Any] = {"choices": cqa_choices(row)}
  if row.get("abstractive_explanation"):
    meta["human_explanations"] = [row["abstractive_explanation"]]
  return meta


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One dataset's definition.

  Attributes:
    name: the dataset name used everywhere (file names, task names, CLI).
    kind: the parser kind (see `dsbs.data.parse.ANSWER_KINDS`).
    label_space: the closed label set, or None (per-row choices, expressions, numbers).
    format_input: released row -> Example.input (no task prefix).
    gold_label: released row -> gold label string in the label space.
    make_meta: released row -> Example.meta extras (choices, human explanations).
    id_field: the row field holding a stable id, or None (then `<ds>-<file split>-<row>`).
    files: canonical split -> released file split name (`valid`), or None when the split is a
      deterministic slice of train (see `dsbs.data.released.VALIDATION_FRACTION`).
    description: one line for docs and TFDS.
  """

  name: str
  kind: str
  label_space: tuple[str, ...] | None
  format_input: Callable[[Mapping[str, Any]], str]
  gold_label: Callable[[Mapping[str, Any]], str]
  make_meta: Callable[[Mapping[str, Any]], dict[str, Any]]
  id_field: str | None
  files: Mapping[str, str | None]
  description: str
  aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def parse(self, text: str | None, row: Mapping[str, Any] | None = None) -> parse.ParseResult:
    """Parses a teacher text for this dataset (cqa needs the row for its choices)."""
    choices = cqa_choices(row) if self.kind == "multiple_choice" and row is not None else None
    if self.kind == "multiple_choice" and choices is None:
      raise ValueError(f"{self.name}: parsing needs the row (for its choices)")
    return parse.parse_output(
        text, label_space=self.label_space, choices=choices, kind=self.kind, aliases=self.aliases
    )


_NLI_FILES = {"train": "train", "validation": "valid", "test": "test"}
_NO_VALID_FILES = {"train": "train", "validation": None, "test": "test"}

SPECS: dict[str, DatasetSpec] = {
    "anli1": DatasetSpec(
        "anli1", "classification", NLI_LABELS, _nli_input, _nli_label, _nli_meta, "uid",
        _NLI_FILES, "Adversarial NLI round 1: premise/hypothesis -> entailment/neutral/contradiction.",
        NLI_ALIASES),
    "esnli": DatasetSpec(
        "esnli", "classification", NLI_LABELS, _nli_input, _nli_label, _nli_meta, None,
        _NLI_FILES, "e-SNLI: SNLI with human explanations; 3-way NLI.", NLI_ALIASES),
    "cqa": DatasetSpec(
        "cqa", "multiple_choice", None, _cqa_input, _cqa_label, _cqa_meta, "id",
        _NO_VALID_FILES, "CommonsenseQA (CoS-E v1.11): question with 5 choices -> the answer text."),
    "svamp": DatasetSpec(
        "svamp", "arithmetic", None, _svamp_input, _svamp_label, lambda row: {}, None,
        _NO_VALID_FILES, "SVAMP arithmetic word problems -> an equation such as '( 84.0 / 2.0 )'."),
}


def kind(dataset: str) -> str:
  """The parser kind of a dataset (`arith` is "numeric")."""
  if dataset in SYNTHETIC:
    return "numeric"
  return get_spec(dataset).kind


def get_spec(dataset: str) -> DatasetSpec:
  if dataset not in SPECS:
    raise ValueError(f"unknown dataset {dataset!r}; released benchmarks are {DATASETS}")
  return SPECS[dataset]


def label_space(dataset: str) -> list[str] | None:
  """The closed label set of a dataset, or None when labels are per-row choices or values."""
  if dataset in SYNTHETIC:
    return None
  space = get_spec(dataset).label_space
  return list(space) if space is not None else None


def parse_released(dataset: str, text: str | None, row: Mapping[str, Any]) -> parse.ParseResult:
  """Parses one released PaLM continuation for `dataset`, given its split row."""
  return get_spec(dataset).parse(text, row)

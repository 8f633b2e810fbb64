"""Decoded text -> label string, per label-space kind, and CoT answer extraction.

SeqIO calls a postprocessor as `fn(text, example=None, is_target=False)` on both the decoded
prediction and the target; the metric then compares the two results. Kinds:
  "classification"   lower-cased, whitespace collapsed, surrounding punctuation stripped; with a
                     label space, an output that starts with one label word maps to it
                     ("Neutral." -> "neutral", "contradiction because ..." -> "contradiction").
  "multiple_choice"  the answer text, normalised as above (CQA answers are choice texts).
  "arithmetic"       the stripped text; `metrics.value_accuracy` compares VALUES via safe_eval.
  "numeric"          as arithmetic (the synthetic `arith` set: numbers).
  "free"             normalised text, exact match.
With `cot=True` the answer is first read out of "<rationale> So the answer is <label>." (the last
"so the answer is" wins; no phrase -> "" which scores as wrong). This small parser is ours, not
`dsbs.data.parse.parse_output`: the student's CoT format is fixed by `preprocessors.cot_target`,
whereas the teacher parser must handle free-form LLM text.
"""
from __future__ import annotations

import functools
import re
import string
import unicodedata
from typing import Any, Callable, Sequence

from dsbs.data.parse import ANSWER_KINDS

# Every label-space kind a task may have: the teacher parser's, and "free" text labels.
LABEL_KINDS = ANSWER_KINDS + ("free",)
_WS = re.compile(r"\s+")
_EDGE_PUNCT = string.punctuation.replace("(", "").replace(")", "") + "\u201c\u201d\u2018\u2019"
_COT = re.compile(r"so\s+the\s+answer\s+is\s*:?", re.IGNORECASE)


def _as_text(text: Any) -> str:
  if isinstance(text, bytes):
    return text.decode("utf-8", errors="replace")
  return "" if text is None else str(text)


def normalize_text(text: Any) -> str:
  """NFKC, lower case, single spaces, no punctuation at either end (brackets kept)."""
  s = unicodedata.normalize("NFKC", _as_text(text)).lower()
  return _WS.sub(" ", s).strip().strip(_EDGE_PUNCT + " ")


def extract_cot_answer(text: Any) -> str:
  """The text after the last "So the answer is", up to the end of that line, minus a final '.'."""
  s = _as_text(text)
  matches = list(_COT.finditer(s))
  if not matches:
    return ""
  answer = s[matches[-1].end():].strip().split("\n", 1)[0].strip()
  return answer[:-1].rstrip() if answer.endswith(".") else answer


def to_label(text: Any, *, kind: str, label_space: Sequence[str] | None = None) -> str:
  """Maps one decoded text to the comparable label string for `kind`."""
  if kind in ("arithmetic", "numeric"):
    s = _as_text(text).strip()
    return s[:-1].rstrip() if s.endswith(".") else s
  norm = normalize_text(text)
  if kind == "classification" and label_space:
    words = {normalize_text(l): l for l in label_space}
    if norm in words:
      return words[norm]
    first = norm.split(" ", 1)[0].strip(_EDGE_PUNCT) if norm else ""
    if first in words:
      return words[first]
    return norm
  if kind in LABEL_KINDS:
    return norm
  raise ValueError(f"unknown kind {kind!r}; expected one of {LABEL_KINDS}")


def postprocess(text: Any, example: Any = None, is_target: bool = False, *, kind: str,
                label_space: Sequence[str] | None = None, cot: bool = False) -> str:
  """SeqIO postprocess_fn; bind `kind`, `label_space`, `cot` with `make_postprocessor`."""
  del example, is_target  # targets and predictions are read the same way
  if cot:
    text = extract_cot_answer(text)
  return to_label(text, kind=kind, label_space=label_space)


def make_postprocessor(kind: str, label_space: Sequence[str] | None = None,
                       cot: bool = False) -> Callable[..., str]:
  """A picklable SeqIO postprocess_fn for one task."""
  if kind not in LABEL_KINDS:
    raise ValueError(f"unknown kind {kind!r}; expected one of {LABEL_KINDS}")
  space = tuple(label_space) if label_space else None
  return functools.partial(postprocess, kind=kind, label_space=space, cot=cot)

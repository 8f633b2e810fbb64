"""Metrics over postprocessed labels; every metric returns {"accuracy": percent}.

`exact_accuracy` compares label strings (classification, multiple choice, free text);
`value_accuracy` compares arithmetic VALUES with `arith.safe_eval` (SVAMP equations, the `arith`
numbers): an unparseable prediction, division by zero or overflow scores as wrong; a target
that does not evaluate raises, since that is a data bug, not a model error.
`rationale_ends_in_gold` scores a student's decoded rationales (`dsbs.evaluate --with_rationale`)
by the answer they end in.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

from dsbs.seqio_ext import arith


def _check(targets: Sequence[object], predictions: Sequence[object]) -> None:
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")


def _percent(hits: int, n: int) -> float:
  return 100.0 * hits / n if n else float("nan")


def exact_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> Mapping[str, float]:
  """Percent of predictions equal to their target string."""
  _check(targets, predictions)
  return {"accuracy": _percent(sum(t == p for t, p in zip(targets, predictions)), len(targets))}


def value_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> Mapping[str, float]:
  """Percent of predictions whose arithmetic value equals the target's (within 1e-6)."""
  _check(targets, predictions)
  hits = 0
  for i, (t, p) in enumerate(zip(targets, predictions)):
    want = arith.safe_eval(t)
    if want is None:
      raise ValueError(f"target {i} is not an arithmetic expression: {t!r}")
    hits += arith.values_match(want, arith.safe_eval(p))
  return {"accuracy": _percent(hits, len(targets))}


def metric_for(kind: str) -> Callable[[Sequence[str], Sequence[str]], Mapping[str, float]]:
  """The accuracy metric for a label-space kind."""
  return value_accuracy if kind in ("arithmetic", "numeric") else exact_accuracy


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
RATIONALE_KINDS = ("arithmetic", "numeric", "classification")


def rationale_answer(rationale: str, kind: str, label_space: Sequence[str] | None = None
                     ) -> str | None:
  """The answer a rationale ends in: its last number (arithmetic kinds), or the label word it
  names last (classification with a label space); None when it names none."""
  if kind in ("arithmetic", "numeric"):
    numbers = _NUMBER.findall(rationale.replace(",", ""))
    return numbers[-1] if numbers else None
  if kind == "classification" and label_space:
    text = rationale.lower()
    found = [(m.start(), label) for label in label_space
             for m in re.finditer(rf"\b{re.escape(label.lower())}\b", text)]
    return max(found)[1] if found else None
  raise ValueError(f"the answer of a rationale is defined for kinds {RATIONALE_KINDS} (with a "
                   f"label space for classification), not {kind!r}")


def rationale_ends_in_gold(targets: Sequence[str], rationales: Sequence[str], *, kind: str,
                           label_space: Sequence[str] | None = None) -> Mapping[str, float]:
  """Percent of rationales whose final answer (`rationale_answer`) is the gold label (by value
  for the arithmetic kinds)."""
  _check(targets, rationales)
  hits = 0
  for t, r in zip(targets, rationales):
    answer = rationale_answer(r or "", kind, label_space)
    if answer is None:
      continue
    if kind in ("arithmetic", "numeric"):
      hits += arith.values_match(arith.safe_eval(t), arith.safe_eval(answer))
    else:
      hits += answer == t
  return {"rationale_ends_in_gold": _percent(hits, len(targets))}

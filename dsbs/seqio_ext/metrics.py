"""Metrics over postprocessed labels; every metric returns {"accuracy": percent}.

`exact_accuracy` compares label strings (classification, multiple choice, free text);
`value_accuracy` compares arithmetic VALUES with `arith.safe_eval` (SVAMP equations, the `arith`
numbers): an unparseable prediction, division by zero or overflow scores as wrong; a target
that does not evaluate raises, since that is a data bug, not a model error.
"""
from __future__ import annotations

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

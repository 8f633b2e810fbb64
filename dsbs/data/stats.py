"""Summary statistics of a split: parse statuses, teacher accuracy, rationale lengths.

Definitions (also what `python -m dsbs.data stats` prints):
  parse_failures     rows with a teacher output whose status is not OK
                     (NO_ANSWER + UNMAPPED_LABEL + EMPTY_RATIONALE);
  teacher_accuracy   % of rows WITH a teacher output whose teacher label equals the gold label
                     (an unparsed output counts as wrong); arithmetic/numeric labels compare by
                     value, so "( 10.0 * 45.0 )" equals "(45 * 10)";
  teacher_accuracy_parsed  the same % over rows that have a teacher label;
  *_len percentiles  nearest-rank p50/p90/p99 over OK rows (chars, whitespace words).
"""
from __future__ import annotations

import collections
import math
from typing import Any, Sequence

from dsbs.data import arithmetic
from dsbs.data.record import NO_TEACHER, OK, PARSE_STATUSES, Example


def labels_match(gold: str | None, teacher: str | None, kind: str) -> bool:
  """Gold vs teacher label: exact for classes and choices, by value for arithmetic/numeric."""
  if gold is None or teacher is None:
    return False
  if kind in ("arithmetic", "numeric"):
    return arithmetic.expressions_equal(gold, teacher)
  return gold == teacher


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
  """Nearest-rank percentiles ({"p50": ..}); empty input gives {}."""
  if not values:
    return {}
  ordered = sorted(values)
  return {f"p{q}": ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] for q in qs}


def compute_stats(examples: Sequence[Example], kind: str) -> dict[str, Any]:
  """All the numbers above for one list of examples."""
  counts = collections.Counter(ex.parse_status for ex in examples)
  with_teacher = [ex for ex in examples if ex.parse_status != NO_TEACHER]
  labelled = [ex for ex in with_teacher if ex.teacher_label is not None]
  correct = sum(labels_match(ex.label, ex.teacher_label, kind) for ex in labelled)
  ok = [ex for ex in examples if ex.parse_status == OK]
  rationales = [ex.rationale or "" for ex in ok]
  pct = lambda n, d: round(100.0 * n / d, 2) if d else None
  return {
      "rows": len(examples),
      "status_counts": {s: counts.get(s, 0) for s in PARSE_STATUSES},
      "parse_failures": len(with_teacher) - len(ok),
      "parse_success_rate": pct(len(ok), len(with_teacher)),
      "teacher_accuracy": pct(correct, len(with_teacher)),
      "teacher_accuracy_parsed": pct(correct, len(labelled)),
      "rationale_len_chars": percentiles([len(r) for r in rationales]),
      "rationale_len_words": percentiles([len(r.split()) for r in rationales]),
      "input_len_chars": percentiles([len(ex.input) for ex in examples]),
  }


def format_table(name: str, stats: dict[str, Any]) -> str:
  """A readable multi-line summary of `compute_stats` output."""
  lines = [f"{name}: {stats['rows']} rows"]
  for status, n in stats["status_counts"].items():
    share = f"{100.0 * n / stats['rows']:6.2f}%" if stats["rows"] else "     -"
    lines.append(f"  {status:<16} {n:>7}  {share}")
  fmt = lambda v: "-" if v is None else f"{v:.2f}%"
  success = fmt(stats["parse_success_rate"])
  lines.append(f"  parse failures   {stats['parse_failures']:>7}  (success {success})")
  lines.append(f"  teacher accuracy {fmt(stats['teacher_accuracy']):>8} of rows with a teacher "
               f"output; {fmt(stats['teacher_accuracy_parsed'])} of parsed")
  for key, title in (("rationale_len_chars", "rationale chars"),
                     ("rationale_len_words", "rationale words"),
                     ("input_len_chars", "input chars")):
    p = stats[key]
    row = "  ".join(f"{k}={v}" for k, v in p.items()) if p else "-"
    lines.append(f"  {title:<16} {row}")
  return "\n".join(lines)

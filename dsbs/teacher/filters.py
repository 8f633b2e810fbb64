"""Filters on voted teacher outputs; every filter counts what it drops.

Checks, in the order a record's drop reason is assigned (the first enabled one that fails):
  failed         no sample came back (requests failed after retries): ALWAYS dropped; a rerun
                 with the same command retries exactly these;
  unparsed       no sample's answer mapped into the label space (NO_ANSWER / UNMAPPED_LABEL);
  empty          the winning label has no rationale (EMPTY_RATIONALE);
  too_long       the rationale is longer than `max_rationale_chars`;
  low_agreement  vote agreement below `min_agreement`;
  disagree       the teacher label differs from the gold label (only when gold exists).
`--filter=none` keeps everything except `failed`; records then carry their parse_status and
the tasks train the rationale task on OK records only.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterable

FAILED = "failed"
CHECKS = (FAILED, "unparsed", "empty", "too_long", "low_agreement", "disagree")
OPTIONAL = CHECKS[1:]
DEFAULT = ("unparsed", "empty", "too_long")


@dataclasses.dataclass(frozen=True)
class Facts:
  """What the filters look at for one input."""

  failed: bool
  has_label: bool
  rationale: str | None
  agreement: float
  agrees_with_gold: bool | None  # None: no gold label or no teacher label


@dataclasses.dataclass(frozen=True)
class FilterPolicy:
  """Which checks drop records, and their thresholds."""

  enabled: frozenset[str] = frozenset(DEFAULT)
  max_rationale_chars: int = 2000
  min_agreement: float = 0.0

  @classmethod
  def parse(cls, spec: str, *, max_rationale_chars: int = 2000,
            min_agreement: float = 0.0) -> "FilterPolicy":
    """From a flag value: comma-separated check names, `default`, `all` or `none`."""
    names: set[str] = set()
    for part in (p.strip() for p in spec.split(",")):
      if not part or part == "none":
        continue
      if part == "default":
        names.update(DEFAULT)
      elif part == "all":
        names.update(OPTIONAL)
      elif part in OPTIONAL:
        names.add(part)
      else:
        raise ValueError(f"unknown filter {part!r}; choose from {', '.join(OPTIONAL)}, "
                         "default, all, none")
    if max_rationale_chars < 1:
      raise ValueError("max_rationale_chars must be >= 1")
    if not 0.0 <= min_agreement <= 1.0:
      raise ValueError("min_agreement must be in [0, 1]")
    return cls(frozenset(names), max_rationale_chars, min_agreement)

  def failing(self, f: Facts) -> list[str]:
    """Every check this input fails, enabled or not, in CHECKS order."""
    out = []
    if f.failed:
      return [FAILED]
    if not f.has_label:
      out.append("unparsed")
    elif not f.rationale:
      out.append("empty")
    if f.rationale and len(f.rationale) > self.max_rationale_chars:
      out.append("too_long")
    if f.has_label and f.agreement < self.min_agreement:
      out.append("low_agreement")
    if f.agrees_with_gold is False:
      out.append("disagree")
    return out

  def drop_reason(self, failing: Iterable[str]) -> str | None:
    """The first failing check that drops the record, or None to keep it."""
    return next((c for c in failing if c == FAILED or c in self.enabled), None)


class Tally:
  """Counts per check: how many inputs fail it, and how many it dropped (first reason)."""

  def __init__(self):
    self.failing: collections.Counter = collections.Counter()
    self.dropped: collections.Counter = collections.Counter()
    self.kept = 0

  def add(self, failing: list[str], reason: str | None) -> None:
    self.failing.update(failing)
    if reason is None:
      self.kept += 1
    else:
      self.dropped[reason] += 1

  def as_dict(self) -> dict[str, dict[str, int] | int]:
    return {"kept": self.kept, "dropped": {c: self.dropped.get(c, 0) for c in CHECKS},
            "failing": {c: self.failing.get(c, 0) for c in CHECKS}}

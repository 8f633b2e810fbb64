"""Deterministic nested subsets of a train split, for data-efficiency curves.

`nested_subset(examples, pct)` ranks examples by a fixed hash of their id and keeps the first
ceil(pct / 100 * n). The ranking does not depend on `pct`, so every smaller subset lies inside
every larger one, and it does not depend on file order or on the machine. Only train is subset;
validation and test are never touched. Task names carry the percentage as `_pct<p>`
(`anli1_dsbs_pct10`, `svamp_label_gt_pct0.5`); 100 % has no suffix.
"""
from __future__ import annotations

import hashlib
import math
from typing import Sequence, TypeVar

FRACTIONS = (0.5, 1, 2, 5, 10, 20, 25, 50, 75, 100)  # percent; names registered on import
_SALT = b"dsbs-fraction-v1:"

T = TypeVar("T")


def check_fraction(pct: float) -> float:
  """Validates a percentage in (0, 100]."""
  pct = float(pct)
  if not 0.0 < pct <= 100.0 or math.isnan(pct):
    raise ValueError(f"fraction must be a percentage in (0, 100], got {pct}")
  if float(f"{pct:g}") != pct:  # the name must identify the fraction exactly
    raise ValueError(f"fraction {pct!r} has more than 6 significant digits")
  return pct


def fraction_suffix(pct: float) -> str:
  """"" for 100 %, else "_pct<p>" with p printed as in FRACTIONS ("_pct0.5", "_pct10")."""
  pct = check_fraction(pct)
  return "" if pct == 100.0 else f"_pct{pct:g}"


def subset_size(n: int, pct: float) -> int:
  """ceil(pct% of n), at least 1 when n > 0."""
  pct = check_fraction(pct)
  if n == 0:
    return 0
  # Round before ceil so 10% of 30 is 3, not 4 from 3.0000000000000004.
  return max(1, min(n, math.ceil(round(n * pct / 100.0, 9))))


def rank_key(example_id: str) -> tuple[bytes, str]:
  return hashlib.sha256(_SALT + example_id.encode("utf-8")).digest(), example_id


def nested_subset(examples: Sequence[T], pct: float, *, id_of=lambda ex: ex.id) -> list[T]:
  """The first ceil(pct% * n) examples in fixed hash-of-id order, returned in input order."""
  k = subset_size(len(examples), pct)
  if k == len(examples):
    return list(examples)
  order = sorted(range(len(examples)), key=lambda i: rank_key(id_of(examples[i])))
  keep = set(order[:k])
  return [ex for i, ex in enumerate(examples) if i in keep]

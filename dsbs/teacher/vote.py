"""Self-consistency: a majority vote over the labels parsed from several teacher samples.

Valid samples are those whose answer mapped into the label space (statuses OK and
EMPTY_RATIONALE). The winner is the label with the most votes; a tie goes to the tied label
that appeared first in sample order (sample 0 first), so the vote is deterministic and, with one
sample, is just that sample. The rationale kept is that of the first sample voting for the winner
that has one. agreement = votes for the winner / valid samples (0.0 when none is valid).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from dsbs.data import record
from dsbs.data.parse import ParseResult


@dataclasses.dataclass(frozen=True)
class Vote:
  """The outcome of one input's vote.

  Attributes:
    label: the winning label, or None when no sample's answer mapped.
    rationale: the rationale of the chosen sample, or None.
    status: the parse status of the result (OK when a label and a rationale were found; else the
      status of the first sample, or EMPTY_RATIONALE when the winner has no rationale).
    votes: label -> number of valid samples voting for it.
    agreement: votes for the winner / valid samples.
    num_samples: samples considered; valid: samples with a mapped label.
    chosen: index of the sample whose rationale is kept, or None.
  """

  label: str | None
  rationale: str | None
  status: str
  votes: dict[str, int]
  agreement: float
  num_samples: int
  valid: int
  chosen: int | None


def majority_vote(results: Sequence[ParseResult],
                  same: Callable[[str, str], bool] | None = None) -> Vote:
  """Votes over parsed samples; `same` decides when two labels are one (default: equality).

  With `same` (e.g. equal arithmetic value), a label joins the first earlier label it equals,
  and that earlier spelling stands for the group.
  """
  same = same or (lambda a, b: a == b)
  groups: list[tuple[str, list[int]]] = []  # (representative label, sample indices) by first use
  for i, r in enumerate(results):
    if r.label is None:
      continue
    for rep, members in groups:
      if same(rep, r.label):
        members.append(i)
        break
    else:
      groups.append((r.label, [i]))
  n = len(results)
  if not groups:
    status = results[0].status if results else record.NO_TEACHER
    return Vote(None, None, status, {}, 0.0, n, 0, None)
  valid = sum(len(m) for _, m in groups)
  best = max(len(m) for _, m in groups)
  label, members = next(g for g in groups if len(g[1]) == best)  # earliest first use wins ties
  chosen = next((i for i in members if results[i].rationale), None)
  rationale = results[chosen].rationale if chosen is not None else None
  status = record.OK if rationale else record.EMPTY_RATIONALE
  return Vote(label, rationale, status, {rep: len(m) for rep, m in groups}, best / valid, n, valid,
              chosen if chosen is not None else members[0])

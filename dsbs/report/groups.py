"""Cells grouped by every axis but the seed, with their mean and 95% interval; each method's
difference from the baseline method paired by seed; the orders of axes and values used by every
table and figure; the paper-style pivot (methods x % of train data)."""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Mapping, Sequence

from dsbs.report.cells import TEST_PREDICTIONS, Cell, read_correct
from dsbs.report.stats import LEVEL, bootstrap_interval, t_interval

METHOD_ORDER = ("finetune", "distill", "cot", "dsbs_llm", "dsbs")
AXIS_ORDER = ("dataset", "student", "vocab", "loss_mode", "engine", "method", "fraction",
              "label_rate", "alpha", "seed")
_SIZE_WORDS = ("tiny", "small", "base", "large", "xl", "3b", "xxl", "11b")


def axis_key(axis: str) -> tuple[int, str]:
  return (AXIS_ORDER.index(axis) if axis in AXIS_ORDER else len(AXIS_ORDER), axis)


def value_key(v: Any) -> tuple[int, Any]:
  if isinstance(v, (int, float)) and not isinstance(v, bool):
    return (0, float(v))
  if isinstance(v, str) and v in METHOD_ORDER:
    return (1, METHOD_ORDER.index(v))
  if isinstance(v, str):
    return (2, size_rank(v), v)
  return (3, str(v))


def axes_key(axes: Mapping[str, Any]) -> list[tuple]:
  """The order of groups in every table: by axis (AXIS_ORDER), then by value."""
  return [(axis_key(k), value_key(v)) for k, v in sorted(axes.items(),
                                                         key=lambda kv: axis_key(kv[0]))]


def size_rank(student: str) -> int:
  """Orders student names by the size word they carry (tiny < small < base < ... < xxl)."""
  for i, word in sorted(enumerate(_SIZE_WORDS), key=lambda iw: -len(iw[1])):
    if re.search(rf"(^|_){word}($|_)", student):
      return i
  return len(_SIZE_WORDS)


@dataclasses.dataclass
class Group:
  """The cells that differ only in their seed."""
  axes: dict[str, Any]
  seeds: list[Any]
  values: list[float]
  mean: float
  low: float | None
  high: float | None
  method: str  # "t" over seeds, "bootstrap" over test examples, or "none"

  @property
  def n(self) -> int:
    return len(self.values)

  def text(self, digits: int = 1) -> str:
    if self.method == "t":
      return f"{self.mean:.{digits}f} ± {(self.high - self.low) / 2:.{digits}f} (n={self.n})"
    if self.method == "bootstrap":
      return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]† (n=1)"
    return f"{self.mean:.{digits}f} (n={self.n})"


def _freeze(axes: Mapping[str, Any]) -> tuple:
  return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in axes.items()))


def group_cells(cells: Iterable[Cell], level: float = LEVEL) -> list[Group]:
  """Groups cells with a value by every axis but the seed; mean, interval and its method."""
  buckets: dict[tuple, list[Cell]] = {}
  for cell in cells:
    if cell.value is None:
      continue
    axes = {k: v for k, v in cell.overrides.items() if k != "seed"}
    buckets.setdefault(_freeze(axes), []).append(cell)
  groups = []
  for members in buckets.values():
    members.sort(key=lambda c: value_key(c.overrides.get("seed", 0)))
    values = [c.value for c in members]
    axes = {k: v for k, v in members[0].overrides.items() if k != "seed"}
    seeds = [c.overrides.get("seed") for c in members]
    if len(values) >= 2:
      mean, low, high = t_interval(values, level)
      groups.append(Group(axes, seeds, values, mean, low, high, "t"))
      continue
    correct = read_correct(members[0].run_dir) if members[0].run_dir else None
    if correct:
      point, low, high = bootstrap_interval(correct, level)
      if abs(point - values[0]) < 0.01:  # the predictions are those the metric was computed on
        groups.append(Group(axes, seeds, values, values[0], low, high, "bootstrap"))
        continue
      members[0].problem = (f"{TEST_PREDICTIONS} scores {point:.2f}, the metrics file "
                            f"{values[0]:.2f}: no bootstrap from predictions of another run")
    groups.append(Group(axes, seeds, values, values[0], None, None, "none"))
  groups.sort(key=lambda g: axes_key(g.axes))
  return groups


BASELINE = "finetune"


@dataclasses.dataclass
class Paired:
  """A method minus the baseline, seed by seed, all other axes equal."""
  axes: dict[str, Any]  # the compared method's group (method included, seed not)
  baseline: str
  seeds: list[Any]
  diffs: list[float]
  mean: float
  low: float | None
  high: float | None

  @property
  def n(self) -> int:
    return len(self.diffs)

  def text(self, digits: int = 1) -> str:
    if self.low is None:
      return f"{self.mean:+.{digits}f} (n={self.n})"
    return f"{self.mean:+.{digits}f} ± {(self.high - self.low) / 2:.{digits}f} (n={self.n})"


def paired_differences(cells: Iterable[Cell], baseline: str = BASELINE,
                       level: float = LEVEL) -> list[Paired]:
  """Each method's test metric minus the baseline's: every cell is paired with the baseline cell
  of its seed that agrees with it on every axis baseline cells have (an axis no baseline cell
  has, like the label rate, a, or a `gin.` axis of the other method alone, is the compared
  method's own setting). Per group: the mean difference and, with two or more seeds, a Student
  t interval over the seeds' differences. Pairing by seed takes out what a seed does to both
  (its draw of the data fraction and of the initial weights), so a consistent gain shows even
  where the two groups' own intervals overlap."""
  cells = [c for c in cells if c.value is not None]
  base: dict[tuple, float] = {}
  base_axes: set[str] = set()
  for c in cells:
    if c.overrides.get("method") == baseline:
      base[_freeze({k: v for k, v in c.overrides.items() if k != "method"})] = c.value
      base_axes |= set(c.overrides)
  buckets: dict[tuple, tuple[dict[str, Any], list[tuple[Any, float]]]] = {}
  for c in cells:
    if c.overrides.get("method") in (baseline, None):
      continue
    ref = base.get(_freeze({k: v for k, v in c.overrides.items()
                            if k != "method" and k in base_axes}))
    if ref is None:
      continue
    axes = {k: v for k, v in c.overrides.items() if k != "seed"}
    buckets.setdefault(_freeze(axes), (axes, []))[1].append(
        (c.overrides.get("seed"), c.value - ref))
  out = []
  for axes, pairs in buckets.values():
    pairs.sort(key=lambda sd: value_key(sd[0] if sd[0] is not None else 0))
    diffs = [d for _, d in pairs]
    if len(diffs) >= 2:
      mean, low, high = t_interval(diffs, level)
    else:
      mean, low, high = diffs[0], None, None
    out.append(Paired(axes, baseline, [s for s, _ in pairs], diffs, mean, low, high))
  out.sort(key=lambda p: axes_key(p.axes))
  return out


def split_panels(groups: Sequence[Any], along: Sequence[str]) -> list[tuple[dict[str, Any],
                                                                      list[Any]]]:
  """Groups partitioned by every axis except `along` (one panel per partition), in order."""
  panels: dict[tuple, tuple[dict[str, Any], list[Any]]] = {}
  for g in groups:
    rest = {k: v for k, v in g.axes.items() if k not in along}
    panels.setdefault(_freeze(rest), (rest, []))[1].append(g)
  return list(panels.values())


def title(rest: Mapping[str, Any]) -> str:
  parts = [f"{k} {fmt(v)}" for k, v in sorted(rest.items(), key=lambda kv: axis_key(kv[0]))]
  return " · ".join(parts) or "all cells"


_SLUG_PREFIX = {"fraction": "pct", "label_rate": "rate", "alpha": "a"}


def slug(rest: Mapping[str, Any]) -> str:
  text = "-".join(_SLUG_PREFIX.get(k, "") + fmt(v)
                  for k, v in sorted(rest.items(), key=lambda kv: axis_key(kv[0])))
  return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_")[:80] or "all"


def fmt(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:g}"
  return str(v)


def pivot(groups: Sequence[Group | Paired]
          ) -> list[tuple[dict[str, Any], list[str], list[list[str]]]]:
  """Per panel (all axes but method, fraction, seed): header and rows of methods x fraction,
  of groups or of paired differences."""
  out = []
  for rest, members in split_panels(groups, ("method", "fraction")):
    fractions = sorted({g.axes.get("fraction") for g in members}, key=value_key)
    methods = sorted({g.axes.get("method") for g in members}, key=value_key)
    header = ["method"] + [("default" if f is None else f"{fmt(f)}%") for f in fractions]
    rows = []
    for m in methods:
      row = [str(m)]
      for f in fractions:
        g = next((g for g in members if g.axes.get("method") == m
                  and g.axes.get("fraction") == f), None)
        row.append(g.text() if g else "—")
      rows.append(row)
    out.append((rest, header, rows))
  return out

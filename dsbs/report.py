r"""Sweep results -> tables with 95% intervals, CSV, JSON and PNG plots.

  python -m dsbs.report <sweep dir | runs dir | gs://...> [--output DIR] [--metric accuracy]

Reads each cell's test metrics (`<run dir>/eval/test_greedy/metrics.json`, written by
`dsbs.train --then_evaluate`, `dsbs.evaluate`, or the sweep runner after `t5x.eval`) and joins
them with the cell's run record (`run_record.json`, launch/records.py) and, for a sweep dir, with
the sweep's state (`state.json`: every cell of the definition, run or not). Cells are grouped by
every axis but the seed; each group gets its mean, a 95% confidence interval and n: Student t
over the seeds when a group has two or more, else a percentile bootstrap over the test examples
of its one run (`eval/test_greedy/predictions.jsonl`, seeded, so the same files give the same
interval); the output says which. Writes, into --output (default `<input>/report`; `./report`
for gs:// inputs):

  report.md     pivot tables (methods x % of train data, per dataset, student and other axes),
                every group, and the cells that are missing (in the definition, never run),
                failed, interrupted, running, or whose metrics could not be read (listed, counted,
                never a crash)
  groups.csv, cells.csv, report.json
  plots/*.png   accuracy against % of train data per method with error bars (the paper's
                data-efficiency figure), against the student, against the label rate and a

Remote paths go through tf.io.gfile (dsbs.fileio); local reports never import TensorFlow.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import platform
import re
import socket
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from dsbs import fileio, summaries

# Files of a run dir / sweep dir that the report reads (the runner and trainers write them).
RUN_RECORD = "run_record.json"
TEST_METRICS = f"{summaries.eval_dir()}/metrics.json"  # the test split, decoded greedily
TEST_PREDICTIONS = f"{summaries.eval_dir()}/predictions.jsonl"
EXPERIMENT = "experiment.json"
SWEEP_STATE = "state.json"

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
METHOD_ORDER = ("finetune", "distill", "cot", "dsbs_llm", "dsbs")
AXIS_ORDER = ("dataset", "student", "vocab", "loss_mode", "engine", "method", "fraction",
              "label_rate", "alpha", "seed")
_SIZE_WORDS = ("tiny", "small", "base", "large", "xl", "3b", "xxl", "11b")


# ---- Statistics ------------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
  """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
  tiny = 1e-300
  c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 10_000):
    m2 = 2 * m
    for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
      d = 1.0 + num * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + num / c
      c = c if abs(c) > tiny else tiny
      h *= d * c
    if abs(d * c - 1.0) < 1e-15:
      break
  return h


def betainc(a: float, b: float, x: float) -> float:
  """The regularized incomplete beta function I_x(a, b)."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
               + b * math.log1p(-x))
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _betacf(a, b, x) / a
  return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
  """P(T <= t) for Student's t with `df` degrees of freedom."""
  tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
  return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
  """The p-quantile of Student's t (bisection on t_cdf; 1e-12 absolute)."""
  if not 0.0 < p < 1.0 or df <= 0:
    raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
  if p < 0.5:
    return -t_quantile(1.0 - p, df)
  lo, hi = 0.0, 1.0
  while t_cdf(hi, df) < p:
    hi *= 2.0
  while hi - lo > 1e-12 * max(1.0, hi):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
  return 0.5 * (lo + hi)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
  """(mean, low, high): mean +- t_{(1+level)/2, n-1} * sd / sqrt(n), for n >= 2 values."""
  n = len(values)
  if n < 2:
    raise ValueError("a t interval needs at least two values")
  mean = sum(values) / n
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
  return mean, mean - half, mean + half


def bootstrap_interval(correct_by_task: Mapping[str, Sequence[bool]], level: float = LEVEL,
                       resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
  """(accuracy %, low, high): percentile bootstrap over test examples, resampled within each
  task; the accuracy is the mean of the tasks' accuracies, as `dsbs.evaluate` reports it."""
  rng = np.random.default_rng(seed)
  tasks = [np.asarray(v, dtype=np.float64) for _, v in sorted(correct_by_task.items()) if len(v)]
  if not tasks:
    raise ValueError("no examples to resample")
  totals = np.zeros(resamples)
  for c in tasks:
    for start in range(0, resamples, 256):  # bounded memory for large test sets
      k = min(256, resamples - start)
      totals[start:start + k] += c[rng.integers(0, len(c), size=(k, len(c)))].mean(axis=1)
  stats = 100.0 * totals / len(tasks)
  point = 100.0 * float(np.mean([c.mean() for c in tasks]))
  lo, hi = np.percentile(stats, [50.0 * (1 - level), 50.0 * (1 + level)])
  return point, float(lo), float(hi)


# ---- Reading ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Cell:
  """One cell: its overrides, status, where it ran and its test metric (or why there is none)."""
  name: str
  overrides: dict[str, Any]
  status: str  # done / failed / interrupted / running / pending (never run)
  run_dir: str | None
  value: float | None = None
  problem: str | None = None  # why a done cell has no value
  reason: str | None = None  # the runner's note for failed / interrupted cells
  exit_code: int | None = None
  record: dict[str, Any] | None = None
  step: int | None = None


def _join(base: str, rel: str) -> str:
  return base.rstrip("/") + "/" + rel


def _read_json(path: str) -> Any:
  with fileio.open_text(path) as f:
    return json.load(f)


def read_metric(run_dir: str, metric: str) -> tuple[float | None, int | None, str | None]:
  """(value, checkpoint step, problem) from the run dir's test metrics file."""
  path = _join(run_dir, TEST_METRICS)
  if not fileio.exists(path):
    return None, None, f"no {TEST_METRICS}"
  try:
    data = _read_json(path)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    return None, None, f"{path}: unreadable ({type(e).__name__}: {e})"
  scores = data.get("metrics") if isinstance(data, dict) else None
  if not isinstance(scores, dict):
    return None, None, f"{path}: no 'metrics' object"
  value = scores.get(metric)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    return None, None, f"{path}: metrics.{metric} is {value!r}, not a number"
  step = data.get("step")
  return float(value), step if isinstance(step, int) else None, None


def read_correct(run_dir: str) -> dict[str, list[bool]] | None:
  """Per-task correctness of each test example from predictions.jsonl; None if unusable."""
  path = _join(run_dir, TEST_PREDICTIONS)
  if not fileio.exists(path):
    return None
  out: dict[str, list[bool]] = {}
  try:
    with fileio.open_text(path) as f:
      for line in f:
        if not line.strip():
          continue
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("correct"), bool):
          return None
        out.setdefault(str(row.get("task", "")), []).append(row["correct"])
  except (OSError, UnicodeDecodeError, ValueError):
    return None
  return out or None


def _subdirs(path: str) -> list[str]:
  try:
    names = fileio.listdir(path)
  except (OSError, ValueError):
    return []
  out = []
  for name in names:
    full = _join(path, name.rstrip("/"))
    if fileio.is_remote(path) and name.endswith("/") or not fileio.is_remote(path) and os.path.isdir(full):
      out.append(full)
  return out


def find_run_dirs(path: str) -> list[str]:
  """Dirs holding a run record: `path` itself, its children and grandchildren."""
  found, frontier = [], [path]
  for _ in range(3):
    nxt = []
    for d in frontier:
      if fileio.exists(_join(d, RUN_RECORD)):
        found.append(d.rstrip("/"))
      else:
        nxt += _subdirs(d)
    frontier = nxt
  return sorted(found)


def _record(run_dir: str) -> tuple[dict[str, Any] | None, str | None]:
  path = _join(run_dir, RUN_RECORD)
  if not fileio.exists(path):
    return None, None
  try:
    rec = _read_json(path)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    return None, f"{path}: unreadable ({type(e).__name__}: {e})"
  if not isinstance(rec, dict):
    return None, f"{path}: not a JSON object"
  return rec, None


def load(path: str, metric: str = "accuracy") -> tuple[list[Cell], dict[str, Any]]:
  """The cells under `path` (a sweep dir with its state, or any dir of run dirs) and facts about
  the source (name, whether never-run cells could be listed)."""
  path = path.rstrip("/") or "/"
  if not fileio.exists(path):
    raise FileNotFoundError(f"{path}: no such directory")
  cells: list[Cell] = []
  state_path = _join(path, SWEEP_STATE)
  if fileio.exists(state_path):
    try:
      state = _read_json(state_path)
      items = sorted(state["cells"].items(), key=lambda kv: kv[1].get("order", 0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      raise ValueError(f"{state_path}: unreadable sweep state ({type(e).__name__}: {e})") from None
    for name, c in items:
      if not c.get("in_definition", True):
        continue
      run_dir = c.get("run_dir") or _join(_join(path, "runs"), name)
      if not fileio.is_remote(path) and not fileio.exists(run_dir) and fileio.exists(
          _join(_join(path, "runs"), name)):
        run_dir = _join(_join(path, "runs"), name)  # a sweep dir copied from elsewhere
      status = c.get("status", "pending")
      cells.append(Cell(name=name, overrides=dict(c.get("overrides", {})), status=status,
                        run_dir=run_dir, reason=c.get("reason"), exit_code=c.get("exit_code")))
    source = {"kind": "sweep", "name": state.get("sweep"), "knows_missing": True}
  else:
    for run_dir in find_run_dirs(path):
      rec, problem = _record(run_dir)
      name = os.path.basename(run_dir)
      if rec is None:
        cells.append(Cell(name=name, overrides={}, status="done", run_dir=run_dir,
                          problem=problem))
        continue
      cells.append(Cell(name=str(rec.get("cell", name)), overrides=dict(rec.get("overrides", {})),
                        status=str(rec.get("status", "done")), run_dir=run_dir,
                        reason=rec.get("reason"), exit_code=rec.get("exit_code"), record=rec))
    names = {c.record.get("sweep") for c in cells if c.record}
    source = {"kind": "runs", "name": names.pop() if len(names) == 1 else None,
              "knows_missing": False}
  for cell in cells:
    record_problem = None
    if cell.record is None and cell.run_dir and cell.status != "pending":
      cell.record, record_problem = _record(cell.run_dir)
    if cell.status == "done" and cell.problem is None:
      cell.value, cell.step, cell.problem = read_metric(cell.run_dir, metric)
    cell.problem = cell.problem or record_problem  # beside a value: listed under Notes
  return cells, source


# ---- Grouping ---------------------------------------------------------------------------------

def _axis_key(axis: str) -> tuple[int, str]:
  return (AXIS_ORDER.index(axis) if axis in AXIS_ORDER else len(AXIS_ORDER), axis)


def _value_key(v: Any) -> tuple[int, Any]:
  if isinstance(v, (int, float)) and not isinstance(v, bool):
    return (0, float(v))
  if isinstance(v, str) and v in METHOD_ORDER:
    return (1, METHOD_ORDER.index(v))
  if isinstance(v, str):
    return (2, size_rank(v), v)
  return (3, str(v))


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
    members.sort(key=lambda c: _value_key(c.overrides.get("seed", 0)))
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
  groups.sort(key=lambda g: [(_axis_key(k), _value_key(v)) for k, v in
                             sorted(g.axes.items(), key=lambda kv: _axis_key(kv[0]))])
  return groups


def _split(groups: Sequence[Group], along: Sequence[str]) -> list[tuple[dict[str, Any],
                                                                        list[Group]]]:
  """Groups partitioned by every axis except `along` (one panel per partition), in order."""
  panels: dict[tuple, tuple[dict[str, Any], list[Group]]] = {}
  for g in groups:
    rest = {k: v for k, v in g.axes.items() if k not in along}
    panels.setdefault(_freeze(rest), (rest, []))[1].append(g)
  return list(panels.values())


def _title(rest: Mapping[str, Any]) -> str:
  parts = [f"{k} {_fmt(v)}" for k, v in sorted(rest.items(), key=lambda kv: _axis_key(kv[0]))]
  return " · ".join(parts) or "all cells"


_SLUG_PREFIX = {"fraction": "pct", "label_rate": "rate", "alpha": "a"}


def _slug(rest: Mapping[str, Any]) -> str:
  text = "-".join(_SLUG_PREFIX.get(k, "") + _fmt(v)
                  for k, v in sorted(rest.items(), key=lambda kv: _axis_key(kv[0])))
  return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_")[:80] or "all"


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:g}"
  return str(v)


def pivot(groups: Sequence[Group]) -> list[tuple[dict[str, Any], list[str], list[list[str]]]]:
  """Per panel (all axes but method, fraction, seed): header and rows of methods x fraction."""
  out = []
  for rest, members in _split(groups, ("method", "fraction")):
    fractions = sorted({g.axes.get("fraction") for g in members}, key=_value_key)
    methods = sorted({g.axes.get("method") for g in members}, key=_value_key)
    header = ["method"] + [("default" if f is None else f"{_fmt(f)}%") for f in fractions]
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


# ---- Plots ------------------------------------------------------------------------------------

def _plt():
  """matplotlib with the Agg backend (imported when plotting: it is slow to import)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def method_colour(method: Any) -> str:
  """One colour per method in every figure (matplotlib's default cycle, by METHOD_ORDER)."""
  i = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER) + sum(
      map(ord, str(method))) % 5
  return f"C{i % 10}"


def _errorbars(members: Sequence[Group]) -> tuple[list[float], list[list[float]]]:
  means = [g.mean for g in members]
  lower = [g.mean - g.low if g.low is not None else 0.0 for g in members]
  upper = [g.high - g.mean if g.high is not None else 0.0 for g in members]
  return means, [lower, upper]


def plot_panels(groups: Sequence[Group], x_axis: str, out_dir: str, metric: str) -> list[str]:
  """One PNG per panel with >= 2 values of `x_axis`: the metric against it, a line per method,
  95% intervals as error bars. Returns the files written."""
  written = []
  for rest, members in _split(groups, ("method", x_axis)):
    xs = sorted({g.axes.get(x_axis) for g in members if x_axis in g.axes}, key=_value_key)
    if len(xs) < 2:
      continue
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    numeric = all(isinstance(x, (int, float)) for x in xs)
    methods = sorted({g.axes.get("method") for g in members}, key=_value_key)
    log_x = numeric and x_axis == "fraction"
    span = (float(xs[-1]) - float(xs[0])) if numeric else float(len(xs) - 1)
    for i, m in enumerate(methods):
      line = sorted((g for g in members if g.axes.get("method") == m and x_axis in g.axes),
                    key=lambda g: _value_key(g.axes[x_axis]))
      if not line:
        continue
      dodge = 0.025 * (i - (len(methods) - 1) / 2)  # side by side: error bars stay readable
      pos = [(g.axes[x_axis] * 2 ** dodge if log_x else g.axes[x_axis] + dodge * span)
             if numeric else xs.index(g.axes[x_axis]) + dodge * 2.4 for g in line]
      means, err = _errorbars(line)
      ax.errorbar(pos, means, yerr=err, marker="o", capsize=4, linewidth=1.8,
                  label=str(m), color=method_colour(m))
    if log_x:
      ax.set_xscale("log", base=2)
    if numeric:
      ax.set_xticks(xs)
      ax.set_xticklabels([_fmt(x) for x in xs])
    else:
      ax.set_xticks(range(len(xs)))
      ax.set_xticklabels([str(x) for x in xs])
    ax.minorticks_off()
    label = {"fraction": "% of train data", "label_rate": "label rate (share of label "
             "examples)", "alpha": "a (weight of the label loss)", "student": "student"}
    ax.set_xlabel(label.get(x_axis, x_axis))
    ax.set_ylabel(f"test {metric} (%), 95% CI")
    if metric == "accuracy":  # a percentage: bars reaching past 0 or 100 are cut at the frame
      low, high = ax.get_ylim()
      ax.set_ylim(max(low, 0.0), min(high, 100.0))
    ax.set_title(_title(rest), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(title="method", fontsize=9)
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{metric}_vs_{x_axis}-{_slug(rest)}.png")
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
  return written


# ---- Output -----------------------------------------------------------------------------------

def _axes_of(items: Iterable[Mapping[str, Any]]) -> list[str]:
  return sorted({k for it in items for k in it}, key=_axis_key)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return lines


def machine() -> str:
  return f"{socket.gethostname()} ({platform.platform()}, {os.cpu_count()} CPUs)"


def build(cells: Sequence[Cell], source: Mapping[str, Any], path: str, out_dir: str,
          metric: str = "accuracy") -> dict[str, Any]:
  """Writes report.md, groups.csv, cells.csv, report.json and plots/; returns the summary."""
  groups = group_cells(cells)
  plot_dir = os.path.join(out_dir, "plots")
  plots = {axis: plot_panels(groups, axis, plot_dir, metric)
           for axis in ("fraction", "student", "label_rate", "alpha")}
  lists = {
      "missing": [c for c in cells if c.status == "pending"],
      "failed": [c for c in cells if c.status == "failed"],
      "interrupted": [c for c in cells if c.status == "interrupted"],
      "running": [c for c in cells if c.status == "running"],
      "unreadable": [c for c in cells if c.status == "done" and c.value is None],
      "notes": [c for c in cells if c.value is not None and c.problem],
  }
  when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
  used = sum(1 for c in cells if c.value is not None)
  methods = sorted({g.method for g in groups})
  md = [f"# Sweep report: {source.get('name') or path}", "",
        f"Generated {when} on {machine()} from `{path}`. Metric: test `{metric}` (%) from "
        f"`<run dir>/{TEST_METRICS}` (the best-on-validation checkpoint). Intervals are "
        f"{LEVEL:.0%}: " + "; ".join(
            {"t": "`± h`: Student t over seeds (n - 1 degrees of freedom)",
             "bootstrap": f"`[low, high]†`: one seed, a percentile bootstrap over the test "
                          f"examples ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}, "
                          f"`{TEST_PREDICTIONS}`)",
             "none": "no interval: one seed and no per-example predictions"}[m]
            for m in methods) + ".", "",
        f"Cells: {len(cells)}" + (" in the definition" if source.get("knows_missing") else
                                  " found (no sweep state: never-run cells cannot be listed)")
        + f"; {used} with test metrics; " + ", ".join(f"{len(v)} {k}" for k, v in lists.items()
                                                     if k != "notes")
        + ".", ""]
  for rest, header, rows in pivot(groups):
    md += [f"## {_title(rest)}", ""] + _md_table(header, rows) + [""]
    for p in plots["fraction"]:
      if p.endswith(f"-{_slug(rest)}.png"):
        md += [f"![{metric} vs % of train data]({os.path.relpath(p, out_dir)})", ""]
  for axis in ("student", "label_rate", "alpha"):
    for p in plots[axis]:
      md += [f"![{metric} vs {axis}]({os.path.relpath(p, out_dir)})", ""]
  axes = _axes_of(g.axes for g in groups)
  header = axes + ["n", "seeds", "mean", f"{LEVEL:.0%} CI", "CI method"]
  rows = [[_fmt(g.axes.get(a, "")) for a in axes]
          + [g.n, ",".join(map(str, g.seeds)), f"{g.mean:.2f}",
             "" if g.low is None else f"[{g.low:.2f}, {g.high:.2f}]", g.method] for g in groups]
  md += ["## All groups", ""] + _md_table(header, rows) + [""]
  titles = {"missing": "Missing (in the definition, never run)", "failed": "Failed",
            "interrupted": "Interrupted (resume the sweep to finish them)",
            "running": "Running (per the sweep state)",
            "unreadable": "Done, but test metrics missing or unreadable",
            "notes": "Notes"}
  for key, members in lists.items():
    if not members:
      continue
    md += [f"## {titles[key]} ({len(members)})", ""]
    for c in members:
      note = c.problem if key in ("unreadable", "notes") else c.reason
      if key == "failed" and c.exit_code is not None and not note:
        note = f"exit {c.exit_code}"
      md.append(f"- `{c.name}`" + (f": {note}" if note else ""))
    md.append("")

  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(md))
  with open(os.path.join(out_dir, "groups.csv"), "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f)
    w.writerow(axes + ["n", "seeds", "mean", "ci_low", "ci_high", "ci_method", "values"])
    for g in groups:
      w.writerow([g.axes.get(a, "") for a in axes]
                 + [g.n, " ".join(map(str, g.seeds)), g.mean, g.low, g.high, g.method,
                    " ".join(map(str, g.values))])
  cell_axes = _axes_of(c.overrides for c in cells)
  with open(os.path.join(out_dir, "cells.csv"), "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f)
    w.writerow(["cell", "status"] + cell_axes + [metric, "step", "problem", "git_commit",
                                                 "git_dirty", "run_dir"])
    for c in cells:
      git = (c.record or {}).get("git") or {}
      w.writerow([c.name, c.status] + [c.overrides.get(a, "") for a in cell_axes]
                 + [c.value, c.step, c.problem or c.reason or "", git.get("commit"),
                    git.get("dirty"), c.run_dir])
  summary = {
      "generated": when, "machine": machine(), "source": path, "metric": metric,
      "level": LEVEL, "sweep": source.get("name"),
      "groups": [{**dataclasses.asdict(g), "n": g.n} for g in groups],
      "cells": [{"cell": c.name, "status": c.status, "overrides": c.overrides, metric: c.value,
                 "step": c.step, "problem": c.problem, "reason": c.reason,
                 "run_dir": c.run_dir} for c in cells],
      **{k: [c.name for c in v] for k, v in lists.items()},
      "plots": [os.path.relpath(p, out_dir) for ps in plots.values() for p in ps],
  }
  with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1, default=str)
  return summary


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m dsbs.report",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("path", help="a sweep dir (with state.json) or a dir of run dirs; gs:// ok")
  parser.add_argument("--output", default=None,
                      help="where to write (default <path>/report; ./report for gs://)")
  parser.add_argument("--metric", default="accuracy", help="the test metric to report")
  args = parser.parse_args(argv)
  out = args.output or ("report" if fileio.is_remote(args.path) else os.path.join(args.path, "report"))
  try:
    cells, source = load(args.path, args.metric)
  except (FileNotFoundError, ValueError) as e:
    print(f"dsbs.report: {e}", file=sys.stderr)
    return 2
  summary = build(cells, source, args.path, out, args.metric)
  with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
    sys.stdout.write(f.read())
  print(f"\n# wrote {out}/report.md, groups.csv, cells.csv, report.json and "
        f"{len(summary['plots'])} plot(s)", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())

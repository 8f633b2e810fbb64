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
                each method's difference from standard finetuning paired by seed (mean and t
                interval over the seeds' differences), every group, and the cells that are missing (in the definition, never run),
                failed, interrupted, running, or whose metrics could not be read (listed, counted,
                never a crash)
  groups.csv, cells.csv, report.json
  plots/*.png   accuracy against % of train data per method with error bars (the paper's
                data-efficiency figure), against the student, against the label rate and a;
                the validation curves (metrics.jsonl) that show whether the budget converged

Modules: cells.py (reading run dirs and sweep state), stats.py (t and bootstrap intervals),
groups.py (grouping, orders, the pivot), plots.py (figures); this file writes the outputs.

Remote paths go through tf.io.gfile (dsbs.fileio); local reports never import TensorFlow.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import socket
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

from dsbs import fileio
from dsbs.report.cells import (EXPERIMENT, RUN_RECORD, SWEEP_STATE, TEST_METRICS,
                               TEST_PREDICTIONS, TRAIN_METRICS, Cell, load, read_curve)
from dsbs.report.groups import (BASELINE, Group, Paired, axis_key, fmt, group_cells,
                                paired_differences, pivot, size_rank, slug, title)
from dsbs.report.plots import plot_curves, plot_panels
from dsbs.report.stats import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, LEVEL, bootstrap_interval,
                               t_cdf, t_interval, t_quantile)

__all__ = ["EXPERIMENT", "RUN_RECORD", "SWEEP_STATE", "TEST_METRICS", "TEST_PREDICTIONS", "Cell",
           "Group", "Paired", "load", "group_cells", "paired_differences", "pivot", "size_rank", "read_curve",
           "bootstrap_interval", "t_cdf", "t_interval", "t_quantile", "build", "main"]


def _axes_of(items: Iterable[Mapping[str, Any]]) -> list[str]:
  return sorted({k for it in items for k in it}, key=axis_key)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return lines


def machine() -> str:
  return f"{socket.gethostname()} ({platform.platform()}, {os.cpu_count()} CPUs)"


def _shown(run_dir: str | None, path: str) -> str | None:
  """A run dir as the outputs show it: relative to the report's input when it lies inside it
  (a report copied elsewhere names no path of the machine that wrote it), else as given."""
  if not run_dir or fileio.is_remote(run_dir) or fileio.is_remote(path):
    return run_dir
  rel = os.path.relpath(os.path.abspath(run_dir), os.path.abspath(path))
  return run_dir if rel.startswith("..") else rel


def build(cells: Sequence[Cell], source: Mapping[str, Any], path: str, out_dir: str,
          metric: str = "accuracy") -> dict[str, Any]:
  """Writes report.md, groups.csv, cells.csv, report.json and plots/; returns the summary."""
  groups = group_cells(cells)
  paired = paired_differences(cells)
  paired_tables = {slug(rest): (header, rows) for rest, header, rows in pivot(paired)}
  plot_dir = os.path.join(out_dir, "plots")
  plots = {axis: plot_panels(groups, axis, plot_dir, metric)
           for axis in ("fraction", "student", "label_rate", "alpha")}
  plots["curves"] = plot_curves([(c.overrides, read_curve(c.run_dir, metric)) for c in cells
                                 if c.run_dir and c.status != "pending"], plot_dir, metric)
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
            for m in methods) + ("." if methods else " none yet (no cell has test metrics)."),
        "",
        f"Cells: {len(cells)}" + (" in the definition" if source.get("knows_missing") else
                                  " found (no sweep state: never-run cells cannot be listed)")
        + f"; {used} with test metrics; " + ", ".join(f"{len(v)} {k}" for k, v in lists.items()
                                                     if k != "notes")
        + ".", ""]
  for rest, header, rows in pivot(groups):
    md += [f"## {title(rest)}", ""] + _md_table(header, rows) + [""]
    if slug(rest) in paired_tables:
      p_header, p_rows = paired_tables[slug(rest)]
      md += [f"Difference from {BASELINE} (points), paired by seed: the mean over the seeds of "
             f"(method - the {BASELINE} cell of that seed equal on every axis {BASELINE} cells "
             f"have), ± the {LEVEL:.0%} Student t half-width over those differences."]
      md += [""] + _md_table(p_header, p_rows) + [""]
    for p in plots["fraction"]:
      if p.endswith(f"-{slug(rest)}.png"):
        md += [f"![{metric} vs % of train data]({os.path.relpath(p, out_dir)})", ""]
  for axis in ("student", "label_rate", "alpha"):
    for p in plots[axis]:
      md += [f"![{metric} vs {axis}]({os.path.relpath(p, out_dir)})", ""]
  if plots["curves"]:
    md += ["## Validation curves", "",
           f"Validation `{metric}` at each evaluation during training (`<run dir>/"
           f"{TRAIN_METRICS}`, records of kind `eval`): the mean over seeds, shaded over the "
           f"seeds' range. A curve still rising at the last step means the step budget was too "
           f"short; the test metric above is that of the best-on-validation checkpoint.", ""]
    md += [f"![validation {metric}]({os.path.relpath(p, out_dir)})" for p in plots["curves"]]
    md.append("")
  axes = _axes_of(g.axes for g in groups)
  header = axes + ["n", "seeds", "mean", f"{LEVEL:.0%} CI", "CI method"]
  rows = [[fmt(g.axes.get(a, "")) for a in axes]
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
                    git.get("dirty"), _shown(c.run_dir, path)])
  summary = {
      "generated": when, "machine": machine(), "source": path, "metric": metric,
      "level": LEVEL, "sweep": source.get("name"),
      "groups": [{**dataclasses.asdict(g), "n": g.n} for g in groups],
      "paired": [{**dataclasses.asdict(p), "n": p.n} for p in paired],
      "cells": [{"cell": c.name, "status": c.status, "overrides": c.overrides, metric: c.value,
                 "step": c.step, "problem": c.problem, "reason": c.reason,
                 "run_dir": _shown(c.run_dir, path)} for c in cells],
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


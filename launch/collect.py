"""Gathers metrics from run dirs (local or gs://) into one table.

    python launch/collect.py gs://BUCKET/dsbs/sweeps/anli-rate-pct --format=markdown
    python launch/collect.py runs/a runs/b --select=best --group_seeds --format=csv

A run dir is any directory holding at least one of:
  dsbs_job.json                      the sweep cell (launch/tpu_vm.sh --job_json)
  inference_eval/<task>-metrics.jsonl, <eval dir>/inference_eval/<task>-metrics.jsonl
                                     SeqIO's JSONLogger lines {"step": N, "<metric>": v},
                                     written by t5x.train (validation) and t5x.eval (test)
  metrics.jsonl                      the built-in runner's lines; rows with "kind": "eval"
The given paths are run dirs or parents of run dirs (searched two levels deep).

One table row per (run dir, eval source, task): the cell's axes, the step reported and every
numeric metric at that step. `--select=last` (default) reports the last step, `best` the step
with the highest `--metric`. `--group_seeds` averages rows that differ only in `seed` and adds
`n` and `<metric>_std`. Runs with no metrics are listed on stderr, never dropped silently.
"""
from __future__ import annotations

import argparse
import csv
import io as _stdio
import json
import math
import os
import posixpath
import statistics
import sys
from typing import Any, Iterable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout
  sys.path.insert(0, REPO)

from dsbs import fileio  # pylint: disable=g-import-not-at-top,wrong-import-position
from dsbs.data import record  # pylint: disable=g-import-not-at-top,wrong-import-position

JOB_FILE = "dsbs_job.json"
RUNNER_METRICS = "metrics.jsonl"
SEQIO_SUFFIX = "-metrics.jsonl"
AXES = ("sweep", "dataset", "size", "method", "data_pct", "label_rate", "alpha", "seed", "task")


class CollectError(ValueError):
  """A malformed metrics file: the message names the file, the line and the problem."""


def _join(a: str, b: str) -> str:
  return posixpath.join(a, b) if fileio.is_remote(a) else os.path.join(a, b)


def _children(path: str) -> list[str]:
  return [_join(path, c.rstrip("/")) for c in fileio.listdir(path)]


def _read_jsonl(path: str) -> list[dict[str, Any]]:
  rows = []
  try:
    for n, row in record.iter_json_objects(path):
      if "step" not in row:
        raise CollectError(f"{path}:{n}: expected an object with a 'step' field")
      rows.append(row)
  except record.RecordError as e:
    raise CollectError(str(e)) from None
  return rows


def _metric_files(run_dir: str) -> list[tuple[str, str, str]]:
  """(source, task, path) of every SeqIO metrics file of a run dir, one level of eval dirs."""
  found = []
  for source_dir, source in [(run_dir, "")] + [(d, posixpath.basename(d.rstrip("/")))
                                                for d in _children(run_dir) if fileio.isdir(d)]:
    ie = _join(source_dir, "inference_eval")
    if not fileio.exists(ie):
      continue
    for p in _children(ie):
      name = posixpath.basename(p)
      if name.endswith(SEQIO_SUFFIX):
        found.append((source or "t5x.train", name[: -len(SEQIO_SUFFIX)], p))
  return found


def is_run_dir(path: str) -> bool:
  return any(fileio.exists(_join(path, n)) for n in (JOB_FILE, "inference_eval", RUNNER_METRICS,
                                                  "experiment.json"))


def find_run_dirs(paths: Iterable[str], depth: int = 2) -> list[str]:
  """Run dirs at or below each path, up to `depth` levels down."""
  out = []
  for path in paths:
    path = path.rstrip("/")
    if not fileio.exists(path):
      raise CollectError(f"{path}: no such directory")
    frontier = [path]
    for _ in range(depth + 1):
      nxt = []
      for d in frontier:
        if is_run_dir(d):
          out.append(d)
        elif fileio.isdir(d):
          nxt += [c for c in _children(d) if fileio.isdir(c)]
      frontier = nxt
  return sorted(dict.fromkeys(out))


def _numeric(row: dict[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in row.items()
          if k not in ("step", "kind") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _pick(rows: list[dict[str, Any]], select: str, metric: str, where: str) -> dict[str, Any]:
  if select == "last":
    return max(rows, key=lambda r: r["step"])
  scored = [r for r in rows if isinstance(r.get(metric), (int, float))]
  if not scored:
    raise CollectError(f"{where}: --select=best but no row has metric {metric!r} "
                       f"(metrics: {sorted(set().union(*(_numeric(r) for r in rows)))})")
  return max(scored, key=lambda r: (r[metric], -r["step"]))


def collect_run(run_dir: str, select: str = "last", metric: str = "accuracy") -> list[dict[str, Any]]:
  """Table rows of one run dir (empty when it has no metrics yet)."""
  cell: dict[str, Any] = {}
  job = _join(run_dir, JOB_FILE)
  if fileio.exists(job):
    with fileio.open_text(job) as f:
      try:
        cell = json.load(f)
      except json.JSONDecodeError as e:
        raise CollectError(f"{job}: malformed JSON: {e.msg}") from None
  base = {"run": posixpath.basename(run_dir.rstrip("/")), **{a: cell.get(a) for a in AXES}}
  rows = []
  for source, task, path in _metric_files(run_dir):
    lines = _read_jsonl(path)
    if lines:
      best = _pick(lines, select, metric, path)
      rows.append({**base, "source": source, "eval_task": task, "step": best["step"],
                   **_numeric(best)})
  runner = _join(run_dir, RUNNER_METRICS)
  if fileio.exists(runner):
    evals = [r for r in _read_jsonl(runner) if r.get("kind") == "eval"]
    if evals:
      best = _pick(evals, select, metric, runner)
      rows.append({**base, "source": "dsbs.train", "eval_task": cell.get("task"),
                   "step": best["step"], **_numeric(best)})
  return rows


def group_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Mean over rows equal in everything but seed/run/step; adds n and <metric>_std."""
  fixed = [k for k in ("sweep", "dataset", "size", "method", "data_pct", "label_rate", "alpha",
                       "task", "source", "eval_task")]
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for r in rows:
    groups.setdefault(tuple(json.dumps(r.get(k)) for k in fixed), []).append(r)
  out = []
  for members in groups.values():
    first = members[0]
    row = {k: first.get(k) for k in fixed}
    row["n"] = len(members)
    metrics = sorted({k for m in members for k in m if k not in fixed and k not in
                      ("run", "seed", "step") and isinstance(m[k], float)})
    for k in metrics:
      vals = [m[k] for m in members if isinstance(m.get(k), float)]
      row[k] = statistics.fmean(vals)
      row[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    out.append(row)
  return out


def _columns(rows: list[dict[str, Any]]) -> list[str]:
  cols: list[str] = []
  for r in rows:
    for k in r:
      if k not in cols:
        cols.append(k)
  used = [c for c in cols if any(r.get(c) is not None for r in rows)]
  return used


def _cell(v: Any) -> str:
  if v is None:
    return ""
  if isinstance(v, float):
    return f"{v:.4g}" if math.isfinite(v) else str(v)
  return str(v)


def format_table(rows: list[dict[str, Any]], fmt: str) -> str:
  """Renders rows as markdown, csv or json."""
  if fmt == "json":
    return json.dumps(rows, indent=2, sort_keys=False) + "\n"
  cols = _columns(rows)
  if fmt == "csv":
    buf = _stdio.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
      w.writerow({c: _cell(r.get(c)) for c in cols})
    return buf.getvalue()
  if fmt != "markdown":
    raise ValueError(f"unknown format {fmt!r}")
  lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
  lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("paths", nargs="+", help="run dirs or their parents (local or gs://)")
  parser.add_argument("--select", choices=("last", "best"), default="last")
  parser.add_argument("--metric", default="accuracy", help="metric for --select=best")
  parser.add_argument("--group_seeds", action="store_true")
  parser.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown")
  parser.add_argument("--output", default=None, help="write here instead of stdout")
  args = parser.parse_args(argv)
  try:
    runs = find_run_dirs(args.paths)
    rows, empty = [], []
    for run in runs:
      got = collect_run(run, args.select, args.metric)
      rows += got
      if not got:
        empty.append(run)
  except CollectError as e:
    print(f"collect.py: {e}", file=sys.stderr)
    return 2
  if args.group_seeds:
    rows = group_seeds(rows)
  text = format_table(rows, args.format)
  if args.output:
    with fileio.atomic_write_text(args.output) as f:
      f.write(text)
  else:
    sys.stdout.write(text)
    sys.stdout.flush()
  print(f"# {len(runs)} run dirs, {len(rows)} rows; {len(empty)} without metrics yet"
        + (": " + ", ".join(empty) if empty else ""), file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())

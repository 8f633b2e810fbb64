"""What the sweep report reads: the cells of a sweep dir (its state: every cell of the definition,
run or not) or of any dir of run dirs (their run records), each cell's test metric and
per-example correctness, and its validation curve. A file that is missing, partial or corrupt
gives a cell a `problem` (listed by the report), never an exception."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from dsbs import fileio, summaries

# Files of a run dir / sweep dir that the report reads (the runner and trainers write them).
RUN_RECORD = "run_record.json"
TEST_METRICS = f"{summaries.eval_dir()}/metrics.json"  # the test split, decoded greedily
TEST_PREDICTIONS = f"{summaries.eval_dir()}/predictions.jsonl"
EXPERIMENT = "experiment.json"  # the resolved experiment (the run record points to it)
TRAIN_METRICS = "metrics.jsonl"  # the runner's scalars; records of kind "eval" are validation
SWEEP_STATE = "state.json"


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


def join(base: str, rel: str) -> str:
  return base.rstrip("/") + "/" + rel


def read_json(path: str) -> Any:
  with fileio.open_text(path) as f:
    return json.load(f)


def read_metric(run_dir: str, metric: str) -> tuple[float | None, int | None, str | None]:
  """(value, checkpoint step, problem) from the run dir's test metrics file."""
  path = join(run_dir, TEST_METRICS)
  if not fileio.exists(path):
    return None, None, f"no {TEST_METRICS}"
  try:
    data = read_json(path)
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
  path = join(run_dir, TEST_PREDICTIONS)
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
    full = join(path, name.rstrip("/"))
    if fileio.is_remote(path) and name.endswith("/") or not fileio.is_remote(path) and os.path.isdir(full):
      out.append(full)
  return out


def find_run_dirs(path: str) -> list[str]:
  """Dirs holding a run record: `path` itself, its children and grandchildren."""
  found, frontier = [], [path]
  for _ in range(3):
    nxt = []
    for d in frontier:
      if fileio.exists(join(d, RUN_RECORD)):
        found.append(d.rstrip("/"))
      else:
        nxt += _subdirs(d)
    frontier = nxt
  return sorted(found)


def _record(run_dir: str) -> tuple[dict[str, Any] | None, str | None]:
  path = join(run_dir, RUN_RECORD)
  if not fileio.exists(path):
    return None, None
  try:
    rec = read_json(path)
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
  state_path = join(path, SWEEP_STATE)
  if fileio.exists(state_path):
    try:
      state = read_json(state_path)
      items = sorted(state["cells"].items(), key=lambda kv: kv[1].get("order", 0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      raise ValueError(f"{state_path}: unreadable sweep state ({type(e).__name__}: {e})") from None
    for name, c in items:
      if not c.get("in_definition", True):
        continue
      run_dir = c.get("run_dir") or join(join(path, "runs"), name)
      if not fileio.is_remote(path) and fileio.exists(join(join(path, "runs"), name)):
        run_dir = join(join(path, "runs"), name)  # its own (also in a copy or an export)
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


def read_curve(run_dir: str, metric: str) -> list[tuple[int, float]]:
  """(step, value) of every validation evaluation in the run dir's metrics.jsonl, in step
  order; a resumed run's repeated step keeps its last record. Unreadable lines are skipped (a
  run still writing may end on a partial line); no file gives []."""
  path = join(run_dir, TRAIN_METRICS)
  if not fileio.exists(path):
    return []
  points: dict[int, float] = {}
  try:
    with fileio.open_text(path) as f:
      for line in f:
        try:
          rec = json.loads(line)
        except ValueError:
          continue
        if not isinstance(rec, dict) or rec.get("kind") != "eval":
          continue
        step, value = rec.get("step"), rec.get(metric)
        if (isinstance(step, int) and isinstance(value, (int, float))
            and not isinstance(value, bool) and math.isfinite(value)):
          points[step] = float(value)
  except (OSError, UnicodeDecodeError):
    return []
  return sorted(points.items())

"""The run record every sweep cell leaves in its run dir (`run_record.json`), local ones too.

It holds what the cell was asked to train and where: the sweep and cell names, every override
and gin binding, the experiment files, the commands, the engine, the target (host, or TPU name
and zone), the git commit of the checkout with a dirty flag, the attempt, start and end times,
the exit status, and the resolved experiment the trainer wrote (`experiment.json`, copied in
and pointed to). It is written when the attempt starts and again when it ends; `dsbs.report`
joins it with the test metrics. Secrets never enter it (no environment is recorded).
"""
from __future__ import annotations

import functools
import json
import os
import platform
import socket
import subprocess
import sys
import time
from typing import Any, Mapping

from dsbs import report as report_lib
from dsbs import fileio
from launch import state as state_lib


@functools.lru_cache(maxsize=4)
def git_info(repo: str) -> dict[str, Any]:
  """The checkout's commit and whether it has uncommitted changes (None outside git)."""
  def git(*args: str) -> str | None:
    try:
      out = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                           timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
      return None
    return out.stdout.strip() if out.returncode == 0 else None

  checkout = os.path.abspath(repo)
  commit = git("rev-parse", "HEAD")
  if commit is None:
    return {"commit": None, "dirty": None, "checkout": checkout}
  status = git("status", "--porcelain", "--untracked-files=no")
  return {"commit": commit, "dirty": bool(status) if status is not None else None,
          "branch": git("rev-parse", "--abbrev-ref", "HEAD"), "checkout": checkout}


def _toplevel(path: str) -> str | None:
  """The git checkout holding `path` (a file or dir on this machine), or None."""
  d = path if os.path.isdir(path) else os.path.dirname(path)
  while d and os.path.isdir(d):
    if os.path.exists(os.path.join(d, ".git")):
      return d
    parent = os.path.dirname(d)
    if parent == d:
      return None
    d = parent
  return None


def host_info() -> dict[str, Any]:
  return {"host": socket.gethostname(), "platform": platform.platform(),
          "python": sys.version.split()[0], "cpus": os.cpu_count()}


def _iso(t: float | None) -> str | None:
  return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def build(*, sweep: str, cell: str, overrides: Mapping[str, Any], bindings: list[str],
          gin_files: list[str], commands: list[list[str]], engine: str,
          target: Mapping[str, Any], repo: str, run_dir: str, attempt: int, started: float,
          ended: float | None = None, status: str = "running", exit_code: int | None = None,
          reason: str | None = None, phases: list[dict[str, Any]] | None = None
          ) -> dict[str, Any]:
  """The record of one attempt of one cell."""
  return {
      "sweep": sweep, "cell": cell, "run_dir": run_dir, "overrides": dict(overrides),
      "gin_bindings": list(bindings), "gin_files": list(gin_files), "commands": commands,
      "engine": engine, "target": dict(target), "git": git_info(repo), "attempt": attempt,
      "started": _iso(started), "ended": _iso(ended),
      "duration_s": None if ended is None else round(ended - started, 3),
      "status": status, "exit_code": exit_code, "reason": reason, "phases": phases or [],
      "experiment_file": None, "experiment": None,
  }


def write(run_dir: str, rec: dict[str, Any]) -> str:
  """Writes `rec` atomically to `<run dir>/run_record.json`, with the trainer's resolved
  experiment copied in when the run dir has one."""
  exp_path = os.path.join(run_dir, report_lib.EXPERIMENT)
  if fileio.exists(exp_path):
    try:
      with fileio.open_text(exp_path) as f:
        rec["experiment"] = json.load(f)
      rec["experiment_file"] = report_lib.EXPERIMENT
    except (OSError, ValueError) as e:
      rec["experiment_file"] = f"{report_lib.EXPERIMENT} (unreadable: {e})"
  fileio.makedirs(run_dir)
  path = os.path.join(run_dir, report_lib.RUN_RECORD)
  with fileio.atomic_write_text(path) as f:
    json.dump(rec, f, indent=2, sort_keys=True, default=str)
  return path


# ---- export: a sweep's records without its checkpoints ------------------------------------------

# What `export` keeps of a done cell's run dir: the record of what ran and every file the report
# reads (test metrics and predictions of each evaluation, the validation curve), not checkpoints,
# event files or logs: about 15 KB a cell once git compresses it.
KEPT_FILES = (report_lib.RUN_RECORD, report_lib.EXPERIMENT, report_lib.TRAIN_METRICS,
              "train_result.json", "model_config.json")
KEPT_EVAL_FILES = ("metrics.json", "predictions.jsonl")
EXPORTED_STATUSES = ("done", "failed")


def export(sweep_dir: str, dest: str) -> dict[str, int]:
  """Copies a sweep dir's state, its definition and, of each done or failed cell's run dir, the
  files in KEPT_FILES and eval/*/KEPT_EVAL_FILES into the local dir `dest`, laid out as a sweep
  dir: `python -m dsbs.report DEST` gives the sweep's report, and DEST copied back to the sweep
  dir's path (run dirs are found there, as the state names them) resumes the sweep: done cells
  never run again, the others start from scratch (no checkpoint is kept). The export names no
  machine's paths: paths within the sweep dir become relative to it (`runs/<cell>`), paths within
  the checkout that ran the cells (its interpreter, its gin files) relative to that checkout, as
  the commands' `--gin_file`s already are (the commands ran there). Returns counts."""
  state_path = os.path.join(sweep_dir, report_lib.SWEEP_STATE)
  if not fileio.exists(state_path):
    raise FileNotFoundError(f"{sweep_dir}: not a sweep dir (no {report_lib.SWEEP_STATE})")
  if os.path.abspath(dest) == os.path.abspath(sweep_dir):
    raise ValueError(f"{dest}: the export goes to another dir than the sweep's own")
  with fileio.open_text(state_path) as f:
    state = json.load(f)
  os.makedirs(os.path.join(dest, "runs"), exist_ok=True)
  root = sweep_dir.rstrip("/") if fileio.is_remote(sweep_dir) else os.path.abspath(sweep_dir)
  counts = {"cells": 0, "exported": 0, "files": 0, "bytes": 0}
  state_lib.resolve_run_dirs(state, sweep_dir)  # the sweep dir may itself be an export
  checkouts = set()  # the checkouts that ran cells: as recorded, or the definition's
  defn_path = (state.get("definition") or {}).get("path")
  if defn_path and not fileio.is_remote(defn_path):
    checkouts.add(_toplevel(defn_path))
  for name, cell in state.get("cells", {}).items():
    rec_path = os.path.join(cell.get("run_dir") or os.path.join(sweep_dir, "runs", name),
                            report_lib.RUN_RECORD)
    try:
      with fileio.open_text(rec_path) as f:
        checkouts.add(((json.load(f).get("git") or {}).get("checkout")))
    except (OSError, ValueError, AttributeError):
      pass
  # Longest first: a sweep dir inside a checkout keeps its own relative paths.
  prefixes = sorted({root} | {c.rstrip("/") for c in checkouts if c and c.rstrip("/")},
                    key=len, reverse=True)

  def relative(data: bytes) -> bytes:
    for prefix in prefixes:
      data = data.replace(json.dumps(prefix + "/")[1:-1].encode(), b"").replace(
          json.dumps(prefix).encode(), b'"."')
    return data

  def copy(src: str, rel: str) -> None:
    if not fileio.exists(src):
      return
    path = os.path.join(dest, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with fileio.open_bytes(src) as fin:
      data = fin.read()
    data = relative(data)
    with open(path, "wb") as fout:
      fout.write(data)
    counts["files"] += 1
    counts["bytes"] += len(data)

  for name in ("definition.py", report_lib.SWEEP_STATE):
    copy(os.path.join(sweep_dir, name), name)
  for name, cell in state.get("cells", {}).items():
    counts["cells"] += 1
    run_dir = cell.get("run_dir") or os.path.join(sweep_dir, "runs", name)
    if cell.get("status") not in EXPORTED_STATUSES or not fileio.exists(run_dir):
      continue
    counts["exported"] += 1
    for rel in KEPT_FILES:
      copy(os.path.join(run_dir, rel), os.path.join("runs", name, rel))
    evals = os.path.join(run_dir, "eval")
    for sub in (fileio.listdir(evals) if fileio.isdir(evals) else []):
      for rel in KEPT_EVAL_FILES:
        copy(os.path.join(evals, sub.rstrip("/"), rel),
             os.path.join("runs", name, "eval", sub.rstrip("/"), rel))
  return counts

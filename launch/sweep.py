"""Runs a sweep with state: resumable, interruptible, one run dir and run record per cell.

    python -m launch.sweep run launch/sweeps/tiny_local.py [--sweep_dir=DIR] [--max_parallel=2]
    python -m launch.sweep run launch/sweeps/arith_paper.py --dry_run     # the commands only
    python -m launch.sweep status DIR [--json]
    python -m launch.sweep export DIR DEST      # state + records of done cells, no checkpoints
    python -m dsbs.report DIR                                            # tables and plots

`run` expands the definition (launch/definition.py; a bad one fails before anything runs), keeps
the state of every cell in `<sweep dir>/state.json` (launch/state.py) and runs the cells that are
not done, at most `--max_parallel` at a time, through the definition's target
(launch/targets.py), each in `<run root>/<cell>` with its output in `<sweep dir>/logs/<cell>.log`
and a `run_record.json` in the run dir (launch/records.py). Rerunning the same command resumes:
done cells are skipped without starting any process; failed and interrupted cells run again in
the same run dir, so the trainer resumes from its checkpoint. Progress lines give cells done /
total and an ETA from the mean time of the cells done so far.

Ctrl-C once: no new cell starts; the running ones finish and are recorded. Ctrl-C again (or
SIGTERM): the running cells' processes get SIGTERM (SIGKILL after a grace period) and are
recorded `interrupted`. Either way the state resumes with the same command. Exit status: 0 when
every cell is done, 1 when some are not (failed, or running elsewhere), 2 for a bad definition,
130 after Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import queue
import re
import shutil
import signal
import sys
import threading
import time
from typing import Any, Sequence, TextIO

from dsbs import fileio
from dsbs import report as report_lib

from launch import definition
from launch import engines
from launch import records
from launch import state as state_lib
from launch import targets


def _duration(seconds: float | None) -> str:
  if seconds is None or not math.isfinite(seconds):
    return "?"
  s = int(round(seconds))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def cell_identity(sweep: definition.Sweep, cell: definition.Cell) -> str:
  """What a cell trains, as canonical text: a change means the state's record is stale."""
  return json.dumps({"overrides": definition.canonical_json(cell.overrides),
                     "bindings": list(cell.bindings), "gin_files": sweep.gin_files(cell),
                     "test_eval": sweep.test_eval}, sort_keys=True)


class Runner:
  """Runs the cells of one sweep that are not done; see the module docstring."""

  def __init__(self, sweep: definition.Sweep, sweep_dir: str, target: targets.Target, *,
               max_parallel: int = 1, python: str | None = None, only: str | None = None,
               update: bool = False, out: TextIO | None = None, repo: str = definition.REPO,
               progress_period_s: float = 600.0):
    self.sweep = sweep
    self.sweep_dir = os.path.abspath(sweep_dir)
    root = sweep.run_root(self.sweep_dir)
    self.run_root = root if fileio.is_remote(root) else os.path.abspath(root)
    self.target = target
    self.max_parallel = max(1, int(max_parallel))
    self.python = target.python or python or sweep.get("python") or sys.executable
    self.only = re.compile(only) if only else None
    self.update = update
    self.out = out or sys.stdout
    self.repo = repo
    self.progress_period_s = progress_period_s
    self.state = state_lib.SweepState(self.sweep_dir)
    self.me = state_lib.identity()
    self._stop = threading.Event()  # first Ctrl-C: start nothing new
    self._terminate = threading.Event()  # second Ctrl-C / SIGTERM: end the running cells
    self._results: queue.Queue = queue.Queue()
    self._active: dict[str, targets.Job] = {}
    self._queue: list[definition.Cell] = []
    self._notices: list[str] = []
    self._started_at: dict[str, float] = {}

  # ---- Output ---------------------------------------------------------------------------------

  def say(self, text: str) -> None:
    self.out.write(f"[{time.strftime('%H:%M:%S')} {self.sweep.name}] {text}\n")
    self.out.flush()

  def run_dir(self, cell: definition.Cell) -> str:
    return f"{self.run_root.rstrip('/')}/{cell.name}"

  def log_path(self, cell: definition.Cell) -> str:
    return os.path.join(self.sweep_dir, "logs", f"{cell.name}.log")

  # ---- Signals --------------------------------------------------------------------------------

  def _on_signal(self, signum, frame) -> None:
    """Sets flags only: the main loop prints and acts (no I/O inside a signal handler)."""
    del frame
    if signum == signal.SIGINT and not self._stop.is_set():
      self._stop.set()
      self._notices.append("Ctrl-C: starting no new cells; waiting for the running ones to "
                           "finish (Ctrl-C again ends them; the state resumes either way)")
      return
    self._stop.set()
    if not self._terminate.is_set():
      self._terminate.set()
      self._notices.append(f"{signal.Signals(signum).name}: ending the running cells; they are "
                           "recorded interrupted and resume on the next run")

  # ---- The run --------------------------------------------------------------------------------

  def run(self) -> int:
    handlers = {}
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        handlers[sig] = signal.signal(sig, self._on_signal)
    try:
      return self._run()
    finally:
      for sig, h in handlers.items():
        signal.signal(sig, h)
      try:
        with self.state.update() as data:
          data["runners"].get(self.me["token"], {})["stopped"] = time.time()
      except state_lib.StateError:
        pass

  def _register(self) -> dict[str, Any]:
    specs = [{"name": c.name, "overrides": c.overrides, "bindings": list(c.bindings),
              "run_dir": self.run_dir(c), "identity": cell_identity(self.sweep, c)}
             for c in self.sweep.cells]
    create = {"sweep": self.sweep.name, "created": time.time(), "sweep_dir": self.sweep_dir}
    with self.state.update(create=create) as data:
      if data.get("sweep") != self.sweep.name:
        raise state_lib.StateError(f"{self.state.path} belongs to sweep {data.get('sweep')!r}, "
                                   f"not {self.sweep.name!r}: use another --sweep_dir")
      runners = data.setdefault("runners", {})
      for token in [t for t, r in runners.items() if not state_lib.runner_alive(r)]:
        if not any(c.get("owner") == token and c.get("status") == state_lib.RUNNING
                   for c in data["cells"].values()):
          del runners[token]  # forget dead runners that own nothing
      runners[self.me["token"]] = self.me
      state_lib.resolve_run_dirs(data, self.sweep_dir)
      state_lib.sync_cells(data, specs, allow_changes=self.update)
      data["definition"] = {"path": os.path.abspath(self.sweep.path), "config": self.sweep.config,
                            "collapsed": self.sweep.collapsed, "run_root": self.run_root,
                            "target": self.sweep.target}
      snapshot = dict(data)
    try:
      shutil.copyfile(self.sweep.path, os.path.join(self.sweep_dir, "definition.py"))
    except shutil.SameFileError:
      pass
    return snapshot

  def _run(self) -> int:
    data = self._register()
    cells = [c for c in self.sweep.cells if not self.only or self.only.search(c.name)]
    n = state_lib.counts({**data, "cells": {c.name: data["cells"][c.name] for c in cells}})
    todo = [c for c in cells
            if state_lib.effective_status(data, data["cells"][c.name]) != state_lib.DONE]
    self.say(f"{len(cells)} cells" + (f" ({self.sweep.collapsed} grid points collapsed: an axis "
                                      "their method ignores)" if self.sweep.collapsed else "")
             + f"; done {n['done']}, failed {n['failed']}, interrupted {n['interrupted']}, "
             f"running {n['running']}, pending {n['pending']}; up to {self.max_parallel} at a "
             f"time on {self.target.name}; state {self.state.path}")
    if len(todo) < len(cells):
      self.say(f"skipping {len(cells) - len(todo)} done cell(s)")
    self._queue = list(todo)
    names = {c.name for c in cells}
    last_beat = last_progress = time.time()
    while self._queue or self._active:
      while self._notices:
        self.say(self._notices.pop(0))
      while self._queue and not self._stop.is_set() and len(self._active) < self.max_parallel:
        self._launch(self._queue.pop(0))
      if self._terminate.is_set():
        for job in list(self._active.values()):
          if not job.cancelled.is_set():
            self.target.terminate(job)
      if self._stop.is_set() and not self._active:
        break
      try:
        job, rc, error = self._results.get(timeout=0.5)
      except queue.Empty:
        now = time.time()
        if now - last_beat > state_lib.HEARTBEAT_S:
          with self.state.update() as d:
            d["runners"].setdefault(self.me["token"], self.me)["heartbeat"] = now
          last_beat = now
        if now - last_progress > self.progress_period_s:
          self._progress(names, "still running: " + ", ".join(self._active))
          last_progress = now
        continue
      self._finish(job, rc, error, names)
      last_progress = time.time()
    while self._notices:
      self.say(self._notices.pop(0))
    data = self.state.read()
    final = state_lib.counts({**data, "cells": {k: v for k, v in data["cells"].items()
                                                if k in names}})
    self.say(f"stopped: done {final['done']}/{len(cells)}, failed {final['failed']}, "
             f"interrupted {final['interrupted']}, pending {final['pending']}, running elsewhere "
             f"{final['running']}. Resume: the same command. Report: python -m dsbs.report "
             f"{self.sweep_dir}")
    if self._stop.is_set():
      return 130
    return 0 if final["done"] == len(cells) else 1

  def _launch(self, cell: definition.Cell) -> None:
    with self.state.update() as data:
      why = state_lib.claim(data, cell.name, self.me)
      attempt = data["cells"][cell.name]["attempts"]
      started = data["cells"][cell.name]["started"]
    if why:
      self.say(f"not starting {cell.name}: {why}")
      return
    run_dir = self.run_dir(cell)
    job = targets.Job(sweep=self.sweep.name, cell=cell, run_dir=run_dir,
                      phases=engines.phases(self.sweep, cell, run_dir, self.python, self.repo),
                      log_path=self.log_path(cell), attempt=attempt,
                      on_process=lambda pid, name=cell.name: self._on_process(name, pid))
    self._active[cell.name] = job
    self._started_at[cell.name] = started
    self._write_record(job, started)
    self.say(f"start {cell.name} (attempt {attempt}) -> {run_dir}")
    threading.Thread(target=self._work, args=(job,), name=f"cell-{cell.name}",
                     daemon=True).start()

  def _work(self, job: targets.Job) -> None:
    try:
      rc, error = self.target.run(job), None
    except Exception as e:  # pylint: disable=broad-except  (recorded as the cell's failure)
      rc, error = None, f"{type(e).__name__}: {e}"
    self._results.put((job, rc, error))

  def _on_process(self, name: str, pid: int) -> None:
    with self.state.update() as data:
      cell = data["cells"][name]
      cell["pid"], cell["pid_start"] = pid, state_lib.proc_start(pid)

  def _finish(self, job: targets.Job, rc: int | None, error: str | None, names: set) -> None:
    name = job.cell.name
    del self._active[name]
    if error is not None:
      status, reason = state_lib.FAILED, error
    elif rc == 0 and self.sweep.test_eval and not fileio.exists(
        os.path.join(job.run_dir, report_lib.TEST_METRICS)):
      status, reason = state_lib.FAILED, f"exit 0 but no {report_lib.TEST_METRICS} in the run dir"
    elif rc == 0:
      status, reason = state_lib.DONE, None  # finished before an end request reached it
    elif job.cancelled.is_set():
      status, reason = state_lib.INTERRUPTED, "ended by the sweep runner (Ctrl-C / SIGTERM)"
    else:
      phase = job.phase_results[-1]["name"] if job.phase_results else "?"
      status, reason = state_lib.FAILED, f"phase {phase} exited with {rc}"
    with self.state.update() as data:
      cell = state_lib.finish(data, name, status, rc, reason)
      started, ended = cell["started"], cell["ended"]
    self._write_record(job, started, ended, status, rc, reason)
    took = _duration(ended - started)
    self._progress(names, f"{name} {status} in {took}" + (f" ({reason}; log {job.log_path})"
                                                          if reason else ""))

  def _write_record(self, job: targets.Job, started: float, ended: float | None = None,
                    status: str = state_lib.RUNNING, rc: int | None = None,
                    reason: str | None = None) -> None:
    rec = records.build(
        sweep=self.sweep.name, cell=job.cell.name, overrides=job.cell.overrides,
        bindings=list(job.cell.bindings), gin_files=self.sweep.gin_files(job.cell),
        commands=[p.preview for p in job.phases], engine=job.cell.engine,
        target=self.target.describe(job), repo=self.repo, run_dir=job.run_dir,
        attempt=job.attempt, started=started, ended=ended, status=status, exit_code=rc,
        reason=reason, phases=job.phase_results)
    try:
      records.write(job.run_dir, rec)
    except Exception as e:  # pylint: disable=broad-except  (a record must not kill the sweep)
      self.say(f"could not write the run record of {job.cell.name}: {type(e).__name__}: {e}")

  def _progress(self, names: set, event: str) -> None:
    data = self.state.read()
    cells = {k: v for k, v in data["cells"].items() if k in names}
    n = state_lib.counts({**data, "cells": cells})
    took = [h["ended"] - h["started"] for c in cells.values() for h in c.get("history", [])
            if h.get("status") == state_lib.DONE and h.get("started") and h.get("ended")]
    mean = sum(took) / len(took) if took else None
    left = 0 if self._stop.is_set() else len(self._queue)
    now = time.time()
    eta = None
    if mean is not None:
      busy = sum(max(mean - (now - self._started_at.get(k, now)), 0.0) for k in self._active)
      eta = (left * mean + busy) / max(1, min(self.max_parallel, left + len(self._active)))
    self.say(f"{event} | done {n['done']}/{len(cells)}, failed {n['failed']}, running "
             f"{len(self._active)}, to go {left} | ETA {_duration(eta)}"
             + (f" (mean {_duration(mean)} per cell, {self.max_parallel} at a time)"
                if mean is not None else ""))


# ---- status --------------------------------------------------------------------------------------

def status_text(sweep_dir: str) -> str:
  """Counts and the cells of each kind, from the state file alone (no definition, no SeqIO)."""
  data = state_lib.SweepState(sweep_dir).read()
  by: dict[str, list[tuple[str, dict[str, Any]]]] = {s: [] for s in state_lib.STATUSES}
  stale = []
  for name, cell in sorted(data["cells"].items(), key=lambda kv: kv[1].get("order", 0)):
    if not cell.get("in_definition", True):
      stale.append(name)
      continue
    by[state_lib.effective_status(data, cell)].append((name, cell))
  total = sum(len(v) for v in by.values())
  now = time.time()
  lines = [f"sweep {data.get('sweep')} ({sweep_dir}): {total} cells; "
           + ", ".join(f"{s} {len(by[s])}" for s in state_lib.STATUSES)]
  for status in (state_lib.RUNNING, state_lib.FAILED, state_lib.INTERRUPTED, state_lib.PENDING,
                 state_lib.DONE):
    if not by[status]:
      continue
    lines.append(f"{status}:")
    for name, cell in by[status]:
      detail = f"attempt {cell.get('attempts', 0)}"
      if status == state_lib.RUNNING:
        detail += (f", for {_duration(now - cell['started'])} on {cell.get('host')}"
                   + (f", pid {cell['pid']}" if cell.get("pid") else ""))
      elif status in (state_lib.FAILED, state_lib.INTERRUPTED):
        if cell.get("exit_code") is not None:
          detail += f", exit {cell['exit_code']}"
        if cell.get("reason"):
          detail += f": {cell['reason']}"
        elif status == state_lib.INTERRUPTED and cell.get("status") == state_lib.RUNNING:
          detail += ": its runner is gone"
      elif status == state_lib.DONE and cell.get("started") and cell.get("ended"):
        detail += f", took {_duration(cell['ended'] - cell['started'])}"
      if status == state_lib.PENDING and not cell.get("attempts"):
        detail = "never started"
      lines.append(f"  {name}  ({detail})")
  if stale:
    lines.append(f"not in the current definition ({len(stale)}): " + ", ".join(stale))
  return "\n".join(lines)


# ---- CLI -----------------------------------------------------------------------------------------

def _dry_run(sweep: definition.Sweep, sweep_dir: str, python: str, target: targets.Target,
             out: TextIO, only: re.Pattern | None = None) -> None:
  root = sweep.run_root(sweep_dir)
  root = root if fileio.is_remote(root) else os.path.abspath(root)
  for cell in sweep.cells:
    if only and not only.search(cell.name):
      continue
    run_dir = f"{root.rstrip('/')}/{cell.name}"
    out.write(f"# {cell.name}  ({run_dir})\n")
    job = targets.Job(sweep=sweep.name, cell=cell, run_dir=run_dir,
                      phases=engines.phases(sweep, cell, run_dir, python),
                      log_path=os.path.join(sweep_dir, "logs", f"{cell.name}.log"))
    target.dry_run(job, out)


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0].endswith(".py"):  # `python -m launch.sweep def.py` means `run def.py`
    argv.insert(0, "run")
  parser = argparse.ArgumentParser(prog="python -m launch.sweep",
                                   description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  run_p = sub.add_parser("run", help="run (or resume) the cells that are not done")
  run_p.add_argument("definition", help="a Python file with get_config() (launch/sweeps/*.py)")
  run_p.add_argument("--sweep_dir", default=None,
                     help="state, logs and (by default) run dirs; default: the definition's "
                     "sweep_dir, else sweeps/<name>")
  run_p.add_argument("--max_parallel", type=int, default=1, help="cells running at once")
  run_p.add_argument("--only", default=None, help="regex: run only the cells whose name matches")
  run_p.add_argument("--python", default=None, help="interpreter of the trainers")
  run_p.add_argument("--update", action="store_true",
                     help="take changed settings of cells already in the state (done ones run "
                     "again in their run dirs)")
  run_p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  st_p = sub.add_parser("status", help="counts and the cells of each kind")
  st_p.add_argument("sweep_dir")
  st_p.add_argument("--json", action="store_true", help="the state file's cells as JSON")
  ex_p = sub.add_parser("export", help="the state and each done cell's records, without "
                        "checkpoints: what the report reads, small enough to keep")
  ex_p.add_argument("sweep_dir")
  ex_p.add_argument("dest", help="a local dir, laid out as a sweep dir")
  args = parser.parse_args(argv)

  if args.command == "export":
    try:
      n = records.export(args.sweep_dir, args.dest)
    except (OSError, ValueError) as e:
      print(f"launch.sweep: export: {e}", file=sys.stderr)
      return 2
    print(f"{args.dest}: the state of {n['cells']} cells and the records of {n['exported']} done "
          f"or failed ones ({n['files']} files, {n['bytes'] / 1e6:.1f} MB); "
          f"python -m dsbs.report {args.dest}")
    return 0
  if args.command == "status":
    try:
      if args.json:
        data = state_lib.SweepState(args.sweep_dir).read()
        for cell in data["cells"].values():
          cell["effective_status"] = state_lib.effective_status(data, cell)
        print(json.dumps(data, indent=1, sort_keys=True))
      else:
        print(status_text(args.sweep_dir))
    except state_lib.StateError as e:
      print(f"launch.sweep: {e}", file=sys.stderr)
      return 2
    return 0

  try:
    sweep = definition.load(args.definition)
    target = targets.make_target(sweep)
  except definition.SweepError as e:
    print(f"launch.sweep: {e}", file=sys.stderr)
    return 2
  if target.python and args.python not in (None, target.python):
    print(f"launch.sweep: --python: the {target.name} target runs {target.python}",
          file=sys.stderr)
    return 2
  try:
    only = re.compile(args.only) if args.only else None
  except re.error as e:
    print(f"launch.sweep: --only={args.only}: not a regular expression ({e})", file=sys.stderr)
    return 2
  if only and not any(only.search(c.name) for c in sweep.cells):
    print(f"launch.sweep: --only={args.only}: matches none of the {len(sweep.cells)} cells of "
          f"{sweep.name} (e.g. {sweep.cells[0].name})", file=sys.stderr)
    return 2
  sweep_dir = sweep.sweep_dir(args.sweep_dir)
  python = target.python or args.python or sweep.get("python") or sys.executable
  if args.dry_run:
    selected = sum(1 for c in sweep.cells if not only or only.search(c.name))
    print(f"# sweep {sweep.name}: {len(sweep.cells)} cells"
          + (f" ({sweep.collapsed} grid points collapsed)" if sweep.collapsed else "")
          + (f", {selected} selected by --only" if only else "")
          + f"; sweep dir {sweep_dir}")
    try:
      _dry_run(sweep, sweep_dir, python, target, sys.stdout, only)
      sys.stdout.flush()
    except BrokenPipeError:  # `... --dry_run | head`
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
  try:
    return Runner(sweep, sweep_dir, target, max_parallel=args.max_parallel, python=python,
                  only=args.only, update=args.update).run()
  except state_lib.StateError as e:
    print(f"launch.sweep: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())

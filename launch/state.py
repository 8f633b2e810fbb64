"""The state of a sweep, in `<sweep dir>/state.json`: one entry per cell, shared by processes.

Each cell is `pending`, `running`, `done`, `failed` or `interrupted` (stopped by the runner, or
found `running` after its runner died), with its exit code, start / end times (seconds since the
epoch), attempts and a history of attempts. Every change takes an exclusive lock
(`state.lock`, flock) around read-modify-write, and the file is replaced atomically, so a
`status` reader never sees half a file and two runners never claim the same cell. A runner
registers itself (host, pid, process start time, heartbeat); a `running` cell whose runner is
gone reads as `interrupted` and is run again, in the same run dir, by the next runner.

Standard library only: `python -m launch.sweep status` stays instant.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
from typing import Any, Iterator, Mapping, Sequence

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
VERSION = 1
PENDING, RUNNING, DONE, FAILED, INTERRUPTED = "pending", "running", "done", "failed", "interrupted"
STATUSES = (PENDING, RUNNING, DONE, FAILED, INTERRUPTED)
HEARTBEAT_S = 30.0  # a runner refreshes its heartbeat this often
STALE_S = 180.0  # a runner on another host is presumed dead after this long without one


class StateError(RuntimeError):
  """A state file that cannot be used as asked; the message says why and what to do."""


def proc_start(pid: int) -> str | None:
  """The kernel's start time of `pid` (Linux), which tells a live process from a reused pid."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def process_alive(pid: int | None, start: str | None) -> bool:
  """Whether process `pid` on this host is alive and is the one started at `start`."""
  if not pid:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  if start is None or not os.path.exists("/proc"):
    return True
  return proc_start(pid) == start


def identity() -> dict[str, Any]:
  """This process as a runner: host, pid, process start time, token."""
  host, pid = socket.gethostname(), os.getpid()
  start = proc_start(pid)
  return {"host": host, "pid": pid, "proc_start": start, "started": time.time(),
          "heartbeat": time.time(), "token": f"{host}:{pid}:{start or int(time.time())}"}


def runner_alive(runner: Mapping[str, Any] | None, now: float | None = None) -> bool:
  if not runner:
    return False
  if runner.get("stopped"):
    return False
  if runner.get("host") == socket.gethostname():
    return process_alive(runner.get("pid"), runner.get("proc_start"))
  return (now or time.time()) - float(runner.get("heartbeat", 0)) < STALE_S


def effective_status(data: Mapping[str, Any], cell: Mapping[str, Any]) -> str:
  """The cell's status, with `running` under a dead runner read as `interrupted`."""
  status = cell.get("status", PENDING)
  if status == RUNNING and not runner_alive(data.get("runners", {}).get(cell.get("owner"))):
    return INTERRUPTED
  return status


def trainer_alive(cell: Mapping[str, Any]) -> bool:
  """A trainer process of this cell still runs on this host (its runner may be dead)."""
  return (cell.get("host") == socket.gethostname()
          and process_alive(cell.get("pid"), cell.get("pid_start")))


class SweepState:
  """The state file of one sweep dir."""

  def __init__(self, sweep_dir: str):
    self.sweep_dir = sweep_dir
    self.path = os.path.join(sweep_dir, STATE_FILE)
    self.lock_path = os.path.join(sweep_dir, LOCK_FILE)

  def exists(self) -> bool:
    return os.path.exists(self.path)

  def read(self) -> dict[str, Any]:
    """A consistent snapshot (the file is only ever replaced whole)."""
    if not self.exists():
      raise StateError(f"{self.path}: no sweep state here (is {self.sweep_dir} a sweep dir? "
                       "`python -m launch.sweep run <definition>` creates it)")
    try:
      with open(self.path, encoding="utf-8") as f:
        data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise StateError(f"{self.path}: unreadable sweep state: {e}") from None
    if data.get("version") != VERSION:
      raise StateError(f"{self.path}: state version {data.get('version')!r}, this runner "
                       f"reads {VERSION}")
    return data

  @contextlib.contextmanager
  def update(self, create: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Locked read-modify-write; `create` is the initial state when there is no file yet."""
    os.makedirs(self.sweep_dir, exist_ok=True)
    with open(self.lock_path, "a+", encoding="utf-8") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      try:
        if self.exists():
          data = self.read()
        elif create is not None:
          data = {"version": VERSION, "cells": {}, "runners": {}, **create}
        else:
          raise StateError(f"{self.path}: no sweep state to update")
        yield data
        self._write(data)
      finally:
        fcntl.flock(lock, fcntl.LOCK_UN)

  def _write(self, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=self.sweep_dir, prefix=".state-", suffix=".json")
    try:
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, self.path)
    except BaseException:
      with contextlib.suppress(OSError):
        os.remove(tmp)
      raise


def resolve_run_dirs(data: Mapping[str, Any], sweep_dir: str) -> None:
  """Makes the run dirs an export wrote relative to its sweep dir (`runs/<cell>`) paths again,
  under `sweep_dir`, wherever the export now lies."""
  for cell in data.get("cells", {}).values():
    rd = cell.get("run_dir")
    if rd and "://" not in rd and not os.path.isabs(rd):
      cell["run_dir"] = os.path.join(sweep_dir, rd)


def new_cell(order: int, overrides: Mapping[str, Any], bindings: Sequence[str],
             run_dir: str, identity_key: str) -> dict[str, Any]:
  return {"order": order, "overrides": dict(overrides), "bindings": list(bindings),
          "run_dir": run_dir, "identity": identity_key, "status": PENDING, "attempts": 0,
          "exit_code": None, "started": None, "ended": None, "owner": None, "host": None,
          "pid": None, "pid_start": None, "reason": None, "history": [], "in_definition": True}


def sync_cells(data: dict[str, Any], cells: Sequence[Mapping[str, Any]], *,
               allow_changes: bool) -> list[str]:
  """Brings the state's cells in line with the definition's.

  `cells` items: name, overrides, bindings, run_dir, identity (a canonical text of what the
  cell trains). New cells become pending; cells no longer in the definition stay, marked
  `in_definition: False`. A cell whose identity changed raises StateError unless
  `allow_changes`, which takes the new settings and makes a done cell pending again (it runs
  again in the same run dir: a trainer resumes from its checkpoint). Returns the changed names.
  """
  by_name = data.setdefault("cells", {})
  wanted = {c["name"] for c in cells}
  changed = []
  for order, c in enumerate(cells):
    old = by_name.get(c["name"])
    if old is None:
      by_name[c["name"]] = new_cell(order, c["overrides"], c["bindings"], c["run_dir"],
                                    c["identity"])
      continue
    old["order"], old["in_definition"] = order, True
    if old.get("identity") != c["identity"] or old.get("run_dir") != c["run_dir"]:
      changed.append(c["name"])
      if allow_changes:
        old.update(overrides=dict(c["overrides"]), bindings=list(c["bindings"]),
                   run_dir=c["run_dir"], identity=c["identity"])
        if old["status"] == DONE:
          old.update(status=PENDING, reason="definition changed (--update)")
  if changed and not allow_changes:
    raise StateError(
        f"the definition changed for {len(changed)} cell(s) already in this sweep dir "
        f"({', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}): rerun with --update to "
        "take the new settings (done cells then run again in their run dirs), or use a new "
        "--sweep_dir")
  for name, cell in by_name.items():
    if name not in wanted:
      cell["in_definition"] = False
  return changed


def claim(data: dict[str, Any], name: str, runner: Mapping[str, Any]) -> str | None:
  """Marks the cell running for `runner`; returns None, or why it cannot be claimed."""
  cell = data["cells"][name]
  status = effective_status(data, cell)
  if status == DONE:
    return "done"
  if status == RUNNING:
    return f"running under runner {cell.get('owner')}"
  if status == INTERRUPTED and trainer_alive(cell):
    return (f"its trainer from a stopped runner still runs (pid {cell['pid']}); wait for it or "
            "end it")
  cell.update(status=RUNNING, owner=runner["token"], host=runner["host"],
              attempts=int(cell.get("attempts", 0)) + 1, started=time.time(), ended=None,
              exit_code=None, pid=None, pid_start=None, reason=None)
  return None


def finish(data: dict[str, Any], name: str, status: str, exit_code: int | None,
           reason: str | None = None) -> dict[str, Any]:
  """Ends the cell's current attempt; returns the cell."""
  cell = data["cells"][name]
  ended = time.time()
  cell.update(status=status, exit_code=exit_code, ended=ended, reason=reason, pid=None,
              pid_start=None)
  cell.setdefault("history", []).append(
      {"attempt": cell.get("attempts"), "started": cell.get("started"), "ended": ended,
       "exit_code": exit_code, "status": status, "host": cell.get("host"), "reason": reason})
  return cell


def counts(data: Mapping[str, Any]) -> dict[str, int]:
  out = {s: 0 for s in STATUSES}
  for cell in data.get("cells", {}).values():
    if cell.get("in_definition", True):
      out[effective_status(data, cell)] += 1
  return out

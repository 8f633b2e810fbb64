"""Where a sweep cell runs: the `Target` interface, the local target, and the hook for others.

A target runs one `Job` (a cell's commands, in order, from the repository root, all pointing at
the cell's run dir) and returns its exit code. The sweep runner calls `run` from one thread per
running cell and `terminate` from its main thread (second Ctrl-C, SIGTERM). `describe` says
where the job runs, for the run record; `dry_run` prints what `run` would do; `python`, when
set, is the interpreter the phases must name (the runner builds them with it).

Targets are chosen by the definition's `target` key through `make_target`. `local` is built in.
`tpu` (launch/tpu_target.py, imported on first use) runs each cell as one Cloud TPU VM job of
launch/tpu/: every phase's argv on every worker, in order, the run dir on gs://, the VM
recreated after a preemption and the run resumed from its checkpoint. Other targets plug in by
registering a factory (`register_target`).
"""
from __future__ import annotations

import abc
import ctypes
import ctypes.util
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, TextIO

from launch import definition
from launch import engines
from launch import records


@dataclasses.dataclass
class Job:
  """One attempt of one cell."""
  sweep: str
  cell: definition.Cell
  run_dir: str
  phases: list[engines.Phase]
  log_path: str  # local file that receives the commands' output (appended per attempt)
  attempt: int = 1
  on_process: Callable[[int], None] | None = None  # told the pid of each started process
  phase_results: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)


class Target(abc.ABC):
  """Runs jobs somewhere; one instance serves a whole sweep."""
  name = "?"
  python: str | None = None  # the interpreter the phases name there (None: the runner's choice)

  @abc.abstractmethod
  def describe(self, job: Job | None = None) -> dict[str, Any]:
    """Where jobs run (host; or TPU name, type and zone), for the run record of `job`."""

  @abc.abstractmethod
  def run(self, job: Job) -> int:
    """Runs the job's phases in order until one fails; returns the exit code (0: all passed).

    Appends one dict per phase to `job.phase_results` (name, argv, exit_code, started, ended).
    Must return promptly, with a non-zero code, once `terminate(job)` was called.
    """

  @abc.abstractmethod
  def terminate(self, job: Job) -> None:
    """Stops a running job (called from another thread); `run` then returns."""

  def check(self, sweep: definition.Sweep) -> None:
    """Raises SweepError when this target cannot run `sweep` (called before anything runs)."""

  def dry_run(self, job: Job, out: TextIO) -> None:
    """Writes what `run(job)` would do, as shell lines, running nothing: here the phases'
    commands (a later phase's argv may be built only when it starts)."""
    for phase in job.phases:
      out.write(shlex.join(phase.preview) + "\n")


def phase_header(job: Job, phase: str, argv: list[str]) -> str:
  """The lines a target writes to the job's log before each phase."""
  return (f"\n==== {job.cell.name} attempt {job.attempt} phase {phase} "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n$ {shlex.join(argv)}\n")


_PR_SET_PDEATHSIG = 1
_libc = None


def _die_with_runner() -> None:
  """In the child before exec (Linux): SIGTERM when the runner thread that started it dies,
  so a killed runner leaves no trainer behind to race the resumed one in the same run dir."""
  if _libc is not None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def die_with_runner() -> Callable[[], None] | None:
  """A `preexec_fn` for the processes a target starts: on Linux they get SIGTERM when the
  runner thread that started them dies; None elsewhere."""
  global _libc
  if not sys.platform.startswith("linux"):
    return None
  if _libc is None:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
  return _die_with_runner


class LocalTarget(Target):
  """Runs each phase as a subprocess of this machine, in its own process group (so the
  terminal's Ctrl-C reaches the runner only), output appended to the job's log file."""
  name = "local"

  def __init__(self, repo: str = definition.REPO, env: dict[str, str] | None = None,
               grace_s: float = 20.0):
    self.repo, self.env, self.grace_s = repo, env, grace_s
    self._procs: dict[str, subprocess.Popen] = {}
    self._lock = threading.Lock()
    self._child_setup = die_with_runner()

  def describe(self, job: Job | None = None) -> dict[str, Any]:
    return {"target": self.name, **records.host_info()}

  def run(self, job: Job) -> int:
    os.makedirs(os.path.dirname(os.path.abspath(job.log_path)), exist_ok=True)
    for phase in job.phases:
      if job.cancelled.is_set():
        return -int(signal.SIGTERM)
      argv = phase.argv()
      started = time.time()
      with open(job.log_path, "a", encoding="utf-8") as log:
        log.write(phase_header(job, phase.name, argv))
        log.flush()
        with self._lock:
          if job.cancelled.is_set():
            return -int(signal.SIGTERM)
          proc = subprocess.Popen(  # pylint: disable=consider-using-with
              argv, cwd=self.repo, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
              env=self.env, start_new_session=True, preexec_fn=self._child_setup)
          self._procs[job.cell.name] = proc
        if job.on_process:
          job.on_process(proc.pid)
        rc = proc.wait()
        with self._lock:
          self._procs.pop(job.cell.name, None)
      job.phase_results.append({"name": phase.name, "argv": argv, "exit_code": rc,
                                "started": started, "ended": time.time()})
      if rc != 0:
        return rc
      if phase.finish:
        phase.finish()
    return 0

  def terminate(self, job: Job) -> None:
    job.cancelled.set()
    with self._lock:
      proc = self._procs.get(job.cell.name)
    if proc is None or proc.poll() is not None:
      return
    _signal_group(proc, signal.SIGTERM)

    def kill_later():
      try:
        proc.wait(self.grace_s)
      except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)

    threading.Thread(target=kill_later, daemon=True).start()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
  try:
    os.killpg(proc.pid, sig)
  except (ProcessLookupError, PermissionError):
    pass


# Target name -> factory(sweep) -> Target.
_TARGETS: dict[str, Callable[[definition.Sweep], Target]] = {
    "local": lambda sweep: LocalTarget(),
}
# Targets that exist in the design but are provided by a module that may be absent.
_PROVIDED_BY = {"tpu": "launch.tpu_target (Cloud TPU VM jobs through launch.tpu)"}


def register_target(name: str, factory: Callable[[definition.Sweep], Target]) -> None:
  """Makes `target = '<name>'` in a definition run its cells through `factory(sweep)`."""
  _TARGETS[name] = factory


def make_target(sweep: definition.Sweep) -> Target:
  """The target a definition names, checked against the sweep; SweepError if unavailable."""
  name = sweep.target
  if name not in _TARGETS and name in _PROVIDED_BY:
    module = _PROVIDED_BY[name].split()[0]
    try:
      __import__(module)  # the module registers its target on import
    except ImportError as e:
      raise definition.SweepError(sweep.path, "target", f"{name!r} needs {_PROVIDED_BY[name]}, "
                                  f"which this checkout does not have ({e})") from None
    if name not in _TARGETS:
      raise definition.SweepError(sweep.path, "target", f"{module} was imported but registers "
                                  f"no {name!r} target (launch.targets.register_target)")
  if name not in _TARGETS:
    raise definition.SweepError(sweep.path, "target", f"unknown target {name!r} (targets: "
                                f"{', '.join(sorted(set(_TARGETS) | set(_PROVIDED_BY)))})")
  target = _TARGETS[name](sweep)
  target.check(sweep)
  return target

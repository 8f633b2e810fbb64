"""Running the gcloud CLI (`Gcloud`: captured calls, pipes, streamed long commands, interruption
from another thread) or printing what would run (`DryRun`)."""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator, NamedTuple, Sequence, TextIO

from launch.tpu.job import LaunchError, Preempted


class Result(NamedTuple):
  rc: int
  out: str
  err: str


def tail(text: str, lines: int = 3) -> str:
  return " | ".join(l for l in text.strip().splitlines()[-lines:]) or "(no output)"


class Gcloud:
  """Runs the gcloud CLI: captured calls, pipes from a local producer, streamed long commands.

  Each command is echoed to `log` (default stderr) as `+ gcloud ...` (state polls are not);
  progress messages go there too, and streamed commands' output to `output` (default: ours).
  `sleep` (default: a wait that `interrupt()` ends) and `clock` are injectable.

  A caller that is not the terminal's main thread (a sweep runner's cell) passes
  `new_session=True`: gcloud then runs in its own session, out of reach of the terminal's Ctrl-C
  and without a terminal to prompt on, and `interrupt()` plays Ctrl-C's part. `preexec_fn` runs
  in each child before gcloud starts.
  """
  dry_run = False

  def __init__(self, binary: str = "gcloud", log: TextIO | None = None,
               sleep: Callable[[float], None] | None = None,
               clock: Callable[[], float] = time.monotonic, output: TextIO | None = None,
               new_session: bool = False, preexec_fn: Callable[[], None] | None = None):
    self.binary = binary
    self._log = log
    self._nap = sleep
    self.clock = clock
    self.output = output
    self.new_session = new_session
    self.preexec_fn = preexec_fn
    self._lock = threading.RLock()
    self._procs: set[subprocess.Popen] = set()
    self._interrupt: str | None = None  # None, "pending", "delivered"
    self._shield = 0
    self._wake = threading.Event()

  # Output.
  def _err(self) -> TextIO:
    return self._log or sys.stderr

  def say(self, job: str, message: str) -> None:
    print(f"[tpu {job}] {message}", file=self._err(), flush=True)

  def note(self, text: str) -> None:
    """A remark in a dry run's script; nothing in a real run."""

  def _echo(self, text: str) -> None:
    print(f"+ {text}", file=self._err(), flush=True)

  def _argv(self, args: Sequence[str]) -> list[str]:
    return [self.binary, *args]

  def display(self, args: Sequence[str]) -> str:
    """The command as a shell line."""
    return shlex.join(["gcloud", *args])

  # Interruption from another thread.
  def interrupt(self) -> None:
    """Ctrl-C for a caller in another thread: stops the gcloud commands running now (SIGTERM, to
    their process groups with `new_session`) and makes the step waiting on them, or the next
    step, raise KeyboardInterrupt. Only the first call counts, and none inside
    `uninterruptible()`."""
    with self._lock:
      if self._interrupt or self._shield:
        self._interrupt = self._interrupt or "delivered"
        return
      self._interrupt = "pending"
      procs = list(self._procs)
    for proc in procs:
      self._signal(proc, signal.SIGTERM)
    self._wake.set()

  @contextlib.contextmanager
  def uninterruptible(self) -> Iterator[None]:
    """A block (a teardown) that `interrupt()` does not cut short; it answers a pending one."""
    with self._lock:
      self._shield += 1
      if self._interrupt == "pending":
        self._interrupt = "delivered"
    try:
      yield
    finally:
      with self._lock:
        self._shield -= 1

  def _raise_if_interrupted(self) -> None:
    with self._lock:
      if self._interrupt != "pending" or self._shield:
        return
      self._interrupt = "delivered"
    raise KeyboardInterrupt

  def sleep(self, seconds: float) -> None:
    self._raise_if_interrupted()
    if self._nap is None:
      self._wake.wait(seconds)
    else:
      self._nap(seconds)
    self._raise_if_interrupted()

  # Processes.
  def _start(self, args: Sequence[str], **kw: Any) -> subprocess.Popen:
    """Starts `gcloud ARGS`, known to `interrupt()` until `_end`."""
    kw.setdefault("stdin", subprocess.DEVNULL if self.new_session else None)
    with self._lock:
      self._raise_if_interrupted()
      try:
        proc = subprocess.Popen(self._argv(args), start_new_session=self.new_session,
                                preexec_fn=self.preexec_fn, **kw)
      except FileNotFoundError:
        raise LaunchError(f"{self.binary!r} not found: install the Google Cloud CLI") from None
      self._procs.add(proc)
    return proc

  def _signal(self, proc: subprocess.Popen, sig: int) -> None:
    try:
      if self.new_session:
        os.killpg(proc.pid, sig)  # gcloud and the ssh processes it started
      else:
        proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
      pass

  def _end(self, proc: subprocess.Popen) -> None:
    """Stops `proc` if it still runs (SIGTERM, SIGKILL 10 s later) and forgets it."""
    if proc.poll() is None:
      self._signal(proc, signal.SIGTERM)
      try:
        proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self._signal(proc, signal.SIGKILL)
        proc.wait()
    with self._lock:
      self._procs.discard(proc)

  # Commands.
  def call(self, args: Sequence[str], *, stdin: str | None = None, check: bool = True,
           echo: bool = True, timeout_s: float | None = 600) -> Result:
    """Runs `gcloud ARGS` to completion with captured output."""
    if echo:
      self._echo(self.display(args) + (f" < ({len(stdin)} bytes)" if stdin is not None else ""))
    proc = self._start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       **({"stdin": subprocess.PIPE} if stdin is not None else {}))
    try:
      out, err = proc.communicate(input=stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
      raise LaunchError(f"{self.display(args)} ran past {timeout_s:g} s") from None
    finally:
      self._end(proc)
    self._raise_if_interrupted()
    result = Result(proc.returncode, out, err)
    if check and result.rc:
      raise LaunchError(f"{self.display(args)} failed (rc {result.rc}): {tail(result.err)}")
    return result

  def pipe(self, producer: Sequence[str], args: Sequence[str], *, shown: str | None = None,
           cwd: str | None = None) -> None:
    """Runs `PRODUCER | gcloud ARGS` (no temporary file); raises if either fails."""
    self._echo(f"{shown or shlex.join(producer)} | {self.display(args)}")
    try:
      src = subprocess.Popen(list(producer), stdout=subprocess.PIPE, cwd=cwd)
    except FileNotFoundError:
      raise LaunchError(f"{producer[0]!r} not found") from None
    try:
      dst = self._start(args, stdin=src.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True)
      try:
        _, err = dst.communicate()
      finally:
        self._end(dst)
    except BaseException:
      src.kill()
      raise
    finally:
      src.stdout.close()
      src.wait()
    self._raise_if_interrupted()
    if src.returncode:
      raise LaunchError(f"{shlex.join(producer)} failed (rc {src.returncode})")
    if dst.returncode:
      raise LaunchError(f"{self.display(args)} failed (rc {dst.returncode}): {tail(err)}")

  def stream(self, args: Sequence[str], *, timeout_s: float | None = None,
             watch: Callable[[], str | None] | None = None, every: float = 30.0) -> int:
    """Runs `gcloud ARGS` with its output on ours (or `output`); returns its exit status.

    Every `every` seconds `watch()` is asked; a reason it returns stops the command and raises
    `Preempted`. Past `timeout_s` the command is stopped and 124 returned. Ctrl-C (or
    `interrupt()`) stops it too.
    """
    self._echo(self.display(args))
    if self.output is not None:
      self.output.flush()
    proc = self._start(args, stdout=self.output,
                       stderr=subprocess.STDOUT if self.output is not None else None)
    deadline = None if not timeout_s else self.clock() + timeout_s
    try:
      while True:
        try:
          rc = proc.wait(timeout=every if (watch or deadline) else None)
          break
        except subprocess.TimeoutExpired:
          pass
        if deadline is not None and self.clock() > deadline:
          self._end(proc)
          print(f"+ stopped after {timeout_s:g} s: {self.display(args[:5])} ...",
                file=self._err(), flush=True)
          rc = 124
          break
        reason = watch() if watch else None
        if reason:
          raise Preempted(reason)
    finally:
      self._end(proc)
    self._raise_if_interrupted()
    return rc


class DryRun(Gcloud):
  """Prints every command as a line of a shell script (to `out`, default stdout), runs none.

  `calls` holds each gcloud argv. Queries answer "unknown", so the script shows the path that
  creates, sets up, runs and deletes.
  """
  dry_run = True

  def __init__(self, out: TextIO | None = None, log: TextIO | None = None):
    super().__init__(log=log, sleep=lambda s: None)
    self._out = out
    self.calls: list[list[str]] = []

  def _print(self, text: str) -> None:
    print(text, file=self._out or sys.stdout, flush=True)

  def note(self, text: str) -> None:
    self._print(f"# {text}")

  def call(self, args, *, stdin=None, check=True, echo=True, timeout_s=600) -> Result:
    self.calls.append(["gcloud", *args])
    if stdin is None:
      self._print(self.display(args))
    else:
      eof = "DSBS_EOF"
      self._print(f"{self.display(args)} <<'{eof}'\n{stdin.rstrip(chr(10))}\n{eof}")
    return Result(0, "", "")

  def pipe(self, producer, args, *, shown=None, cwd=None) -> None:
    self.calls.append(["gcloud", *args])
    self._print(f"{shown or shlex.join(producer)} | {self.display(args)}")

  def stream(self, args, *, timeout_s=None, watch=None, every=30.0) -> int:
    self.calls.append(["gcloud", *args])
    self._print(self.display(args))
    return 0

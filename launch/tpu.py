"""Cloud TPU VM jobs: create, set up, run, babysit, tear down and clean up, each step on its own.

Run from the repository root (the launcher is not installed; it ships this checkout's commit):

    python -m launch.tpu create   --name=dsbs-anli --zone=us-central2-b --accelerator=v4-32
    python -m launch.tpu setup    --name=dsbs-anli --zone=us-central2-b --model_dir=gs://B/anli
    python -m launch.tpu run      --name=dsbs-anli --zone=us-central2-b --accelerator=v4-32 \\
        --model_dir=gs://B/anli --gin_file=gin_configs/anli_770m.gin \\
        --gin=MIXTURE_OR_TASK_NAME="'anli1_dsbs_pct25'"
    python -m launch.tpu teardown --name=dsbs-anli --zone=us-central2-b
    python -m launch.tpu babysit  ...all of the above in one: create, setup, run; on preemption
                                  delete, create again and resume in the same model dir
    python -m launch.tpu cleanup  --zone=us-central2-b [--sweep=NAME] [--yes]

Every subcommand takes `--dry_run`: it prints every gcloud command it would run, as a shell
script on stdout, runs none and writes nothing (no temporary files). Each subcommand is
idempotent: `create` reuses a READY/ACTIVE resource of this job, waits for a pending one, and
deletes and recreates a FAILED/PREEMPTED/SUSPENDED one; `setup` skips a worker whose marker
(`~/.dsbs_setup/versions`) already holds the same dsbs code, JAX and T5X versions.

What it guarantees:
- Ownership. A resource is deleted (by `babysit`'s teardown on success, on running out of
  retries, on an error or on Ctrl-C) only when this process created it or `--own` was given; the
  `teardown` subcommand deletes only a resource labelled as created by this launcher for this job
  and owner (`dsbs-run`, `dsbs-owner`), or any with `--own`. A live resource of the same name that
  this job did not create is never reused or deleted without `--own`.
- Labels `dsbs-run=<name>`, `dsbs-sweep=<sweep|none>`, `dsbs-owner=<user>` (plus `--label`) on
  every resource; `cleanup` finds leftovers by them.
- Code: the committed tree of this checkout (`git archive`, never untracked files) is uploaded to
  `<model_dir>/code/dsbs-<id>.tar.gz` and unpacked on every worker; a dirty tree is refused unless
  `--allow_dirty` (then the tracked changes ship too, and the record says `dirty: true`). JAX for
  TPU and T5X are pinned (`--jax_version`, `--t5x_revision`).
- `run` executes the same command on `--worker=all`: `python3 -m t5x.train` or
  `python3 -m dsbs.train` with `--gin_file=...` and `--gin.KEY=VALUE` for each override. The
  overrides are opaque gin bindings, shell-quoted once for the remote shell and never evaluated
  (`$(...)`, quotes, spaces and `=` reach the trainer's argv unchanged). Each worker first frees
  the TPU (stale processes, `/tmp/libtpu_lockfile`), runs under a timeout, copies its log to
  `<model_dir>/logs/<attempt>/worker-N.log` every `--log_sync_s` seconds, and stops when another
  worker has failed. `<model_dir>/launch_record.json` records the job (overrides, commit, dirty
  flag, accelerator, zone, engine, runtime image, versions, attempt, preemptions).

Python API (the sweep runner's tpu target, launch/tpu_target.py, drives one cell per job):

    from launch import tpu
    job = tpu.TpuJob(name="sweep-cell-3", zone="us-west4-a", accelerator="v5litepod-64",
                     provisioning="spot", queued=True, engine="t5x",
                     gin_files=("gin_configs/anli_770m.gin",),
                     overrides=(("MIXTURE_OR_TASK_NAME", "'anli1_dsbs'"), ("RANDOM_SEED", "1")),
                     model_dir="gs://B/sweeps/s/cell-3", sweep="s", max_retries=5)
    rc = tpu.babysit(job, tpu.Gcloud())      # exit status: 0, the trainer's, 75 or 1
    tpu.babysit(job, tpu.DryRun())           # prints the commands; DryRun().calls holds them

`TpuJob` is a frozen dataclass, validated on construction (`JobError` names the field); its
`command` (an argv) runs instead of the engine's trainer. `create(job, gcloud) -> bool` (True
when it created the resource), `setup(job, gcloud) -> Code`, `run(job, gcloud, attempt=None) ->
int` (the remote exit status; raises `Preempted`), `teardown(job, gcloud, owned=None) -> bool`,
`babysit(job, gcloud) -> int` and `cleanup(gcloud, zones, ...) -> int` raise `LaunchError` when
gcloud fails. `babysit(job, gcloud, lease=Lease())` leaves the resource up for more commands
(`run`), then `teardown_uninterrupted(job, gcloud, owned=lease.owned or None)` deletes it.
`Gcloud` runs the real CLI (`binary=` picks another executable; `new_session=True` and
`interrupt()` for a caller in another thread); `DryRun` records and prints instead.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import getpass
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import (Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence,
                    TextIO)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runtime (software) version per TPU generation, for JAX: the Cloud TPU "TPU software versions"
# page (https://cloud.google.com/tpu/docs/runtimes, "PyTorch and JAX"): v6e (Trillium)
# v2-alpha-tpuv6e, v5p v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite, v4 and older tpu-ubuntu2204-base.
# The key is the accelerator type's prefix (`v5litepod-64` is a v5e slice). --runtime_version
# overrides it.
RUNTIME_VERSIONS = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
# The versions this project's T5X tests and benchmarks ran with (README, "Benchmarks").
JAX_VERSION = "0.10.2"
T5X_REVISION = "cc342d419ec3e3e9c4bf1df33c82330cafdc1e16"

PROVISIONING = ("spot", "reserved", "on-demand")
ENGINES = ("t5x", "dsbs")
NODE, QUEUED = "tpu-vm", "queued-resources"  # the gcloud command groups
# Node states (TPU API v2 Node.State) and queued-resource states (QueuedResourceState.State).
NODE_OK = frozenset({"READY"})
NODE_PENDING = frozenset({"CREATING", "STARTING", "RESTARTING", "REPAIRING", "REIMAGING",
                          "UNHIDING", "DELETING"})
NODE_DEAD = frozenset({"PREEMPTED", "TERMINATED", "FAILED", "STOPPED", "STOPPING", "HIDING",
                       "HIDDEN", "UNKNOWN"})
QUEUED_OK = frozenset({"ACTIVE"})
QUEUED_PENDING = frozenset({"CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING",
                            "DELETING"})
QUEUED_DEAD = frozenset({"FAILED", "SUSPENDING", "SUSPENDED"})

EXIT_ERROR, EXIT_USAGE, EXIT_PREEMPTED, EXIT_INTERRUPTED = 1, 2, 75, 130
WORKER_SCRIPT = "launch/worker.sh"  # shipped in the archive; runs on every worker
RECORD = "launch_record.json"
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_GIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(/[A-Za-z_][A-Za-z0-9_.]*)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.IGNORECASE)
_MODEL_DIR = re.compile(r"^gs://[a-z0-9][-a-z0-9_.]*(/[A-Za-z0-9._=+@-]+)*/?$")

# The remote preambles (one line each, arguments passed as bash positional parameters, never
# spliced into the script). Setup: skip when the marker holds the wanted versions, else unpack
# the archive into ~/dsbs.new and hand over to its worker.sh. Run: refuse a worker that is not
# set up for these versions, else hand over to ~/dsbs/launch/worker.sh.
_SETUP_SH = ('set -euo pipefail; want="$1"; url="$2"; shift 2; '
             'if [ "$(cat ~/.dsbs_setup/versions 2>/dev/null)" = "$want" ]; then '
             'echo "dsbs setup: $(hostname) is up to date ($want)"; exit 0; fi; '
             'rm -rf ~/dsbs.new; mkdir -p ~/dsbs.new; '
             'gcloud storage cat "$url" | tar -xzf - -C ~/dsbs.new; '
             f'exec bash ~/dsbs.new/{WORKER_SCRIPT} setup "$@"')
_RUN_SH = ('want="$1"; shift; have="$(cat ~/.dsbs_setup/versions 2>/dev/null)"; '
           'if [ "$have" != "$want" ]; then '
           'echo "dsbs run: $(hostname) is set up for [$have], not [$want]: run setup" >&2; '
           'exit 3; fi; '
           f'cd ~/dsbs && exec bash {WORKER_SCRIPT} run "$@"')


class JobError(ValueError):
  """A job that cannot run as given; `field` names the TpuJob field (the CLI flag)."""

  def __init__(self, field: str, message: str):
    super().__init__(f"--{field}: {message}")
    self.field, self.message = field, message


class LaunchError(RuntimeError):
  """gcloud or a worker failed. `created`: the failing step had asked for a new resource."""

  def __init__(self, message: str, created: bool = False):
    super().__init__(message)
    self.created = created


class Preempted(LaunchError):
  """The resource went away (preempted, suspended, deleted) while the job ran."""


# ---- The job ----------------------------------------------------------------------------------

def _default_owner() -> str:
  try:
    user = getpass.getuser()
  except (KeyError, OSError):  # no passwd entry, no $USER
    user = "unknown"
  return (re.sub(r"[^a-z0-9_-]", "-", user.lower())[:63]) or "unknown"


@dataclasses.dataclass(frozen=True)
class TpuJob:
  """One training job on one TPU VM or queued resource; validated on construction."""
  name: str  # the TPU node (and queued resource) name; also the `dsbs-run` label
  zone: str
  accelerator: str = ""  # --accelerator-type: v4-32, v5litepod-64, v5p-128, v6e-64, ...
  model_dir: str = ""  # gs:// run dir (checkpoints, logs/, code/, launch_record.json)
  project: str | None = None  # None: gcloud's configured project
  runtime_version: str | None = None  # None: RUNTIME_VERSIONS by generation
  provisioning: str = "on-demand"  # spot | reserved | on-demand
  queued: bool = False  # a queued resource instead of a direct TPU VM create
  engine: str = "t5x"  # t5x: python3 -m t5x.train; dsbs: python3 -m dsbs.train
  gin_files: tuple[str, ...] = ()  # relative to the repository root, committed
  overrides: tuple[tuple[str, str], ...] = ()  # (gin KEY, gin literal) -> --gin.KEY=VALUE
  # An argv to run on every worker instead of the engine's trainer (`python3 -m t5x.eval ...`),
  # from the shipped checkout's root; replaces gin_files and overrides.
  command: tuple[str, ...] = ()
  env: tuple[tuple[str, str], ...] = ()  # non-secret variables exported on every worker
  labels: tuple[tuple[str, str], ...] = ()  # extra labels (the dsbs-* ones are added)
  sweep: str | None = None  # the `dsbs-sweep` label
  owner: str = dataclasses.field(default_factory=_default_owner)  # the `dsbs-owner` label
  meta: tuple[tuple[str, Any], ...] = ()  # JSON-able facts for the run record (a sweep cell)
  own: bool = False  # treat an existing resource of this name as ours: reuse it, delete it
  keep: bool = False  # never delete (debugging); teardown prints the delete command
  allow_dirty: bool = False  # ship uncommitted changes to tracked files
  jax_version: str = JAX_VERSION
  t5x_revision: str = T5X_REVISION  # a T5X commit; "none" skips T5X (engine dsbs only)
  max_retries: int = 3  # babysit: recreations after preemption
  backoff_s: float = 60.0  # babysit: first wait before recreating; doubles each retry
  max_backoff_s: float = 1800.0
  poll_s: float = 30.0  # state polls: queued-resource wait, preemption watch during run
  create_timeout_s: float = 6 * 3600.0  # waiting for a resource to become READY/ACTIVE
  setup_timeout_s: float = 3600.0
  run_timeout_s: float = 72 * 3600.0  # per worker (`timeout`); 0: none
  log_sync_s: float = 30.0  # how often each worker copies its log to the model dir
  repo: str = REPO  # the git checkout whose commit ships
  record: str = RECORD  # the run record's file name in model_dir

  def __post_init__(self):
    if not _NAME.match(self.name or ""):
      raise JobError("name", f"{self.name!r}: lowercase letters, digits and '-', starting with "
                     "a letter, at most 63 characters")
    if not self.zone:
      raise JobError("zone", "required, e.g. us-central2-b (v4), us-west4-a (v5e)")
    if self.accelerator:
      self.resolved_runtime()  # raises for an unknown generation without --runtime_version
    if self.model_dir and not _MODEL_DIR.match(self.model_dir):
      raise JobError("model_dir", f"{self.model_dir!r}: a gs://BUCKET/path the workers can write "
                     "(letters, digits and ._=+@- in the path)")
    if self.provisioning not in PROVISIONING:
      raise JobError("provisioning", f"{self.provisioning!r} not in {PROVISIONING}")
    if self.engine not in ENGINES:
      raise JobError("engine", f"{self.engine!r} not in {ENGINES}")
    for f in self.gin_files:
      if not f or os.path.isabs(f) or ".." in f.split("/"):
        raise JobError("gin_file", f"{f!r}: a path relative to the repository root")
    if self.command and (self.gin_files or self.overrides):
      raise JobError("command", "a command replaces --gin_file and --gin: give one or the other")
    if self.command and not all(isinstance(a, str) and a for a in self.command):
      raise JobError("command", f"{self.command!r}: an argv of non-empty strings")
    for key, _ in self.overrides:
      if not _GIN_KEY.match(key):
        raise JobError("gin", f"{key!r} is not a gin binding key (MACRO or scope/fn.param)")
      if key == "MODEL_DIR":
        raise JobError("gin", "MODEL_DIR comes from --model_dir")
    for key, _ in self.env:
      if not _ENV_NAME.match(key):
        raise JobError("env", f"{key!r} is not an environment variable name")
      if _SECRET_NAME.search(key):
        raise JobError("env", f"{key} looks like a secret: it would be printed and recorded; "
                       "give the workers their secrets another way (service account, metadata)")
    for key, value in self.all_labels().items():
      if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
        raise JobError("label", f"{key}={value}: labels are lowercase letters, digits, '_' and "
                       "'-', at most 63 characters")
    if any(k.startswith("dsbs-") for k, _ in self.labels):
      raise JobError("label", "the dsbs-* labels are set by the launcher")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.json$", self.record):
      raise JobError("record", f"{self.record!r}: a file name ending in .json")
    if self.max_retries < 0:
      raise JobError("max_retries", "must be >= 0")
    if self.t5x_revision == "none" and self.engine == "t5x":
      raise JobError("t5x_revision", "the t5x engine needs T5X")
    try:
      json.dumps(dict(self.meta))
    except (TypeError, ValueError) as e:
      raise JobError("meta", f"not JSON-serialisable: {e}") from None

  @property
  def kind(self) -> str:
    return QUEUED if self.queued else NODE

  def resolved_runtime(self) -> str:
    if self.runtime_version:
      return self.runtime_version
    m = re.match(r"^(v\d+[a-z]*)-\d+$", self.accelerator)
    if m and m.group(1) == "v5e":
      raise JobError("accelerator", f"{self.accelerator!r}: v5e slices are named "
                     f"v5litepod-N (e.g. v5litepod-{self.accelerator.split('-')[1]})")
    if not m or m.group(1) not in RUNTIME_VERSIONS:
      raise JobError("accelerator", f"{self.accelerator!r}: no default runtime for this "
                     f"generation (known: {sorted(RUNTIME_VERSIONS)}); pass --runtime_version")
    return RUNTIME_VERSIONS[m.group(1)]

  def all_labels(self) -> dict[str, str]:
    return {**dict(self.labels), "dsbs-run": self.name, "dsbs-sweep": self.sweep or "none",
            "dsbs-owner": self.owner}

  def location(self) -> list[str]:
    return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])

  def versions(self, code_id: str) -> str:
    """What a set-up worker's marker holds."""
    return f"dsbs={code_id} jax={self.jax_version} t5x={self.t5x_revision}"

  def require(self, *fields: str) -> None:
    for f in fields:
      if not getattr(self, f):
        raise JobError(f.rstrip("s"), "required for this step")


# ---- Running gcloud ---------------------------------------------------------------------------

class Result(NamedTuple):
  rc: int
  out: str
  err: str


def _tail(text: str, lines: int = 3) -> str:
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
      raise LaunchError(f"{self.display(args)} failed (rc {result.rc}): {_tail(result.err)}")
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
      raise LaunchError(f"{self.display(args)} failed (rc {dst.returncode}): {_tail(err)}")

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


# ---- Resource state ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Resource:
  """What `describe` says about a node or queued resource (state None: the dry run's unknown)."""
  kind: str
  name: str
  state: str | None
  labels: Mapping[str, str]
  accelerator: str | None = None
  queued_resource: str | None = None  # a node's queued resource, when it came from one


def _short(name: str) -> str:
  return name.rsplit("/", 1)[-1]


def _parse_resource(kind: str, d: Mapping[str, Any]) -> Resource:
  if kind == QUEUED:
    spec = ((d.get("tpu") or {}).get("nodeSpec") or [{}])[0]
    node = spec.get("node") or {}
    return Resource(kind, _short(d.get("name", "")), (d.get("state") or {}).get("state"),
                    node.get("labels") or {}, node.get("acceleratorType"))
  qr = d.get("queuedResource")
  return Resource(kind, _short(d.get("name", "")), d.get("state"), d.get("labels") or {},
                  d.get("acceleratorType"), _short(qr) if qr else None)


def _missing(err: str) -> bool:
  return "NOT_FOUND" in err or "was not found" in err


def describe(job: TpuJob, gcloud: Gcloud, kind: str | None = None,
             echo: bool = True) -> Resource | None:
  """The job's node or queued resource; None when it does not exist."""
  kind = kind or job.kind
  args = ["compute", "tpus", kind, "describe", job.name, *job.location(), "--format=json"]
  r = gcloud.call(args, check=False, echo=echo)
  if gcloud.dry_run:
    return Resource(kind, job.name, None, {})
  if r.rc:
    if _missing(r.err):
      return None
    raise LaunchError(f"{gcloud.display(args)} failed (rc {r.rc}): {_tail(r.err)}")
  try:
    return _parse_resource(kind, json.loads(r.out))
  except (json.JSONDecodeError, AttributeError, TypeError) as e:
    raise LaunchError(f"{gcloud.display(args)}: unreadable answer ({e}): {r.out[:200]!r}") \
        from None


def _ours(job: TpuJob, res: Resource) -> bool:
  """Created by this launcher for this job and owner (its labels say so)."""
  return (res.labels.get("dsbs-run") == job.name
          and res.labels.get("dsbs-owner") == job.owner)


def _foreign(job: TpuJob, res: Resource) -> LaunchError:
  return LaunchError(
      f"{res.kind} {job.name} exists ({res.state}) but was not created by this launcher for this "
      f"job (labels {dict(res.labels) or 'none'}); choose another --name, or pass --own to use "
      "it (and have it deleted at the end)")


def _create_args(job: TpuJob) -> list[str]:
  labels = ",".join(f"{k}={v}" for k, v in sorted(job.all_labels().items()))
  prov = {"spot": ["--spot"], "reserved": ["--reserved"], "on-demand": []}[job.provisioning]
  if job.queued:
    return ["compute", "tpus", QUEUED, "create", job.name, *job.location(),
            f"--node-id={job.name}", f"--accelerator-type={job.accelerator}",
            f"--runtime-version={job.resolved_runtime()}", f"--labels={labels}", *prov,
            f"--valid-until-duration={int(job.create_timeout_s)}s"]
  return ["compute", "tpus", NODE, "create", job.name, *job.location(),
          f"--accelerator-type={job.accelerator}", f"--version={job.resolved_runtime()}",
          f"--labels={labels}", *prov]


def _delete_args(job: TpuJob) -> list[str]:
  if job.queued:  # --force: delete its node too
    return ["compute", "tpus", QUEUED, "delete", job.name, *job.location(), "--force", "--quiet"]
  return ["compute", "tpus", NODE, "delete", job.name, *job.location(), "--quiet"]


def _ssh_args(job: TpuJob, command: str) -> list[str]:
  return ["compute", "tpus", NODE, "ssh", job.name, *job.location(), "--worker=all",
          f"--command={command}"]


def _states(job: TpuJob) -> tuple[frozenset, frozenset, frozenset]:
  return ((QUEUED_OK, QUEUED_PENDING, QUEUED_DEAD) if job.queued
          else (NODE_OK, NODE_PENDING, NODE_DEAD))


# ---- create -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Lease:
  """A resource held across steps: `owned` turns True as soon as a create of it is asked for
  (so an interruption right after still deletes it); `preemptions` are babysit's so far."""
  owned: bool = False
  preemptions: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def create(job: TpuJob, gcloud: Gcloud | None = None, lease: Lease | None = None) -> bool:
  """Makes the job's resource READY (node) or ACTIVE (queued); True when this call created it.

  Reuses a ready resource of this job, waits (with progress, up to `create_timeout_s`) for a
  pending one, deletes and recreates a dead one. A resource this job did not create is neither
  reused nor deleted unless `job.own`. Raises LaunchError (`.created` says whether a resource
  this call asked for may exist); `lease.owned` is set once a create was asked for.
  """
  g = gcloud or Gcloud()
  job.require("accelerator")
  ok, pending, dead = _states(job)
  res = describe(job, g)
  if g.dry_run:
    g.note(f"{job.name}: READY/ACTIVE with this job's labels: reused; pending: waited for; "
           "FAILED/PREEMPTED/SUSPENDED: deleted first; missing:")
    g.call(_create_args(job))
    if lease is not None:
      lease.owned = True
    g.note(f"then, every {job.poll_s:g} s until {'ACTIVE' if job.queued else 'READY'} (at most "
           f"{job.create_timeout_s:g} s):")
    describe(job, g)
    return True

  created = asked = False
  start = g.clock()
  seen, said = None, start
  while True:
    if res is None:
      if asked:
        raise LaunchError(f"{job.kind} {job.name} disappeared while it was being created",
                          created=created)
      g.say(job.name, f"creating {job.kind} {job.name}: {job.accelerator}, "
            f"{job.resolved_runtime()}, {job.provisioning}")
      r = g.call(_create_args(job), check=False, timeout_s=None)
      asked = True
      exists = bool(r.rc) and ("ALREADY_EXISTS" in r.err or "already exists" in r.err)
      if lease is not None and not exists:
        lease.owned = True
      if r.rc and not exists:  # the name was free and we asked for it: what exists now is ours
        raise LaunchError(f"creating {job.name} failed (rc {r.rc}): {_tail(r.err)}", created=True)
      created = not r.rc
      res = describe(job, g)
      if res is None and exists:  # e.g. a node of that name without a queued resource
        raise LaunchError(f"creating {job.name} failed (rc {r.rc}): {_tail(r.err)}")
      if exists:
        g.say(job.name, f"{job.name} was created by someone else meanwhile")
      continue
    if not (created or job.own or _ours(job, res)):
      raise _foreign(job, res)
    if res.state in ok:
      if res.accelerator and res.accelerator != job.accelerator:
        raise LaunchError(f"{job.name} is a {res.accelerator}, this job asks for "
                          f"{job.accelerator}; delete it or choose another --name",
                          created=created)
      g.say(job.name, f"{job.name} is {res.state}" + ("" if created else " (reused)"))
      return created
    if res.state in dead:
      if asked:
        raise LaunchError(f"{job.kind} {job.name} went {res.state} while being created",
                          created=created)
      g.say(job.name, f"{job.name} is {res.state}: deleting it to create it again")
      g.call(_delete_args(job), timeout_s=None)
      res = describe(job, g)
      continue
    if res.state not in pending:
      raise LaunchError(f"{job.kind} {job.name} is in an unexpected state {res.state!r}",
                        created=created)
    waited = g.clock() - start
    if waited > job.create_timeout_s:
      raise LaunchError(f"{job.kind} {job.name} still {res.state} after {waited:.0f} s "
                        f"(--create_timeout_s={job.create_timeout_s:g})", created=created)
    if res.state != seen or g.clock() - said >= 300:
      g.say(job.name, f"waiting for {job.name}: {res.state} ({waited / 60:.0f} min)")
      seen, said = res.state, g.clock()
    g.sleep(job.poll_s)
    res = describe(job, g, echo=False)


# ---- setup ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Code:
  """The code that ships: HEAD, whether tracked files differ from it, and a content id."""
  commit: str
  dirty: bool
  id: str  # the commit, or <commit[:12]>-<sha256 of the diff[:12]> for a dirty tree
  files: frozenset[str]


def _git(repo: str, *args: str) -> str:
  try:
    proc = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=False)
  except FileNotFoundError:
    raise LaunchError("git not found") from None
  if proc.returncode:
    raise LaunchError(f"git -C {repo} {' '.join(args)} failed: {_tail(proc.stderr)}")
  return proc.stdout


def code_state(job: TpuJob) -> Code:
  """The checkout's commit and dirty state; refuses a dirty tree unless `allow_dirty`."""
  commit = _git(job.repo, "rev-parse", "HEAD").strip()
  changed = _git(job.repo, "status", "--porcelain", "--untracked-files=no").splitlines()
  if changed and not job.allow_dirty:
    shown = ", ".join(l[3:] for l in changed[:5]) + (" ..." if len(changed) > 5 else "")
    raise JobError("allow_dirty", f"{job.repo} has uncommitted changes to tracked files "
                   f"({shown}): commit them, or pass --allow_dirty (a sweep's tpu.allow_dirty) "
                   "to ship them (untracked files never ship)")
  if changed:
    diff = subprocess.run(["git", "-C", job.repo, "diff", "--binary", "HEAD"],
                          capture_output=True, check=True).stdout
    code_id = f"{commit[:12]}-{hashlib.sha256(diff).hexdigest()[:12]}"
    files = _git(job.repo, "ls-files").splitlines()
  else:
    code_id = commit
    files = _git(job.repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
  code = Code(commit, bool(changed), code_id, frozenset(files))
  if WORKER_SCRIPT not in code.files:
    raise LaunchError(f"{job.repo} has no committed {WORKER_SCRIPT}: it is not a dsbs checkout "
                      "this launcher can ship")
  for f in job.gin_files:
    if f not in code.files:
      raise JobError("gin_file", f"{f} is not committed in {job.repo}: only committed files "
                     "reach the workers")
  return code


def _archive(job: TpuJob, code: Code) -> str:
  return f"{job.model_dir.rstrip('/')}/code/dsbs-{code.id}.tar.gz"


def setup(job: TpuJob, gcloud: Gcloud | None = None, code: Code | None = None) -> Code:
  """Ships the code (default: `code_state(job)`) and installs the pinned stack on every worker;
  skips what is in place."""
  g = gcloud or Gcloud()
  job.require("model_dir")
  code = code or code_state(job)
  url = _archive(job, code)
  producer = ["git", "-C", job.repo, "archive", "--format=tar.gz", code.commit]
  shown = None
  if code.dirty:
    stash = f"$(git -C {shlex.quote(job.repo)} stash create)"
    shown = f"git -C {shlex.quote(job.repo)} archive --format=tar.gz \"{stash}\""
    if not g.dry_run:  # a commit object holding the tracked changes; the work tree is untouched
      producer[-1] = _git(job.repo, "stash", "create").strip() or code.commit
  g.say(job.name, f"setup: dsbs {code.id}{' (dirty)' if code.dirty else ''}, "
        f"jax[tpu]=={job.jax_version}, T5X {job.t5x_revision}")
  g.pipe(producer, ["storage", "cp", "-", url], shown=shown)
  command = shlex.join(["bash", "-c", _SETUP_SH, "dsbs-setup", job.versions(code.id), url,
                        f"--code={code.id}", f"--jax={job.jax_version}",
                        f"--t5x={job.t5x_revision}"])
  rc = g.stream(_ssh_args(job, command), timeout_s=job.setup_timeout_s)
  if rc:
    raise LaunchError(f"setup failed on at least one worker of {job.name} (rc {rc}); "
                      "the workers' output is above")
  return code


# ---- run --------------------------------------------------------------------------------------

def _gin_string(value: str) -> str:
  return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def trainer_argv(job: TpuJob) -> list[str]:
  """The command every worker runs, as an argv (never through a shell on the worker): the
  job's `command`, else the engine's trainer."""
  if job.command:
    return list(job.command)
  argv = ["python3", "-m", f"{job.engine}.train", *(f"--gin_file={f}" for f in job.gin_files)]
  if job.engine == "t5x":
    argv.append(f"--gin.MODEL_DIR={_gin_string(job.model_dir)}")
  else:
    argv.append(f"--model_dir={job.model_dir}")
  return argv + [f"--gin.{key}={value}" for key, value in job.overrides]


def run_command(job: TpuJob, code: Code, logs: str) -> str:
  """The one remote command line, identical on every worker."""
  return shlex.join(["bash", "-c", _RUN_SH, "dsbs-run", job.versions(code.id), f"--logs={logs}",
                     f"--timeout={int(job.run_timeout_s)}", f"--sync={job.log_sync_s:g}",
                     *(f"--env={k}={v}" for k, v in job.env), "--", *trainer_argv(job)])


def _utc(fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime(fmt)


def run_record(job: TpuJob, code: Code, attempt: str, logs: str,
               preemptions: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
  """What `<model_dir>/launch_record.json` holds."""
  return {
      "written_at": _utc(), "launcher": "python -m launch.tpu",
      "name": job.name, "zone": job.zone, "project": job.project,
      "accelerator": job.accelerator, "runtime_version": job.resolved_runtime(),
      "provisioning": job.provisioning, "queued": job.queued, "engine": job.engine,
      "gin_files": list(job.gin_files), "overrides": [list(kv) for kv in job.overrides],
      "env": dict(job.env), "labels": job.all_labels(), "model_dir": job.model_dir,
      "commit": code.commit, "dirty": code.dirty, "code_id": code.id,
      "code_archive": _archive(job, code),
      "versions": {"dsbs": code.id, "jax": job.jax_version, "t5x": job.t5x_revision},
      "trainer_argv": trainer_argv(job), "attempt": attempt, "logs": logs,
      "preemptions": [dict(p) for p in preemptions], "meta": dict(job.meta),
  }


def _preemption(job: TpuJob, g: Gcloud) -> str | None:
  """Why the job's node can no longer run it, or None (also when the API is unreachable).

  One describe of the node, for both kinds: a preempted queued resource's node is PREEMPTED,
  then gone, before the queued resource turns SUSPENDED.
  """
  try:
    node = describe(job, g, NODE, echo=False)
  except LaunchError:
    return None
  if node is None or node.state not in NODE_OK:
    return f"node {job.name} is {node.state if node else 'gone'}"
  return None


def run(job: TpuJob, gcloud: Gcloud | None = None, attempt: str | None = None,
        watch: bool = True, preemptions: Sequence[Mapping[str, Any]] = (),
        code: Code | None = None) -> int:
  """Writes the run record, then trains (or runs `job.command`) on every worker, which `setup`
  prepared for `code` (default: `code_state(job)`); returns the remote exit status.

  With `watch`, the resource's state is polled every `poll_s` seconds and a preemption stops the
  ssh session and raises `Preempted`. Logs: `<model_dir>/logs/<attempt>/worker-N.log`.
  """
  g = gcloud or Gcloud()
  job.require("model_dir", "accelerator", *(() if job.command else ("gin_files",)))
  code = code or code_state(job)
  attempt = attempt or _utc("%Y%m%d-%H%M%S")
  logs = f"{job.model_dir.rstrip('/')}/logs/{attempt}"
  record = run_record(job, code, attempt, logs, preemptions)
  g.call(["storage", "cp", "-", f"{job.model_dir.rstrip('/')}/{job.record}"],
         stdin=json.dumps(record, indent=2) + "\n")
  what = shlex.join(job.command[:3]) if job.command else f"training ({job.engine})"
  g.say(job.name, f"{what} on every worker of {job.name}; logs: {logs}/")
  if g.dry_run and watch:
    g.note(f"while it runs: the state of {job.name} is polled every {job.poll_s:g} s "
           "(describe) and a preemption stops it")
  local_limit = job.run_timeout_s + 600 if job.run_timeout_s else None
  rc = g.stream(_ssh_args(job, run_command(job, code, logs)), timeout_s=local_limit,
                watch=(lambda: _preemption(job, g)) if watch else None, every=job.poll_s)
  if rc:
    g.say(job.name, f"{what} failed (rc {rc}); worker logs: {logs}/worker-*.log")
  return rc


# ---- teardown, babysit ------------------------------------------------------------------------

def teardown(job: TpuJob, gcloud: Gcloud | None = None, owned: bool | None = None) -> bool:
  """Deletes the job's resource if it is ours; True when a delete was issued.

  `owned=None` (the `teardown` subcommand): ours when its labels say this launcher created it
  for this job and owner. `owned=True/False`: the caller knows (babysit). `job.own` always
  makes it ours; `job.keep` never deletes.
  """
  g = gcloud or Gcloud()
  if job.keep:
    g.say(job.name, f"--keep: leaving {job.name} up; delete it with: "
          f"{g.display(_delete_args(job))}")
    return False
  if owned is False and not job.own:
    g.say(job.name, f"not deleting {job.name}: this launcher did not create it (--own to own it)")
    return False
  if owned is None and not job.own:
    res = describe(job, g)
    if g.dry_run:
      g.note(f"deleted only if labelled dsbs-run={job.name}, dsbs-owner={job.owner} "
             "(or with --own):")
    elif res is None:
      g.say(job.name, f"{job.name}: nothing to delete")
      return False
    elif not _ours(job, res):
      g.say(job.name, f"not deleting {job.name}: not created by this launcher for this job "
            f"(labels {dict(res.labels) or 'none'}); pass --own to delete it")
      return False
    elif res.queued_resource == job.name and not job.queued:  # deleting the node alone would
      job = dataclasses.replace(job, queued=True)              # leave its queued resource
  g.say(job.name, f"deleting {job.kind} {job.name}")
  r = g.call(_delete_args(job), check=False, timeout_s=None)
  if r.rc and not _missing(r.err):
    raise LaunchError(f"deleting {job.name} failed (rc {r.rc}): {_tail(r.err)}; delete it by "
                      f"hand: {g.display(_delete_args(job))}")
  return True


def teardown_uninterrupted(job: TpuJob, gcloud: Gcloud, owned: bool | None = None) -> bool:
  """teardown() that neither a second Ctrl-C (gcloud inherits the ignored SIGINT) nor
  `gcloud.interrupt()` cuts short; a failed delete is reported, not raised."""
  main = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
  try:
    with gcloud.uninterruptible():
      return teardown(job, gcloud, owned=owned)
  except LaunchError as e:
    gcloud.say(job.name, f"teardown: {e}")
    return False
  finally:
    if main:
      signal.signal(signal.SIGINT, previous)


def babysit(job: TpuJob, gcloud: Gcloud | None = None, lease: Lease | None = None,
            code: Code | None = None) -> int:
  """create + setup + run until the job ends; on preemption recreate and resume, with backoff.

  Returns 0 on success, the trainer's exit status when it fails on a healthy resource, 75
  (EX_TEMPFAIL) after `max_retries` recreations, 1 when gcloud fails, 2 for a job that cannot
  run, 130 on Ctrl-C/SIGTERM (or `gcloud.interrupt()`). Whatever happens, the resource is
  deleted if this call created it (or `job.own`), and only then. With a `lease` it is left up
  whatever happens, for more commands: the holder deletes it (`teardown_uninterrupted(job, g,
  owned=lease.owned or None)`); `lease.preemptions` collects the preemptions. Every attempt
  ships the same `code` (default: `code_state(job)`, taken first: a dirty tree is refused before
  anything is created).
  """
  g = gcloud or Gcloud()
  held = lease if lease is not None else Lease()
  preemptions = held.preemptions
  stamp = _utc("%Y%m%d-%H%M%S")
  attempt = 0
  try:
    code = code or code_state(job)
    while True:
      create(job, g, held)
      reason = None
      try:
        setup(job, g, code)
        rc = run(job, g, attempt=f"{stamp}-{attempt}", preemptions=preemptions, code=code)
      except Preempted as e:
        reason = str(e)
      except LaunchError:
        reason = _preemption(job, g)
        if reason is None:
          raise
      else:
        if g.dry_run:
          g.note(f"on a preemption (at most {job.max_retries} times): after {job.backoff_s:g} s "
                 "(doubling) the steps above again, from the describe, in the same model dir")
        if rc == 0:
          g.say(job.name, "done")
          return 0
        reason = None if g.dry_run else _preemption(job, g)
        if reason is None and rc == 255:
          reason = "ssh lost the connection (rc 255)"
        if reason is None:
          g.say(job.name, f"the trainer failed (rc {rc}) on a healthy {job.name}: not retrying")
          return rc
      preemptions.append({"attempt": f"{stamp}-{attempt}", "at": _utc(), "reason": reason})
      if attempt == job.max_retries:
        g.say(job.name, f"{reason}; out of retries ({job.max_retries})")
        return EXIT_PREEMPTED
      delay = min(job.backoff_s * 2 ** attempt, job.max_backoff_s)
      g.say(job.name, f"{reason}: recreating in {delay:g} s (retry {attempt + 1} of "
            f"{job.max_retries}); the run resumes from its last checkpoint")
      g.sleep(delay)
      attempt += 1
  except KeyboardInterrupt:
    g.say(job.name, "interrupted")
    return EXIT_INTERRUPTED
  except JobError as e:
    g.say(job.name, str(e))
    return EXIT_USAGE
  except LaunchError as e:
    g.say(job.name, str(e))
    return EXIT_ERROR
  finally:
    if lease is None:
      teardown_uninterrupted(job, g, owned=held.owned or job.own)


# ---- cleanup ----------------------------------------------------------------------------------

def _list(g: Gcloud, kind: str, zone: str, project: str | None) -> list[Resource]:
  args = ["compute", "tpus", kind, "list", f"--zone={zone}",
          *([f"--project={project}"] if project else []), "--format=json"]
  r = g.call(args, echo=False)
  if g.dry_run:
    return []
  try:
    items = json.loads(r.out or "[]")
  except json.JSONDecodeError as e:
    raise LaunchError(f"{g.display(args)}: unreadable answer ({e})") from None
  found = []
  for d in items:
    res = _parse_resource(kind, d)
    if res.queued_resource:  # deleted through its queued resource
      res = dataclasses.replace(res, kind=QUEUED, name=res.queued_resource)
    found.append(res)
  return found


def cleanup(gcloud: Gcloud, zones: Iterable[str], project: str | None = None,
            sweep: str | None = None, owner: str | None = None, yes: bool = False,
            confirm: Callable[[str], str] = input, out: TextIO | None = None) -> int:
  """Lists resources labelled by this launcher (`dsbs-run`), filtered by sweep and owner (None:
  any), and deletes them after confirmation (`yes` skips it). Returns how many were deleted."""
  g, out = gcloud, out or sys.stdout
  chosen: dict[tuple[str, str, str], Resource] = {}
  for zone in zones:
    for kind in (QUEUED, NODE):
      for res in _list(g, kind, zone, project):
        lab = res.labels
        if ("dsbs-run" in lab and (sweep is None or lab.get("dsbs-sweep") == sweep)
            and (owner is None or lab.get("dsbs-owner") == owner)):
          chosen.setdefault((res.kind, zone, res.name), res)
  if g.dry_run:
    g.note("then, after confirmation, for each labelled resource: "
           "gcloud compute tpus queued-resources delete NAME --zone=Z --force --quiet, or "
           "gcloud compute tpus tpu-vm delete NAME --zone=Z --quiet")
    return 0
  if not chosen:
    print("no labelled TPU resources" + (f" of sweep {sweep}" if sweep else "")
          + (f" owned by {owner}" if owner else ""), file=out)
    return 0
  print(f"{'kind':<17} {'zone':<15} {'name':<40} {'state':<22} {'sweep':<20} owner", file=out)
  for (kind, zone, name), res in sorted(chosen.items()):
    print(f"{kind:<17} {zone:<15} {name:<40} {res.state or '?':<22} "
          f"{res.labels.get('dsbs-sweep', ''):<20} {res.labels.get('dsbs-owner', '')}", file=out)
  if not yes:
    try:
      answer = confirm(f"delete these {len(chosen)}? [y/N] ")
    except EOFError:
      answer = ""
    if answer.strip().lower() not in ("y", "yes"):
      print("nothing deleted", file=out)
      return 0
  deleted, failed = 0, []
  for (kind, zone, name) in sorted(chosen):
    args = ["compute", "tpus", kind, "delete", name, f"--zone={zone}",
            *([f"--project={project}"] if project else []),
            *(["--force"] if kind == QUEUED else []), "--quiet"]
    r = g.call(args, check=False, timeout_s=None)
    if r.rc and not _missing(r.err):
      failed.append(f"{name}: {_tail(r.err)}")
    else:
      deleted += 1
  print(f"deleted {deleted} of {len(chosen)}", file=out)
  if failed:
    raise LaunchError("some deletes failed: " + "; ".join(failed))
  return deleted


# ---- Command line -----------------------------------------------------------------------------

def _pairs(values: Sequence[str], flag: str) -> tuple[tuple[str, str], ...]:
  out = []
  for v in values:
    key, sep, value = v.partition("=")
    if not sep or not key:
      raise JobError(flag, f"{v!r}: expected KEY=VALUE")
    out.append((key, value))
  return tuple(out)


def _parser() -> argparse.ArgumentParser:
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--dry_run", action="store_true",
                      help="print every gcloud command (a shell script on stdout), run none")
  common.add_argument("--project", default=None, help="default: gcloud's configured project")

  job = argparse.ArgumentParser(add_help=False, parents=[common])
  a = job.add_argument
  a("--name", required=True, help="TPU (and queued resource) name; the dsbs-run label")
  a("--zone", required=True, help="e.g. us-central2-b (v4), us-west4-a (v5e)")
  a("--accelerator", default="", help="v4-32, v5litepod-64, v5p-128, v6e-64, ...")
  a("--runtime_version", default=None,
    help=f"TPU software version (default by generation: {RUNTIME_VERSIONS})")
  a("--provisioning", choices=PROVISIONING, default="on-demand")
  a("--spot", dest="provisioning", action="store_const", const="spot", help="= --provisioning=spot")
  a("--reserved", dest="provisioning", action="store_const", const="reserved",
    help="= --provisioning=reserved")
  a("--queued", action="store_true", help="a queued resource instead of a direct create")
  a("--model_dir", default="", help="gs:// run dir")
  a("--engine", choices=ENGINES, default="t5x")
  a("--gin_file", action="append", default=[], help="relative to the repo root (repeatable)")
  a("--gin", action="append", default=[], metavar="KEY=VALUE",
    help="gin binding, passed as --gin.KEY=VALUE (repeatable; --gin.KEY=VALUE works too); "
    "VALUE is a gin literal")
  a("--env", action="append", default=[], metavar="NAME=VALUE",
    help="non-secret environment variable on every worker (repeatable)")
  a("--data_dir", default=None, help="= --env=DSBS_DATA_DIR=... (the released benchmark data)")
  a("--label", action="append", default=[], metavar="KEY=VALUE", help="extra resource label")
  a("--sweep", default=None, help="the dsbs-sweep label")
  a("--owner", default=None, help="the dsbs-owner label (default: your user name)")
  a("--own", action="store_true",
    help="treat an existing resource of this name as this job's: reuse it and delete it")
  a("--keep", action="store_true", help="never delete the resource (debugging)")
  a("--allow_dirty", action="store_true",
    help="ship uncommitted changes to tracked files (never untracked files)")
  a("--jax_version", default=JAX_VERSION)
  a("--t5x_revision", default=T5X_REVISION, help="T5X commit; 'none': no T5X (engine dsbs)")
  a("--max_retries", type=int, default=3, help="babysit: recreations after preemption")
  a("--backoff_s", type=float, default=60.0)
  a("--max_backoff_s", type=float, default=1800.0)
  a("--poll_s", type=float, default=30.0, help="state polling interval")
  a("--create_timeout_s", type=float, default=6 * 3600.0)
  a("--setup_timeout_s", type=float, default=3600.0)
  a("--run_timeout_s", type=float, default=72 * 3600.0, help="per worker; 0: none")
  a("--log_sync_s", type=float, default=30.0, help="worker log copy interval")

  parser = argparse.ArgumentParser(prog="python -m launch.tpu",
                                   description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  helps = {"create": "create the TPU VM / queued resource, or reuse this job's",
           "setup": "ship the commit, install pinned JAX and T5X on every worker",
           "run": "train on every worker (writes the run record, streams logs)",
           "babysit": "create + setup + run, recreate on preemption, tear down",
           "teardown": "delete the resource if this launcher created it (or --own)"}
  for name, text in helps.items():
    step = sub.add_parser(name, parents=[job], help=text, description=text)
    if name in ("run", "babysit"):
      step.add_argument("argv", nargs="*", metavar="-- ARGV",
                        help="a command to run on every worker instead of the trainer, from the "
                        "shipped checkout (e.g. -- python3 -m t5x.eval --gin_file=...); "
                        "replaces --gin_file and --gin")
  clean = sub.add_parser("cleanup", parents=[common], help="delete labelled leftovers",
                         description="list TPU resources labelled by this launcher, delete "
                         "them after confirmation")
  clean.add_argument("--zone", action="append", required=True, help="repeatable")
  clean.add_argument("--sweep", default=None, help="only this sweep's resources")
  clean.add_argument("--owner", default=None, help="default: your user name")
  clean.add_argument("--all_owners", action="store_true", help="every owner's")
  clean.add_argument("--yes", action="store_true", help="delete without asking")
  return parser


def job_from_args(args: argparse.Namespace) -> TpuJob:
  env = _pairs(args.env, "env") + ((("DSBS_DATA_DIR", args.data_dir),) if args.data_dir else ())
  return TpuJob(
      name=args.name, zone=args.zone, accelerator=args.accelerator, model_dir=args.model_dir,
      project=args.project, runtime_version=args.runtime_version,
      provisioning=args.provisioning, queued=args.queued, engine=args.engine,
      gin_files=tuple(args.gin_file), overrides=_pairs(args.gin, "gin"),
      command=tuple(getattr(args, "argv", ())), env=env,
      labels=_pairs(args.label, "label"), sweep=args.sweep,
      owner=args.owner or _default_owner(), own=args.own, keep=args.keep,
      allow_dirty=args.allow_dirty, jax_version=args.jax_version,
      t5x_revision=args.t5x_revision, max_retries=args.max_retries, backoff_s=args.backoff_s,
      max_backoff_s=args.max_backoff_s, poll_s=args.poll_s,
      create_timeout_s=args.create_timeout_s, setup_timeout_s=args.setup_timeout_s,
      run_timeout_s=args.run_timeout_s, log_sync_s=args.log_sync_s)


def _sigterm(signum, frame):  # pylint: disable=unused-argument
  raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
  # The trainers' own spelling of a binding, --gin.KEY=VALUE, is read as --gin=KEY=VALUE (in
  # place: later bindings win in gin); a command after -- is left as it is.
  argv = list(sys.argv[1:] if argv is None else argv)
  cut = argv.index("--") if "--" in argv else len(argv)
  argv = [f"--gin={a[len('--gin.'):]}" if a.startswith("--gin.") and "=" in a else a
          for a in argv[:cut]] + argv[cut:]
  args = _parser().parse_args(argv)
  g: Gcloud = DryRun() if args.dry_run else Gcloud()
  signal.signal(signal.SIGTERM, _sigterm)  # a killed launcher tears down like Ctrl-C
  try:
    if args.command == "cleanup":
      owner = None if args.all_owners else (args.owner or _default_owner())
      cleanup(g, args.zone, project=args.project, sweep=args.sweep, owner=owner, yes=args.yes)
      return 0
    job = job_from_args(args)
    if args.command == "babysit":
      return babysit(job, g)
    if args.command == "create":
      create(job, g)
    elif args.command == "setup":
      setup(job, g)
    elif args.command == "run":
      return run(job, g)
    elif args.command == "teardown":
      teardown(job, g)
    return 0
  except JobError as e:
    print(f"launch.tpu {args.command}: {e}", file=sys.stderr)
    return EXIT_USAGE
  except Preempted as e:
    print(f"launch.tpu {args.command}: {e}", file=sys.stderr)
    return EXIT_PREEMPTED
  except LaunchError as e:
    print(f"launch.tpu {args.command}: {e}", file=sys.stderr)
    return EXIT_ERROR
  except KeyboardInterrupt:
    print(f"launch.tpu {args.command}: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


if __name__ == "__main__":
  sys.exit(main())

"""The steps on the workers: `setup` (ship the committed code, install the pinned stack), `run`
(the run record, then the same command on every worker) and `babysit` (create, setup and run
until the job ends, recreating the resource after a preemption)."""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import shlex
import subprocess
from typing import Any, Mapping, Sequence

from launch.tpu.gcloud import Gcloud, tail
from launch.tpu.job import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PREEMPTED, EXIT_USAGE, NODE, NODE_OK,
                            WORKER_SCRIPT, JobError, LaunchError, Preempted, TpuJob)
from launch.tpu.resources import Lease, create, describe, teardown_uninterrupted

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


def _ssh_args(job: TpuJob, command: str) -> list[str]:
  return ["compute", "tpus", NODE, "ssh", job.name, *job.location(), "--worker=all",
          f"--command={command}"]


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
    raise LaunchError(f"git -C {repo} {' '.join(args)} failed: {tail(proc.stderr)}")
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


# ---- babysit ----------------------------------------------------------------------------------

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

"""The sweep runner's `tpu` target: every cell is one Cloud TPU VM job of launch/tpu/.

    c.target = 'tpu'
    c.run_root = 'gs://my-bucket/dsbs/sweeps/anli-rate'   # run dirs: the workers write them
    c.tpu = {'zone': 'us-west4-a', 'accelerator': 'v5litepod-64', 'provisioning': 'spot',
             'queued': True, 'max_retries': 5, 'data_dir': 'gs://my-bucket/dsbs/data'}

For each cell, `run` makes one TPU (node or queued resource) named after the sweep and the cell
(`tpu_name`: stable, so a resumed cell finds what an interrupted one left), with the model dir
= the cell's run dir and the labels `dsbs-run`, `dsbs-sweep` (the sweep's name) and
`dsbs-owner`. The trainer phase runs through `tpu.babysit` on every worker (a preemption
recreates the TPU and resumes from the checkpoint in the same run dir); each later phase (the
T5X test) runs on the same TPU, its argv built when it starts; then the TPU is deleted,
whatever happened. The phases name `python3`, the interpreter `setup` installs into. The whole
sweep ships one commit, taken when the target is checked.

`tpu` options (`OPTIONS`; any other key is an error): `zone` and `accelerator` are required;
`accelerator` and `runtime_version` may map each student to its own value. `data_dir` is the
workers' DSBS_DATA_DIR. The rest are launch.tpu's flags of the same names. For engine dsbs
cells T5X is not installed unless `t5x_revision` is given.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import threading
import time
from typing import Any, Callable, Mapping, TextIO

from dsbs import fileio

from launch import definition
from launch import engines
from launch import targets
from launch import tpu

# Option -> (what it takes, checked here; TpuJob checks the values).
OPTIONS = {
    "zone": "str", "project": "str", "accelerator": "per_student", "runtime_version": "per_student",
    "provisioning": "str", "queued": "bool", "data_dir": "str", "env": "str_map",
    "labels": "str_map", "owner": "str", "allow_dirty": "bool", "jax_version": "str",
    "t5x_revision": "str", "max_retries": "int", "backoff_s": "number", "max_backoff_s": "number",
    "poll_s": "number", "create_timeout_s": "number", "setup_timeout_s": "number",
    "run_timeout_s": "number", "log_sync_s": "number",
}
REQUIRED = ("zone", "accelerator")
_KINDS = {"str": "a string", "bool": "True or False", "int": "an integer", "number": "a number",
          "per_student": "a string, or a mapping student -> string",
          "str_map": "a mapping of strings to strings"}
# TpuJob fields (launch.tpu flags) whose definition key is not `tpu.<field>`.
_FIELD_KEY = {"model_dir": "run_root", "label": "tpu.labels", "env": "tpu.env"}
_WORKER_PYTHON = "python3"  # what launch/worker.sh installs into on every worker


def tpu_name(sweep: str, cell: str, run_dir: str) -> str:
  """The cell's TPU name: sweep and cell, shortened to fit 63 characters, and a hash of the
  three that keeps it unique (two cells, or one cell in two run roots, never share a TPU)."""
  digest = hashlib.sha256(f"{sweep}\n{cell}\n{run_dir}".encode()).hexdigest()[:8]
  stem = re.sub(r"[^a-z0-9]+", "-", f"{sweep}-{cell}".lower()).strip("-")
  return f"{stem[:63 - 9].rstrip('-')}-{digest}"


def _kind_ok(kind: str, value: Any) -> bool:
  if kind == "str":
    return isinstance(value, str)
  if kind == "bool":
    return isinstance(value, bool)
  if kind == "int":
    return isinstance(value, int) and not isinstance(value, bool)
  if kind == "number":
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if kind == "per_student":
    return isinstance(value, str) or (isinstance(value, Mapping) and bool(value) and all(
        isinstance(v, str) for v in value.values()))
  return isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values())


class TpuTarget(targets.Target):
  """Runs each cell of a sweep as one TPU VM job; see the module docstring."""
  name = "tpu"
  python = _WORKER_PYTHON

  def __init__(self, sweep: definition.Sweep, repo: str = definition.REPO,
               binary: str = "gcloud"):
    self.sweep, self.repo, self.binary = sweep, repo, binary
    options = sweep.get("tpu")
    if not isinstance(options, Mapping):
      raise definition.SweepError(sweep.path, "tpu", "the tpu target needs tpu = {'zone': ..., "
                                  "'accelerator': ...} (options: " + ", ".join(OPTIONS) + ")")
    for key, value in options.items():
      if key not in OPTIONS:
        raise definition.SweepError(sweep.path, f"tpu.{key}",
                                    f"unknown option (options: {', '.join(OPTIONS)})")
      if not _kind_ok(OPTIONS[key], value):
        raise definition.SweepError(sweep.path, f"tpu.{key}",
                                    f"must be {_KINDS[OPTIONS[key]]}, got {value!r}")
    for key in REQUIRED:
      if key not in options:
        raise definition.SweepError(sweep.path, f"tpu.{key}", "required")
    self.options = dict(options)
    self.code: tpu.Code | None = None  # what every cell ships; set by check()
    self._lock = threading.Lock()
    self._gclouds: dict[str, tpu.Gcloud] = {}

  # ---- The jobs ---------------------------------------------------------------------------------

  def _per_student(self, key: str, cell: definition.Cell) -> str | None:
    value = self.options.get(key)
    if not isinstance(value, Mapping):
      return value
    student = cell.overrides.get("student")
    if student not in value:
      raise definition.SweepError(
          self.sweep.path, f"tpu.{key}", f"no entry for cell {cell.name}'s student "
          + (f"{student!r}" if student else "(the cell sets none: add a student axis, or give "
             "one value for every cell)") + f" (entries: {', '.join(sorted(value))})")
    return value[student]

  def job_for(self, cell: definition.Cell, run_dir: str) -> tpu.TpuJob:
    """The cell's TPU job, without its command (each phase sets one)."""
    o = self.options
    env = dict(o.get("env", {}))
    if o.get("data_dir"):
      env["DSBS_DATA_DIR"] = o["data_dir"]
    fields: dict[str, Any] = {
        key: o[key] for key in ("project", "provisioning", "queued", "owner", "allow_dirty",
                                "jax_version", "t5x_revision", "max_retries", "backoff_s",
                                "max_backoff_s", "poll_s", "create_timeout_s",
                                "setup_timeout_s", "run_timeout_s", "log_sync_s") if key in o}
    if cell.engine == "dsbs":
      fields.setdefault("t5x_revision", "none")
    name = tpu_name(self.sweep.name, cell.name, run_dir)
    try:
      return tpu.TpuJob(
          name=name, zone=o["zone"], accelerator=self._per_student("accelerator", cell),
          runtime_version=self._per_student("runtime_version", cell), model_dir=run_dir,
          engine=cell.engine, env=tuple(sorted(env.items())),
          labels=tuple(sorted(o.get("labels", {}).items())), sweep=self.sweep.name,
          meta=(("sweep", self.sweep.name), ("cell", cell.name),
                ("overrides", dict(cell.overrides))),
          repo=self.repo, **fields)
    except tpu.JobError as e:
      key = _FIELD_KEY.get(e.field, f"tpu.{e.field}")
      raise definition.SweepError(self.sweep.path, key, f"cell {cell.name}: {e.message}") \
          from None

  def _run_root(self) -> str:
    return str(self.sweep.get("run_root") or "").rstrip("/")

  # ---- Target -----------------------------------------------------------------------------------

  def check(self, sweep: definition.Sweep) -> None:
    path = sweep.path
    root = self._run_root()
    if not root.startswith("gs://"):
      where = (f"run_root {root!r} is local" if root else
               "without run_root the run dirs would go under the (local) sweep dir")
      raise definition.SweepError(path, "run_root", f"the tpu target needs run_root = "
                                  f"'gs://BUCKET/...': the TPU workers write the run dirs "
                                  f"(checkpoints, logs, metrics); {where}")
    if fileio.is_remote(sweep.get("sweep_dir") or ""):
      raise definition.SweepError(path, "sweep_dir", "the sweep dir holds the state and logs on "
                                  "this machine: a local directory")
    if sweep.get("python") not in (None, _WORKER_PYTHON):
      raise definition.SweepError(path, "python", f"the tpu target runs {_WORKER_PYTHON} on its "
                                  "workers (what the launcher installs into): leave it unset")
    if len(sweep.name) > 63:
      raise definition.SweepError(path, "name", "at most 63 characters for the tpu target (it "
                                  "labels the TPUs dsbs-sweep=<name>)")
    jobs = [(cell, self.job_for(cell, f"{root}/{cell.name}")) for cell in sweep.cells]
    try:
      self.code = tpu.code_state(jobs[0][1])
    except tpu.JobError as e:
      raise definition.SweepError(path, f"tpu.{e.field}", e.message) from None
    except tpu.LaunchError as e:
      raise definition.SweepError(path, "target", f"tpu: {e}") from None
    for cell, job in jobs:
      for phase in engines.phases(sweep, cell, job.model_dir, _WORKER_PYTHON, self.repo):
        for arg in phase.preview:
          f = arg[len("--gin_file="):] if arg.startswith("--gin_file=") else None
          if f and not f.startswith("gs://") and f not in self.code.files:
            raise definition.SweepError(path, "gin_file", f"cell {cell.name}: {f} is not a "
                                        f"committed file of {self.repo}: the TPU workers get "
                                        "the committed files only")

  def describe(self, job: targets.Job | None = None) -> dict[str, Any]:
    o = self.options
    out = {"target": self.name, "zone": o["zone"], "project": o.get("project"),
           "accelerator": o["accelerator"], "provisioning": o.get("provisioning", "on-demand"),
           "queued": bool(o.get("queued", False))}
    if self.code is not None:
      out.update(commit=self.code.commit, dirty=self.code.dirty, code_id=self.code.id)
    if job is not None:
      tj = self.job_for(job.cell, job.run_dir)
      out.update(tpu=tj.name, accelerator=tj.accelerator, runtime_version=tj.resolved_runtime(),
                 owner=tj.owner)
    return out

  def run(self, job: targets.Job) -> int:
    if self.code is None:
      self.check(self.sweep)
    os.makedirs(os.path.dirname(os.path.abspath(job.log_path)), exist_ok=True)
    with open(job.log_path, "a", encoding="utf-8") as log:
      g = tpu.Gcloud(binary=self.binary, log=log, output=log, new_session=True,
                     preexec_fn=targets.die_with_runner())
      with self._lock:
        if job.cancelled.is_set():
          return tpu.EXIT_INTERRUPTED
        self._gclouds[job.cell.name] = g
      try:
        return self._phases(job, g, lambda phase: phase.argv(), log)
      finally:
        with self._lock:
          self._gclouds.pop(job.cell.name, None)

  def terminate(self, job: targets.Job) -> None:
    job.cancelled.set()
    with self._lock:
      g = self._gclouds.get(job.cell.name)
    if g is not None:
      g.interrupt()  # babysit's Ctrl-C path: the remote job stops, then the TPU is deleted

  def dry_run(self, job: targets.Job, out: TextIO) -> None:
    with open(os.devnull, "w", encoding="utf-8") as quiet:  # the progress messages
      g = tpu.DryRun(out=out, log=quiet)
      self._phases(job, g, lambda phase: phase.preview, None)
    g.note(f"{len(g.calls)} gcloud calls, plus one describe every "
           f"{self.job_for(job.cell, job.run_dir).poll_s:g} s while the TPU is awaited and "
           "while each phase runs")

  def _phases(self, job: targets.Job, g: tpu.Gcloud,
              argv_of: Callable[[engines.Phase], list[str]], log: TextIO | None) -> int:
    """The phases on one TPU: babysit the first, run the others on what it left up, then tear
    down (what was created, or a leftover of this cell) whatever happens."""
    base = self.job_for(job.cell, job.run_dir)
    lease = tpu.Lease()
    rc = 0
    try:
      for i, phase in enumerate(job.phases):
        if job.cancelled.is_set():
          return tpu.EXIT_INTERRUPTED
        argv = argv_of(phase)
        if argv[:1] != [_WORKER_PYTHON]:
          raise engines.EngineError(f"phase {phase.name} runs {argv[:1]}, not {_WORKER_PYTHON}: "
                                    f"build the phases with python={_WORKER_PYTHON!r}")
        label = re.sub(r"[^a-z0-9]+", "-", phase.name.lower())
        tj = dataclasses.replace(base, command=tuple(argv),
                                 record=f"launch_record.{label}.json" if i else tpu.RECORD,
                                 meta=base.meta + (("phase", phase.name),))
        if log is not None:
          log.write(targets.phase_header(job, phase.name, argv))
          log.flush()
        elif i:
          g.note(f"phase {phase.name}, on the same TPU (its argv is built when it starts)")
        started = time.time()
        rc = tpu.babysit(tj, g, lease, self.code) if i == 0 else self._later(tj, g, lease, label)
        job.phase_results.append({"name": phase.name, "argv": argv, "exit_code": rc,
                                  "started": started, "ended": time.time(), "tpu": tj.name,
                                  "preemptions": list(lease.preemptions)})
        if rc != 0:
          return rc
        if phase.finish and not g.dry_run:
          phase.finish()
      return rc
    finally:
      tpu.teardown_uninterrupted(base, g, owned=lease.owned or None)

  def _later(self, tj: tpu.TpuJob, g: tpu.Gcloud, lease: tpu.Lease, label: str) -> int:
    """A later phase: a plain run on the TPU the trainer left up; when that TPU is preempted
    meanwhile (or ssh loses it), babysit recreates it and runs the phase again."""
    attempt = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{label}"
    try:
      rc = tpu.run(tj, g, attempt=attempt, preemptions=lease.preemptions, code=self.code)
    except tpu.Preempted as e:
      g.say(tj.name, f"{e}: recreating it for this phase")
      return tpu.babysit(tj, g, lease, self.code)
    except KeyboardInterrupt:
      g.say(tj.name, "interrupted")
      return tpu.EXIT_INTERRUPTED
    except tpu.LaunchError as e:
      g.say(tj.name, str(e))
      return tpu.EXIT_ERROR
    if rc == 255 and not g.dry_run:  # ssh lost the connection: babysit finds out why
      g.say(tj.name, "ssh lost the connection (rc 255): babysitting this phase")
      return tpu.babysit(tj, g, lease, self.code)
    return rc


targets.register_target("tpu", TpuTarget)

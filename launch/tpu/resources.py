"""The job's TPU resource (a node, or a queued resource and its node): its state (`describe`),
`create`, `teardown` and `cleanup` of labelled leftovers, each deleting only what is ours."""
from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
from typing import Any, Callable, Iterable, Mapping, TextIO

from launch.tpu.gcloud import Gcloud, tail
from launch.tpu.job import (NODE, NODE_DEAD, NODE_OK, NODE_PENDING, QUEUED, QUEUED_DEAD,
                            QUEUED_OK, QUEUED_PENDING, LaunchError, TpuJob)


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
    raise LaunchError(f"{gcloud.display(args)} failed (rc {r.rc}): {tail(r.err)}")
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
        raise LaunchError(f"creating {job.name} failed (rc {r.rc}): {tail(r.err)}", created=True)
      created = not r.rc
      res = describe(job, g)
      if res is None and exists:  # e.g. a node of that name without a queued resource
        raise LaunchError(f"creating {job.name} failed (rc {r.rc}): {tail(r.err)}")
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


# ---- teardown ---------------------------------------------------------------------------------

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
    raise LaunchError(f"deleting {job.name} failed (rc {r.rc}): {tail(r.err)}; delete it by "
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
      failed.append(f"{name}: {tail(r.err)}")
    else:
      deleted += 1
  print(f"deleted {deleted} of {len(chosen)}", file=out)
  if failed:
    raise LaunchError("some deletes failed: " + "; ".join(failed))
  return deleted

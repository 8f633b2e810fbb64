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

Modules: job.py (`TpuJob`, the constants, the errors), gcloud.py (`Gcloud`, `DryRun`),
resources.py (the resource's state, create, teardown, cleanup), steps.py (setup, run, babysit),
cli.py (the command line); this file re-exports their public names.
"""
from launch.tpu.cli import job_from_args, main
from launch.tpu.gcloud import DryRun, Gcloud, Result
from launch.tpu.job import (ENGINES, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PREEMPTED, EXIT_USAGE,
                            JAX_VERSION, NODE, NODE_DEAD, NODE_OK, NODE_PENDING, PROVISIONING,
                            QUEUED, QUEUED_DEAD, QUEUED_OK, QUEUED_PENDING, RECORD, REPO,
                            RUNTIME_VERSIONS, T5X_REVISION, WORKER_SCRIPT, JobError, LaunchError,
                            Preempted, TpuJob)
from launch.tpu.resources import (Lease, Resource, cleanup, create, describe, teardown,
                                  teardown_uninterrupted)
from launch.tpu.steps import (Code, babysit, code_state, run, run_command, run_record, setup,
                              trainer_argv)

__all__ = ["REPO", "RUNTIME_VERSIONS", "JAX_VERSION", "T5X_REVISION", "PROVISIONING", "ENGINES",
           "NODE", "QUEUED", "NODE_OK", "NODE_PENDING", "NODE_DEAD", "QUEUED_OK",
           "QUEUED_PENDING", "QUEUED_DEAD", "EXIT_ERROR", "EXIT_USAGE", "EXIT_PREEMPTED",
           "EXIT_INTERRUPTED", "WORKER_SCRIPT", "RECORD", "JobError", "LaunchError", "Preempted",
           "TpuJob", "Result", "Gcloud", "DryRun", "Resource", "describe", "Lease", "create",
           "Code", "code_state", "setup", "trainer_argv", "run_command", "run_record", "run",
           "teardown", "teardown_uninterrupted", "babysit", "cleanup", "job_from_args", "main"]

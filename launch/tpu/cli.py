"""The command line, `python -m launch.tpu STEP`: one subcommand per step, each taking
`--dry_run`; exit statuses as `babysit`'s."""
from __future__ import annotations

import argparse
import signal
import sys
from typing import Sequence

from launch.tpu.gcloud import DryRun, Gcloud
from launch.tpu.job import (ENGINES, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PREEMPTED, EXIT_USAGE,
                            JAX_VERSION, PROVISIONING, RUNTIME_VERSIONS, T5X_REVISION, JobError,
                            LaunchError, Preempted, TpuJob, default_owner)
from launch.tpu.resources import cleanup, create, teardown
from launch.tpu.steps import babysit, run, setup


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

  parser = argparse.ArgumentParser(
      prog="python -m launch.tpu", description="Cloud TPU VM jobs: create, set up, run, babysit, "
      "tear down and clean up, each step on its own.")
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
      owner=args.owner or default_owner(), own=args.own, keep=args.keep,
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
      owner = None if args.all_owners else (args.owner or default_owner())
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

"""Expands a sweep definition into one training job per cell, and runs or prints them.

    python launch/sweep.py launch/sweeps/anli_rate_x_pct.json --dry_run
    python launch/sweep.py my_sweep.yaml --max_parallel=4 --log_dir=/tmp/sweep_logs

A definition (JSON, YAML, or a .py file defining `SWEEP = {...}`) names the grid axes and where
jobs run:

    {
      "name": "anli-rate-pct",                    # lowercase, digits, '-'
      "model_dir_root": "gs://BUCKET/dsbs/sweeps", # each cell writes <root>/<name>/<cell>
      "zone": "us-central2-b",
      "accelerator": {"220m": "v4-8", "770m": "v4-32", "3b": "v4-32", "11b": "v4-64"},
      "version": "tpu-ubuntu2204-base",            # optional (tpu_vm.sh default)
      "data_dir": "gs://BUCKET/dsbs/data",          # optional: released data for the workers
      "engine": "t5x",                             # optional: t5x (default) or dsbs
      "target": "tpu_vm",                          # optional: tpu_vm (default) or local
      "spot": false,                               # optional
      "gin": {"BATCH_SIZE": 64},                   # optional: bindings for every cell
      "axes": {                                    # every list is an axis; scalars are fixed
        "dataset": ["anli"], "size": ["770m"], "method": "dsbs",
        "label_rate": [0.25, 0.5, 0.75], "data_pct": [12.5, 25, 50, 100], "seed": [0, 1, 2]
      }
    }

Axes: `dataset` (anli, cqa, esnli, svamp), `size` (220m, 770m, 3b, 11b), `method` (see
`dsbs.tasks` names), `data_pct` (percent of the train split, 100 = all), `label_rate` (share of
label-task examples in the two-task mixture), `alpha` (the paper's loss weight a, LOSS_ALPHA),
`seed` (RANDOM_SEED). Each cell trains `gin_configs/<dataset>_<size>.gin` with
`MIXTURE_OR_TASK_NAME` built by `dsbs.tasks.mixture_name(...)`. Cells that differ only in an
axis their method ignores (label_rate for single-task methods) collapse into one; the count is
printed. Each job's cell is written to `<model_dir>/dsbs_job.json` for `launch/collect.py`.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from typing import Any, Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("anli", "cqa", "esnli", "svamp")
SIZES = ("220m", "770m", "3b", "11b")
AXES = ("dataset", "size", "method", "data_pct", "label_rate", "alpha", "seed")
TOP_KEYS = ("name", "model_dir_root", "zone", "accelerator", "version", "data_dir", "engine",
            "target", "spot", "project", "gin", "axes", "t5x_ref")
TARGETS = ("tpu_vm", "local")
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class SweepError(ValueError):
  """A sweep definition that cannot be expanded; the message names the file and the field."""

  def __init__(self, path: str, field: str, message: str):
    super().__init__(f"{path}: field {field!r}: {message}")
    self.path, self.field = path, field


@dataclasses.dataclass(frozen=True)
class Job:
  """One cell of the sweep, ready to render."""
  name: str  # unique within the sweep; also the TPU VM name suffix and run-dir leaf
  cell: dict[str, Any]
  gin_file: str
  bindings: tuple[str, ...]  # KEY=VALUE, passed as --gin.KEY=VALUE
  model_dir: str
  accelerator: str | None


def load_definition(path: str) -> dict[str, Any]:
  """Reads a JSON, YAML or Python (`SWEEP = {...}`) sweep definition."""
  if not os.path.exists(path):
    raise SweepError(path, "<file>", "no such file")
  if path.endswith(".py"):
    sweep = runpy.run_path(path).get("SWEEP")
    if not isinstance(sweep, dict):
      raise SweepError(path, "SWEEP", "a .py definition must assign a dict to SWEEP")
    return sweep
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if path.endswith((".yaml", ".yml")):
    import yaml  # pylint: disable=g-import-not-at-top  (optional: .yaml sweep files only)
    try:
      sweep = yaml.safe_load(text)
    except yaml.YAMLError as e:
      raise SweepError(path, "<file>", f"malformed YAML: {e}") from None
  else:
    try:
      sweep = json.loads(text)
    except json.JSONDecodeError as e:
      raise SweepError(path, "<file>", f"malformed JSON at line {e.lineno}: {e.msg}") from None
  if not isinstance(sweep, dict):
    raise SweepError(path, "<file>", "the definition must be an object/mapping")
  return sweep


# gin file prefix -> dataset name in the task registry.
TASK_DATASET = {"anli": "anli1", "cqa": "cqa", "esnli": "esnli", "svamp": "svamp"}


def _default_mixture_name(dataset: str, method: str, data_pct: float = 100,
                          label_rate: float | None = None) -> str:
  """The registered task/mixture name of a cell, from dsbs.tasks' own naming functions."""
  # dsbs.tasks imports SeqIO (~6 s): only sweeps whose cells need a default name pay for it
  from dsbs.tasks import registry  # pylint: disable=g-import-not-at-top

  ds = TASK_DATASET[dataset]
  if method in registry.MIXTURES:
    rate = registry.DEFAULT_RATE if label_rate is None else label_rate
    return registry.mixture_name(ds, method, data_pct, rate)
  if method not in registry.TASK_VARIANTS:
    raise ValueError(f"unknown method {method!r}; expected one of "
                     f"{tuple(registry.MIXTURES) + tuple(registry.TASK_VARIANTS)}")
  return registry.task_name(ds, method, data_pct)  # label_rate: mixtures only, ignored


def _fmt(value: Any) -> str:
  """Compact, name-safe rendering of an axis value (0.25 -> 0p25)."""
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  return str(value).replace(".", "p").replace("_", "-").lower()


def _gin_literal(value: Any) -> str:
  if isinstance(value, str):
    return repr(value)
  if value is None:
    return "None"
  return json.dumps(value) if isinstance(value, (list, dict)) else repr(value)


def _default_uses_label_rate(method: str) -> bool:
  from dsbs.tasks import registry  # pylint: disable=g-import-not-at-top  (as above)
  return method in registry.MIXTURES


def expand(sweep: dict[str, Any], path: str = "<sweep>",
           mixture_name: Callable[..., str] = _default_mixture_name,
           uses_label_rate: Callable[[str], bool] = _default_uses_label_rate,
           repo: str = REPO) -> tuple[list[Job], int]:
  """Returns (jobs, number of collapsed duplicate cells) for a validated definition."""
  unknown = sorted(set(sweep) - set(TOP_KEYS))
  if unknown:
    raise SweepError(path, unknown[0], f"unknown key (known: {list(TOP_KEYS)})")
  name = sweep.get("name")
  if not isinstance(name, str) or not _NAME.match(name):
    raise SweepError(path, "name", f"need lowercase letters, digits and '-', got {name!r}")
  root = sweep.get("model_dir_root")
  target = sweep.get("target", "tpu_vm")
  if target not in TARGETS:
    raise SweepError(path, "target", f"{target!r} not in {TARGETS}")
  if not isinstance(root, str) or not root:
    raise SweepError(path, "model_dir_root", "required (a gs:// dir for tpu_vm jobs)")
  if target == "tpu_vm" and not root.startswith("gs://"):
    raise SweepError(path, "model_dir_root", f"tpu_vm jobs write to gs://, got {root!r}")
  axes = sweep.get("axes")
  if not isinstance(axes, dict) or not axes:
    raise SweepError(path, "axes", "required: a mapping of axis name -> value or list")
  for key in axes:
    if key not in AXES:
      raise SweepError(path, f"axes.{key}", f"unknown axis (known: {list(AXES)})")
  for key in ("dataset", "size", "method"):
    if key not in axes:
      raise SweepError(path, f"axes.{key}", "required axis")
  lists = {k: (v if isinstance(v, list) else [v]) for k, v in axes.items()}
  for k, values in lists.items():
    if not values:
      raise SweepError(path, f"axes.{k}", "empty list")
  for d in lists["dataset"]:
    if d not in DATASETS:
      raise SweepError(path, "axes.dataset", f"{d!r} not in {DATASETS}")
  for s in lists["size"]:
    if s not in SIZES:
      raise SweepError(path, "axes.size", f"{s!r} not in {SIZES}")
  accel = sweep.get("accelerator")
  if target == "tpu_vm":
    for s in lists["size"]:
      a = accel.get(s) if isinstance(accel, dict) else accel
      if not isinstance(a, str):
        raise SweepError(path, "accelerator", f"no accelerator for size {s!r}")
  extra = sweep.get("gin", {})
  if not isinstance(extra, dict):
    raise SweepError(path, "gin", "must map macro/binding -> value")

  keys = list(lists)
  jobs: dict[str, Job] = {}
  total = 0
  for values in itertools.product(*(lists[k] for k in keys)):
    total += 1
    cell = dict(zip(keys, values))
    if "label_rate" in cell and not uses_label_rate(cell["method"]):
      cell["label_rate"] = None  # single-task methods have no mixture rate
    name_args = {k: cell[k] for k in ("dataset", "method", "data_pct", "label_rate")
                 if cell.get(k) is not None}
    try:
      task = mixture_name(**name_args)
    except (ValueError, KeyError, TypeError) as e:
      raise SweepError(path, "axes", f"cell {cell}: {e}") from None
    seed = cell.get("seed")
    alpha = cell.get("alpha")
    job_name = "-".join([task.replace("_", "-").replace(".", "p"), cell["size"]]
                        + ([f"a{_fmt(alpha)}"] if alpha is not None else [])
                        + ([f"s{_fmt(seed)}"] if seed is not None else []))
    job_name = job_name.lower()
    if job_name in jobs:
      continue  # an axis this method ignores: same task name, same job
    gin_file = f"gin_configs/{cell['dataset']}_{cell['size']}.gin"
    if not os.path.exists(os.path.join(repo, gin_file)):
      raise SweepError(path, "axes", f"cell {cell}: {gin_file} does not exist")
    bindings = [f"MIXTURE_OR_TASK_NAME={_gin_literal(task)}"]
    if seed is not None:
      bindings.append(f"RANDOM_SEED={int(seed)}")
    if alpha is not None:
      bindings.append(f"LOSS_ALPHA={float(alpha)!r}")
    bindings += [f"{k}={_gin_literal(v)}" for k, v in extra.items()]
    jobs[job_name] = Job(
        name=job_name,
        cell={**cell, "task": task, "sweep": name},
        gin_file=gin_file,
        bindings=tuple(bindings),
        model_dir=f"{root.rstrip('/')}/{name}/{job_name}",
        accelerator=(accel.get(cell["size"]) if isinstance(accel, dict) else accel),
    )
  return list(jobs.values()), total - len(jobs)


def render(job: Job, sweep: dict[str, Any]) -> list[str]:
  """The argv that runs `job`: launch/tpu_vm.sh for tpu_vm, the trainer itself for local."""
  engine = sweep.get("engine", "t5x")
  if sweep.get("target", "tpu_vm") == "local":
    argv = [sys.executable, "-m", f"{engine}.train", f"--gin_file={job.gin_file}"]
    argv.append(f"--gin.MODEL_DIR={job.model_dir!r}" if engine == "t5x"
                else f"--model_dir={job.model_dir}")
    return argv + [f"--gin.{b}" for b in job.bindings]
  vm = f"{sweep['name']}-{job.name}"
  if len(vm) > 63:  # GCE name limit: keep it unique with a stable hash of the full name
    vm = vm[:54].rstrip("-") + "-" + hashlib.sha1(vm.encode()).hexdigest()[:8]
  argv = [os.path.join("launch", "tpu_vm.sh"), f"--name={vm}", f"--zone={sweep['zone']}",
          f"--accelerator={job.accelerator}", f"--model_dir={job.model_dir}",
          f"--gin_file={job.gin_file}", f"--engine={engine}",
          f"--job_json={json.dumps(job.cell, sort_keys=True)}"]
  for key in ("version", "project", "data_dir", "t5x_ref"):
    if sweep.get(key):
      argv.append(f"--{key}={sweep[key]}")
  if sweep.get("spot"):
    argv.append("--spot")
  return argv + [f"--gin={b}" for b in job.bindings]


def _run(job: Job, argv: list[str], log_dir: str) -> tuple[str, int]:
  os.makedirs(log_dir, exist_ok=True)
  with open(os.path.join(log_dir, f"{job.name}.log"), "w", encoding="utf-8") as log:
    rc = subprocess.run(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
  return job.name, rc


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("definition", help="sweep definition (.json, .yaml, .py)")
  parser.add_argument("--dry_run", action="store_true", help="print one command per job, run none")
  parser.add_argument("--only", default=None, help="regex: run only jobs whose name matches")
  parser.add_argument("--max_parallel", type=int, default=1, help="jobs running at once")
  parser.add_argument("--log_dir", default="sweep_logs", help="one log file per job")
  args = parser.parse_args(argv)

  try:
    sweep = load_definition(args.definition)
    jobs, collapsed = expand(sweep, args.definition)
  except SweepError as e:
    print(f"sweep.py: {e}", file=sys.stderr)
    return 2
  if args.only:
    jobs = [j for j in jobs if re.search(args.only, j.name)]
  print(f"# {sweep['name']}: {len(jobs)} jobs"
        + (f" ({collapsed} cells collapsed: axis ignored by their method)" if collapsed else ""),
        file=sys.stderr)
  if args.dry_run:
    for job in jobs:
      print(shlex.join(render(job, sweep)))
    return 0
  failed = []
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.max_parallel)) as pool:
    futures = [pool.submit(_run, j, render(j, sweep), args.log_dir) for j in jobs]
    for fut in concurrent.futures.as_completed(futures):
      name, rc = fut.result()
      print(f"{'ok  ' if rc == 0 else 'FAIL'} {name} (rc={rc}, log {args.log_dir}/{name}.log)")
      if rc:
        failed.append(name)
  print(f"# {len(jobs) - len(failed)}/{len(jobs)} jobs succeeded", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())

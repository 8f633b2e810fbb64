"""The commands that train and test one sweep cell, per engine.

dsbs (the built-in runner): one command,
    python -m dsbs.train --gin_file=<experiment> --gin.<MACRO>=<value>... --model_dir=<run dir>
        --then_evaluate
which trains (resuming from the run dir's checkpoint), then decodes the test split with the
best-on-validation checkpoint into `<run dir>/eval/test_greedy/metrics.json` and
`predictions.jsonl`.

t5x: `python -m t5x.train` with the same macros and MODEL_DIR; then the runner picks the step
with the best validation accuracy from `<run dir>/inference_eval/*-metrics.jsonl` (among the
checkpoints that exist), runs `python -m t5x.eval` with `gin_configs/eval.gin` on the test split
into `<run dir>/test_eval`, and writes its scores to `<run dir>/eval/test_greedy/metrics.json`,
the file the report reads for both engines (`dsbs.report.TEST_METRICS`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import re
from typing import Any, Callable

from dsbs import fileio
from dsbs import report as report_lib
from dsbs.data import record

from launch import definition

T5X_TEST_DIR = "test_eval"  # t5x.eval's EVAL_OUTPUT_DIR inside the run dir
T5X_EVAL_GIN = "gin_configs/eval.gin"
T5X_MODEL_GIN = "gin_configs/model_{size}.gin"
_T5X_CHECKPOINT = re.compile(r"^checkpoint_(\d+)$")


class EngineError(RuntimeError):
  """A phase cannot be prepared (e.g. no checkpoint to test); the message says why."""


@dataclasses.dataclass
class Phase:
  """One command of a cell. `build` makes the argv when the phase starts (the T5X test picks its
  checkpoint then); `preview` is what a dry run prints; `finish` runs in the runner after the
  command exits 0."""
  name: str
  preview: list[str]
  build: Callable[[], list[str]] | None = None
  finish: Callable[[], None] | None = None

  def argv(self) -> list[str]:
    return self.build() if self.build else list(self.preview)


def _join(run_dir: str, *parts: str) -> str:
  return (posixpath.join if fileio.is_remote(run_dir) else os.path.join)(run_dir, *parts)


def _gin_file_args(sweep: definition.Sweep, cell: definition.Cell, repo: str) -> list[str]:
  out = []
  for f in sweep.gin_files(cell):
    local = f if fileio.is_remote(f) or os.path.exists(os.path.join(repo, f)) else os.path.abspath(f)
    out.append(f"--gin_file={local}")
  return out


def phases(sweep: definition.Sweep, cell: definition.Cell, run_dir: str, python: str,
           repo: str = definition.REPO) -> list[Phase]:
  """The commands of `cell`, run from the repository root, in order."""
  gin_files = _gin_file_args(sweep, cell, repo)
  if cell.engine == "dsbs":
    argv = [python, "-m", "dsbs.train", *gin_files, *[f"--gin.{b}" for b in cell.bindings],
            f"--model_dir={run_dir}"]
    return [Phase("train" + ("+test" if sweep.test_eval else ""),
                  argv + (["--then_evaluate"] if sweep.test_eval else []))]
  train = Phase("train", [python, "-m", "t5x.train", *gin_files,
                          f"--gin.MODEL_DIR={run_dir!r}", *[f"--gin.{b}" for b in cell.bindings]])
  if not sweep.test_eval:
    return [train]
  size = definition.T5X_SIZE.get(cell.overrides.get("student", ""))
  model_gin = [f"--gin_file={T5X_MODEL_GIN.format(size=size)}"] if size else []
  test_dir = _join(run_dir, T5X_TEST_DIR)

  def test_argv(checkpoint: str) -> list[str]:
    return [python, "-m", "t5x.eval", *model_gin, f"--gin_file={T5X_EVAL_GIN}",
            *[f"--gin.{b}" for b in cell.bindings], f"--gin.CHECKPOINT_PATH={checkpoint!r}",
            f"--gin.EVAL_OUTPUT_DIR={test_dir!r}"]

  chosen: dict[str, Any] = {}

  def build() -> list[str]:
    chosen.update(best_t5x_checkpoint(run_dir))
    return test_argv(chosen["checkpoint"])

  def finish() -> None:
    write_t5x_test_metrics(run_dir, chosen)

  return [train, Phase("test", test_argv("<best checkpoint on validation>"), build, finish)]


def _metrics_rows(directory: str) -> dict[str, dict[int, dict[str, Any]]]:
  """SeqIO's `inference_eval/<task>-metrics.jsonl` files in `directory`: task -> step -> row."""
  out: dict[str, dict[int, dict[str, Any]]] = {}
  ev = _join(directory, "inference_eval")
  if not fileio.exists(ev):
    return out
  for fname in fileio.listdir(ev):
    if not fname.endswith("-metrics.jsonl"):
      continue
    task = fname[:-len("-metrics.jsonl")]
    for _, row in record.iter_json_objects(_join(ev, fname)):
      if isinstance(row.get("step"), int):
        out.setdefault(task, {})[row["step"]] = row
  return out


def best_t5x_checkpoint(run_dir: str, metric: str = "accuracy") -> dict[str, Any]:
  """The T5X checkpoint of `run_dir` with the best validation `metric` (mean over the scored
  tasks at that step; ties go to the later step), among the checkpoints that exist; the latest
  checkpoint when no validation metrics were written."""
  if not fileio.exists(run_dir):
    raise EngineError(f"{run_dir}: no run dir")
  steps = sorted(int(m.group(1)) for m in map(_T5X_CHECKPOINT.match, fileio.listdir(run_dir)) if m)
  if not steps:
    raise EngineError(f"{run_dir}: no checkpoint_<step> dirs to test")
  scores: dict[int, list[float]] = {}
  for by_step in _metrics_rows(run_dir).values():
    for step, row in by_step.items():
      if isinstance(row.get(metric), (int, float)):
        scores.setdefault(step, []).append(float(row[metric]))
  ranked = [(sum(v) / len(v), s) for s, v in scores.items() if s in steps]
  if ranked:
    score, step = max(ranked)
    how = f"best validation {metric} {score:.4g}"
  else:
    step, score, how = steps[-1], None, "latest (no validation metrics for any checkpoint)"
  return {"checkpoint": _join(run_dir, f"checkpoint_{step}"), "step": step,
          "validation": score, "selected_by": how}


def write_t5x_test_metrics(run_dir: str, chosen: dict[str, Any]) -> str:
  """t5x.eval's test scores -> `<run dir>/<report.TEST_METRICS>` (the shape dsbs.evaluate
  writes)."""
  rows = _metrics_rows(_join(run_dir, T5X_TEST_DIR))
  if not rows:
    raise EngineError(f"{run_dir}/{T5X_TEST_DIR}: t5x.eval wrote no inference_eval metrics")
  metrics: dict[str, float] = {}
  accuracies = []
  step = chosen.get("step")
  for task, by_step in sorted(rows.items()):
    row = by_step.get(step) if step in by_step else by_step[max(by_step)]
    for k, v in row.items():
      if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
        metrics[f"{task}/{k}"] = float(v)
    if isinstance(row.get("accuracy"), (int, float)):
      accuracies.append(float(row["accuracy"]))
  if accuracies:
    metrics["accuracy"] = sum(accuracies) / len(accuracies)
  out = {"split": "test", "engine": "t5x", "step": step, "checkpoint": chosen.get("checkpoint"),
         "selected_by": chosen.get("selected_by"), "metrics": metrics}
  path = _join(run_dir, report_lib.TEST_METRICS)
  fileio.makedirs(posixpath.dirname(path) if fileio.is_remote(path) else os.path.dirname(path))
  with fileio.atomic_write_text(path) as f:
    json.dump(out, f, indent=2)
  return path

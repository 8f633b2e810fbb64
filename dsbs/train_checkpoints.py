"""Orbax checkpoints of the built-in runner: periodic, asynchronous, keep-N plus the best.

Layout of `<run dir>/checkpoints/<step>/`:
  params/     the model parameters (T5X parameter tree; sharded arrays, OCDBT)
  opt_state/  the optimizer state
  meta/       JSON: step, batches consumed by the input pipeline (for an exact resume), metrics

Preservation: the latest `keep` checkpoints are kept, plus the one with the best value of
`best_metric` among those saved with metrics (eval steps). `dsbs.evaluate` needs only `params/`.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from dsbs import fileio


PyTree = Any
_ITEMS = ("params", "opt_state", "meta")


class Checkpointer:
  """Saves and restores train state under `directory` (local or gs://)."""

  def __init__(self, directory: str, *, keep: int = 3, best_metric: str | None = None,
               best_mode: str = "max", async_save: bool = True):
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self.directory = directory
    self.best_metric = best_metric
    policies: list[cm.PreservationPolicy] = [cm.LatestN(n=keep)]
    if best_metric:
      policies.append(cm.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min",
                               n=1, keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=cm.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save,
        create=True,
    )
    self._manager = ocp.CheckpointManager(directory, item_names=_ITEMS, options=options)
    self._best_mode = best_mode
    self._best = _read_best(directory)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step() if self.best_metric else None

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, params: PyTree, opt_state: PyTree, meta: dict[str, Any],
           metrics: dict[str, float] | None = None) -> bool:
    """Starts an (asynchronous) save; metrics (plain floats) rank the checkpoint for best-keeping."""
    if metrics is not None and self.best_metric and self.best_metric not in metrics:
      metrics = None  # an eval without the ranking metric must not count as best
    saved = self._manager.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave(opt_state),
            meta=ocp.args.JsonSave(dict(meta, step=int(step))),
        ),
        metrics=metrics,
        force=True,
    )
    if saved and metrics is not None and self.best_metric:
      value = float(metrics[self.best_metric])
      old = None if self._best is None else self._best["value"]
      # Ties go to the later step, as orbax's BestN keeps the last of equal values: best.json
      # must name a step that the preservation policy keeps.
      if old is None or (value >= old if self._best_mode == "max" else value <= old):
        self._best = {"step": int(step), "metric": self.best_metric, "value": value}
        with fileio.atomic_write_text(os.path.join(self.directory, "best.json")) as f:
          json.dump(self._best, f)
    return saved

  def restore(self, step: int, abstract_params: PyTree,
              abstract_opt_state: PyTree) -> tuple[PyTree, PyTree, dict[str, Any]]:
    """Restores into the shapes, dtypes and shardings of the abstract (ShapeDtypeStruct) trees."""
    out = self._manager.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params),
            opt_state=ocp.args.StandardRestore(abstract_opt_state),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return out.params, out.opt_state, dict(out.meta)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def checkpoint_dir(run_dir: str) -> str:
  return os.path.join(run_dir, "checkpoints")


def find_params_dir(path: str) -> tuple[str, int | None]:
  """Resolves a run dir, its `checkpoints/` dir, or one step dir to (`.../<step>/params`, step).

  A run dir resolves to its best checkpoint when one was ranked, else the latest.
  """
  path = path.rstrip("/")
  if os.path.isdir(os.path.join(path, "params")):
    base = os.path.basename(path)
    return os.path.join(path, "params"), int(base) if base.isdigit() else None
  ckpt_root = checkpoint_dir(path) if os.path.isdir(checkpoint_dir(path)) else path
  # A read-only manager warns, on every evaluation, that its directory is read only.
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  mngr = ocp.CheckpointManager(ckpt_root, item_names=_ITEMS,
                               options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  try:
    steps = mngr.all_steps()
    if not steps:
      raise FileNotFoundError(f"{path}: no checkpoints found (expected <step>/params inside "
                              f"{ckpt_root})")
    step = _best_from_metadata(mngr, steps) or max(steps)
  finally:
    mngr.close()
    absl_logger.setLevel(level)
  return os.path.join(ckpt_root, str(step), "params"), step


def _best_from_metadata(mngr: ocp.CheckpointManager, steps) -> int | None:
  """The step recorded as best in the run's `best.json` (written by the runner), if any."""
  best = _read_best(str(mngr.directory))
  if best is not None and best["step"] in steps:
    return int(best["step"])
  if best is not None:  # written before ties followed the keep policy
    logging.warning("%s: best.json names step %s, which is no longer kept; using step %d",
                    mngr.directory, best["step"], max(steps))
  return None


def _read_best(directory: str) -> dict[str, Any] | None:
  best_file = os.path.join(directory, "best.json")
  if not fileio.exists(best_file):
    return None
  with fileio.open_text(best_file) as f:
    return json.load(f)


def restore_params(params_dir: str, abstract_params: PyTree | None = None) -> PyTree:
  """Reads one `params/` item; with `abstract_params`, onto their shardings and dtypes."""
  ckptr = ocp.StandardCheckpointer()
  try:
    if abstract_params is None:
      return ckptr.restore(os.path.abspath(params_dir))
    return ckptr.restore(os.path.abspath(params_dir), abstract_params)
  finally:
    ckptr.close()


def abstract_like(tree: PyTree) -> PyTree:
  """ShapeDtypeStructs (with shardings) of a tree of arrays, for restore targets."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def abstract_like_shardings(abstract: PyTree, shardings: PyTree) -> PyTree:
  """ShapeDtypeStructs of `abstract` carrying `shardings` (same tree structure)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)

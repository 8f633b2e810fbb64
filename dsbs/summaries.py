"""What a run writes beside its checkpoints: metrics JSONL, TensorBoard, configs, progress.

Run dir layout (all written by process 0 only):
  metrics.jsonl        one JSON object per logged step (train and eval lines, `"kind"` says which)
  tb/                  TensorBoard event files (train/ and eval/ scalars)
  operative_config.gin gin's operative config after the run started
  experiment.json      the resolved experiment macros and what was skipped
  model_config.json    the student's T5Config (so `dsbs.evaluate` needs only --checkpoint)
  provenance.json      task names, split sizes, data dir, package versions
  checkpoints/         see dsbs.train_checkpoints
  eval/<split>_<decode>/  metrics.json and predictions.jsonl of `dsbs.evaluate` (`eval_dir`):
                       `eval/test_greedy/` from `dsbs.train --then_evaluate`, `eval/test_beam4/`
                       from a beam search with 4 beams, ...; what `dsbs.report` reads
"""
from __future__ import annotations

import json
import math
import os
import posixpath
import sys
import time
from typing import Any

import tqdm

from dsbs import fileio


def eval_dir(split: str = "test", decode: str = "greedy", num_beams: int = 4) -> str:
  """The run-dir-relative dir of one evaluation: `eval/<split>_<greedy | beam<N>>`.

  The one place that names it: `dsbs.evaluate` writes there, `dsbs.report` (and so the sweep
  runner) reads `eval_dir()`, the test split decoded greedily, as `dsbs.train --then_evaluate`
  writes it.
  """
  method = f"beam{num_beams}" if decode == "beam" else decode
  return posixpath.join("eval", f"{split}_{method}")


class RunLog:
  """Appends metrics to JSONL and TensorBoard; shows a tqdm bar with step rate, tokens/s, ETA."""

  def __init__(self, run_dir: str, *, start_step: int, total_steps: int, enabled: bool = True,
               tensorboard: bool = True, progress: bool = True):
    self.run_dir = run_dir
    self.enabled = enabled
    self._tb = None
    self._use_tb = tensorboard and enabled
    self._bar = None
    if enabled:
      fileio.makedirs(run_dir)
      self._jsonl = fileio.open_text(os.path.join(run_dir, "metrics.jsonl"), "a")
      if progress:
        self._bar = tqdm.tqdm(total=total_steps, initial=start_step, desc="train",
                              unit="step", dynamic_ncols=True, file=sys.stderr,
                              mininterval=2.0)
    self._last = (start_step, time.perf_counter())

  def rates(self, step: int, tokens: float) -> dict[str, float]:
    """steps/s and tokens/s since the previous call (wall clock, includes input and logging)."""
    last_step, last_t = self._last
    now = time.perf_counter()
    dt = max(now - last_t, 1e-9)
    self._last = (step, now)
    return {"steps_per_s": (step - last_step) / dt, "tokens_per_s": tokens / dt}

  def write(self, step: int, kind: str, scalars: dict[str, float]) -> None:
    """Logs `scalars` at `step` under `kind` ("train" or "eval")."""
    if not self.enabled:
      return
    row = {"step": int(step), "kind": kind}
    row.update({k: jsonable(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._use_tb:
      self._tensorboard(step, kind, scalars)
    if self._bar is not None and kind == "train":
      self._bar.set_postfix({k: f"{scalars[k]:.4g}" for k in ("loss", "tokens_per_s")
                             if k in scalars}, refresh=False)

  def advance(self, step: int) -> None:
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def _tensorboard(self, step: int, kind: str, scalars: dict[str, float]) -> None:
    # tf.summary.write with the "scalars" plugin tag: core TensorFlow only, so event files are
    # written even where the `tensorboard` package (needed only to view them) is not installed.
    # TensorFlow (seconds to import) only once a run writes TensorBoard scalars.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
    if self._tb is None:
      self._tb = {}
      self._md = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    if kind not in self._tb:
      self._tb[kind] = tf.summary.create_file_writer(os.path.join(self.run_dir, "tb", kind))
    with self._tb[kind].as_default():
      for k, v in scalars.items():
        if isinstance(v, (int, float)) and math.isfinite(v):
          tf.summary.write(k, tf.constant(float(v), tf.float32), step=step, metadata=self._md)
    self._tb[kind].flush()

  def close(self) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.close()
    self._jsonl.close()
    for w in (self._tb or {}).values():
      w.close()


def jsonable(v: Any) -> Any:
  """`v` as a JSON value: numpy scalars as Python ones, bytes decoded (UTF-8), NaN / Inf and
  anything else JSON has no value for as their text (visible rather than dropped)."""
  if isinstance(v, bytes):
    return v.decode("utf-8", "replace")
  if hasattr(v, "item"):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  if isinstance(v, (str, int, float, bool)) or v is None:
    return v
  return str(v)


def write_json(run_dir: str, name: str, obj: Any) -> None:
  with fileio.atomic_write_text(os.path.join(run_dir, name)) as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=str)
    f.write("\n")


def write_text(run_dir: str, name: str, text: str) -> None:
  with fileio.atomic_write_text(os.path.join(run_dir, name)) as f:
    f.write(text)


def read_json(path: str) -> Any:
  with fileio.open_text(path) as f:
    return json.load(f)


def last_row(run_dir: str, kind: str) -> dict[str, Any]:
  """The scalars of the last `kind` row of a run's metrics.jsonl ({} when there is none)."""
  path = os.path.join(run_dir, "metrics.jsonl")
  last: dict[str, Any] = {}
  if fileio.exists(path):
    with fileio.open_text(path) as f:
      for line in f:
        row = json.loads(line)
        if row.get("kind") == kind:
          last = {k: v for k, v in row.items() if k not in ("step", "kind")}
  return last


def versions() -> dict[str, str]:
  """Versions of the packages that decide numerics and data, for provenance."""
  out = {"python": sys.version.split()[0]}
  for name in ("jax", "flax", "optax", "orbax.checkpoint", "seqio", "tensorflow", "dsbs"):
    mod = sys.modules.get(name)
    if mod is None:
      try:
        mod = __import__(name, fromlist=["__version__"])
      except ImportError:
        continue
    out[name] = str(getattr(mod, "__version__", "?"))
  return out

"""What can be checked before a run writes anything or takes its first step.

`check` reads the experiment's data (every split the run will use, for every task of the
mixture), its vocabulary and its initial checkpoint, and measures the data against the feature
lengths, the batch size against the mesh and the steps against the initial checkpoint. Every
problem found becomes one line of one `ExperimentError` (the program exits 2 with nothing
written); what the run should say at its start (split sizes, a validation split carved from
train, no validation split at all, cut sequences) comes back in `Plan.notes`.

A dataset without validation examples (none given and too few train examples to carve 10%)
runs without validation evaluations and keeps the checkpoint of the last step (`Plan.validation`
is False); the run says so at its start.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

from dsbs import experiment as experiment_lib
from dsbs import fileio, input_pipeline

ExperimentError = experiment_lib.ExperimentError
LENGTH_SAMPLE = 1000  # train examples per task whose token lengths are measured
MOST = 0.5  # more than this share of a task's targets or inputs cut: an error, not a note


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the checks found that the run must act on or say.

  Attributes:
    validation: every task has validation examples; False: no validation evaluations, the last
      step's checkpoint is the one kept.
    notes: lines to say at the start of the run.
    sizes: task -> split -> number of examples.
  """
  validation: bool
  notes: tuple[str, ...]
  sizes: dict[str, dict[str, int]]


def initial_step(path: str | None) -> int:
  """T5X semantics: fine-tuning from `.../checkpoint_N` continues the step count at N."""
  if not path:
    return 0
  base = os.path.basename(path.rstrip("/"))
  step = base.split("_")[-1]
  return int(step) if base.startswith("checkpoint_") and step.isdigit() else 0


def check(exp: experiment_lib.Experiment, *, data_parallel: int = 1, eval_batch_size: int = 1,
          eval_split: str | None = None) -> Plan:
  """Checks `exp` before training; raises ExperimentError listing every problem found.

  Args:
    exp: a validated experiment (names checked against the registries).
    data_parallel: devices on the mesh's `data` axis (the batch is split over them).
    eval_batch_size: the runner's validation batch size (split the same way).
    eval_split: the split evaluated after training (`--then_evaluate`), if any.
  """
  problems = _steps(exp) + _batch(exp, data_parallel, eval_batch_size)
  problems += _checkpoint(exp.initial_checkpoint_path)
  vocab_problem = _vocabulary(exp.vocab)
  if vocab_problem:
    raise ExperimentError("\n".join(problems + [vocab_problem]))
  notes: list[str] = []
  validation, sizes = _data(exp, eval_split, problems, notes)
  if not problems:
    _lengths(exp, problems, notes)
  if problems:
    raise ExperimentError("\n".join(problems))
  return Plan(validation=validation, notes=tuple(notes), sizes=sizes)


def _steps(exp: experiment_lib.Experiment) -> list[str]:
  start = initial_step(exp.initial_checkpoint_path)
  if exp.train_steps > start:
    return []
  return [f"TRAIN_STEPS = {exp.train_steps}: steps count from the initial checkpoint's step "
          f"{start} (INITIAL_CHECKPOINT_PATH ends in checkpoint_{start}, as in T5X); for N "
          f"fine-tuning steps set TRAIN_STEPS = {start} + N"]


def _batch(exp: experiment_lib.Experiment, data_parallel: int, eval_batch_size: int
           ) -> list[str]:
  out = []
  for name, size in (("BATCH_SIZE", exp.batch_size),
                     ("TrainConfig.eval_batch_size", eval_batch_size)):
    if size < 1:
      out.append(f"{name} = {size}: must be a positive integer")
    elif size % data_parallel:
      out.append(f"{name} = {size}: must be a multiple of the {data_parallel} devices of the "
                 f"mesh's data axis, which split each batch (e.g. "
                 f"{-(-size // data_parallel) * data_parallel})")
  return out


def _short(err: BaseException) -> str:
  """The telling part of a library error (TensorFlow's file errors carry libcurl's detail)."""
  text = " ".join(str(err).split())
  if "error details: " in text:
    text = text.split("error details: ", 1)[1]
  return text[:300]


def _checkpoint(path: str | None) -> list[str]:
  if not path:
    return []
  try:
    found = fileio.exists(path)
  except Exception as e:  # pylint: disable=broad-except  (TensorFlow's own errors for gs://)
    return [f"INITIAL_CHECKPOINT_PATH = {path!r}: cannot be read here ({_short(e)})"]
  return [] if found else [f"INITIAL_CHECKPOINT_PATH = {path!r}: no such file or directory"]


def _vocabulary(spec: str) -> str | None:
  """A problem reading the vocabulary file (SeqIO reads it lazily, at the first batch)."""
  from dsbs.seqio_ext import vocab as vocab_lib  # pylint: disable=g-import-not-at-top  (SeqIO)
  try:
    vocab_lib.get_vocabulary(spec).vocab_size  # pylint: disable=expression-not-assigned
    return None
  except Exception as e:  # pylint: disable=broad-except  (TensorFlow's own errors for gs://)
    what = (f"the public T5 SentencePiece model {vocab_lib.T5_SPM_PATH}" if spec == "t5"
            else "the vocabulary file")
    return (f"VOCAB = {spec!r}: {what} cannot be read here ({_short(e)}). Offline, pass a "
            "local copy, --gin.VOCAB=\"'/path/to/sentencepiece.model'\" (DSBS_VOCAB sets the "
            "default of the tasks' unsuffixed names), or train on bytes, --gin.VOCAB=\"'byte'\"")


def _data(exp: experiment_lib.Experiment, eval_split: str | None, problems: list[str],
          notes: list[str]) -> tuple[bool, dict[str, dict[str, int]]]:
  """Reads every split the run uses; returns (validation runs, sizes)."""
  from dsbs.tasks import registry  # pylint: disable=g-import-not-at-top
  defn = registry.get_dataset_def(exp.dataset)
  tasks = input_pipeline.subtasks(exp.mixture_or_task_name)
  splits = ["train", "validation"] + ([eval_split] if eval_split not in (None, "train",
                                                                        "validation") else [])
  where = f"DATASET = {exp.dataset!r}"
  sizes: dict[str, dict[str, int]] = {t.name: {} for t in tasks}
  for split in splits:
    if split not in defn.splits:
      if split == "train":
        problems.append(f"{where}: no train split to train on (its splits: {list(defn.splits)})")
      elif split == eval_split:
        problems.append(f"--eval_split={split}: {where} has no {split} split (its splits: "
                        f"{list(defn.splits)}); the evaluation after training would fail")
      continue
    for task in tasks:
      try:
        n = task.source.num_input_examples(split)
      except Exception as e:  # pylint: disable=broad-except  (any reader's error, said once)
        problems.append(f"{where}, {split} split: {' '.join(str(e).split())}")
        return False, sizes  # the other splits come from the same reader and data dir
      sizes[task.name][split] = n
      scored = bool(task.predict_metric_fns)
      if n == 0 and (split == "train" or (split == eval_split and scored)):
        problems.append(f"{where}: task {task.name} has no usable {split} records"
                        f"{_skipped(task, split)}")
  validation = all(sizes[t.name].get("validation", 0) > 0 for t in tasks
                   if t.predict_metric_fns)
  if not problems:
    for task in tasks:
      cells = [f"{s} {n}{_skipped(task, s)}" for s, n in sizes[task.name].items()]
      notes.append(f"data {task.name}: {', '.join(cells)}")
    if validation and defn.validation_origin:
      notes.append(f"{exp.dataset}: {defn.validation_origin}")
    if not validation:
      why = ("no validation split" if "validation" not in defn.splits else
             "no validation examples (too few train examples to carve 10% from)")
      after = f", and evaluated on {eval_split}" if eval_split else ""
      notes.append(f"{exp.dataset} has {why}: no validation evaluation during training; the "
                   f"checkpoint of the last step (TRAIN_STEPS = {exp.train_steps}) is the one "
                   f"kept{after}")
  return validation, sizes


def _skipped(task: Any, split: str) -> str:
  counts = getattr(task.source, "skip_counts", lambda s: {})(split)
  if not counts:
    return ""
  return f" (skipped {sum(counts.values())}: " + ", ".join(
      f"{n} {why}" for why, n in sorted(counts.items())) + ")"


def _lengths(exp: experiment_lib.Experiment, problems: list[str], notes: list[str]) -> None:
  """Token lengths of a sample of each task's train examples against TASK_FEATURE_LENGTHS."""
  tasks = input_pipeline.subtasks(exp.mixture_or_task_name)
  limits = exp.task_feature_lengths
  for task in tasks:
    ds = task.get_dataset(sequence_length=None, split="train", shuffle=False, num_epochs=1)
    lengths: dict[str, list[int]] = {k: [] for k in limits}
    for ex in ds.take(LENGTH_SAMPLE).as_numpy_iterator():
      for k in limits:
        lengths[k].append(len(ex[k]))
    for feature, values in lengths.items():
      cut = sorted(v for v in values if v > limits[feature])
      if not cut:
        continue
      share = len(cut) / len(values)
      line = (f"TASK_FEATURE_LENGTHS['{feature}'] = {limits[feature]}: {share:.1%} of "
              f"{len(values)} {task.name} train {feature} are longer and are cut (longest "
              f"{cut[-1]} tokens with EOS, 95th percentile {_p95(values)})")
      if share > MOST:
        problems.append(line + "; raise it, e.g. --gin.TASK_FEATURE_LENGTHS=\"" +
                        str({**limits, feature: _p95(values)}) + "\"")
      else:
        notes.append(line)


def _p95(values: Sequence[int]) -> int:
  ordered = sorted(values)
  return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

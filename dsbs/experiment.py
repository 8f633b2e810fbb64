"""One experiment definition, bound by real gin, read the same way by T5X and `dsbs.train`.

An experiment is an `Experiment`: a frozen, typed record of everything that decides what a run
trains. Its fields are bound in `gin_configs/experiment.gin` from gin macros, the knobs both
engines share (T5X's own macros where T5X has one):

| macro | field | meaning | default (experiment.gin) |
|---|---|---|---|
| `DATASET` | dataset | a registered dataset (`dsbs.tasks.datasets()`) | required |
| `METHOD` | method | `dsbs`, `dsbs_llm` (two-task mixtures), `finetune`, `distill`, `cot` (one task), or a single task variant (`label_gt`, `label_llm`, `rationale`) | `'dsbs'` |
| `FRACTION` | fraction | percent of the train split, in (0, 100] (nested subsets) | 100 |
| `LABEL_RATE` | label_rate | share of label examples in a two-task mixture, in (0, 1) | 0.5 |
| `VOCAB` | vocab | `'t5'`, `'byte'` or a SentencePiece `.model` path (tasks and model alike) | set by the model file |
| `LOSS_ALPHA` | alpha | a in a * L_label + (1 - a) * L_rationale, in [0, 1] | 0.5 |
| `LOSS_MODE` | loss_mode | `'paper'` (per-example means, alpha-weighted) or `'tokens'` | `'paper'` |
| `PACK` | pack | pack several examples per row (T5X's fine-tuning default) | True |
| `TASK_FEATURE_LENGTHS` | task_feature_lengths | `{'inputs': n, 'targets': m}` | required |
| `TRAIN_STEPS` | train_steps | last step, absolute as in T5X (counts a checkpoint's steps) | required |
| `BATCH_SIZE` | batch_size | global batch size (rows) | 128 |
| `RANDOM_SEED` | seed | init, dropout and data order | 0 |
| `STUDENT` | student | a `dsbs.model.get_config` name (`t5_1_1_large`, ...) | set by the model file |
| `INITIAL_CHECKPOINT_PATH` | initial_checkpoint_path | T5X or HF checkpoint, or None | None |
| `DROPOUT_RATE` | dropout_rate | dropout in the student | 0.1 |
| `LEARNING_RATE` | learning_rate | base learning rate, or None for the optimizer's default | None |
| `EVAL_PERIOD` | eval_period | steps between validation evaluations (0: none) | 1000 |
| `SAVING_PERIOD` | saving_period | steps between checkpoints | 1000 |
| `MIXTURE_OR_TASK_MODULE` | module | a module to import first (registers user datasets) | None |

The SeqIO task or mixture is built from the fields (`Experiment.mixture_or_task_name`), never
parsed back from a name: experiment.gin sets `MIXTURE_OR_TASK_NAME = @dsbs.tasks.mixture()` with
the cell macros, which is what T5X reads. `load` refuses an experiment whose
`MIXTURE_OR_TASK_NAME` names anything else.

Under T5X the same file binds T5X's configurables from the same macros (`gin_configs/finetune.gin`:
packing, the loss normalising factor, the dataset seed). `t5x_train_pack` builds and validates
the same `Experiment` when T5X builds its train dataset, logs it, and says at start what T5X
cannot do exactly.

`load` reads experiment files for the built-in runner with gin itself (`dsbs.gin_reading`). T5X's
own statements are not executed there: includes of T5X's gin files (`t5x/...`) read as empty,
imports of `t5x` modules are skipped, and bindings of their configurables are skipped; each is
listed in `Loaded.skipped` (and in the run dir). Anything else unknown is an error.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
from typing import Any, Mapping, Sequence

import gin

from dsbs import gin_reading
# Imported here, not in `validate`: under T5X, validation runs after gin has locked its config,
# and importing a module that registers configurables then is an error.
from dsbs import losses
from dsbs.model import config as model_config

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_GIN_DIR = os.path.join(REPO_DIR, "gin_configs")
EXPERIMENT_GIN = os.path.join(REPO_GIN_DIR, "experiment.gin")

# Field -> the gin macro that sets it (the user-facing name).
MACROS: dict[str, str] = {
    "dataset": "DATASET",
    "method": "METHOD",
    "fraction": "FRACTION",
    "label_rate": "LABEL_RATE",
    "vocab": "VOCAB",
    "alpha": "LOSS_ALPHA",
    "loss_mode": "LOSS_MODE",
    "pack": "PACK",
    "task_feature_lengths": "TASK_FEATURE_LENGTHS",
    "train_steps": "TRAIN_STEPS",
    "batch_size": "BATCH_SIZE",
    "seed": "RANDOM_SEED",
    "student": "STUDENT",
    "initial_checkpoint_path": "INITIAL_CHECKPOINT_PATH",
    "dropout_rate": "DROPOUT_RATE",
    "learning_rate": "LEARNING_RATE",
    "eval_period": "EVAL_PERIOD",
    "saving_period": "SAVING_PERIOD",
    "module": "MIXTURE_OR_TASK_MODULE",
}
CELL_FIELDS = ("dataset", "method", "fraction", "label_rate", "vocab")  # name the task
# Environment variables that change what a run trains or reads; recorded in provenance.
ENV_SETTINGS = ("DSBS_DATA_DIR", "DSBS_VOCAB", "DSBS_SOURCE", "DSBS_TFDS_DIR",
                "DSBS_USER_DATASETS", "XLA_FLAGS", "LIBTPU_INIT_ARGS", "JAX_PLATFORMS",
                "JAX_DEFAULT_MATMUL_PRECISION", "JAX_ENABLE_X64")
LOSS_MODES = losses.LOSS_MODES
PAPER_ALPHA = losses.PAPER_ALPHA
gin.constant("dsbs.experiment.PAPER_ALPHA", PAPER_ALPHA)  # task.gin's LOSS_ALPHA default


class ExperimentError(ValueError):
  """An experiment that cannot run; the message names the file or macro and what is allowed."""


def _fail(field: str, value: Any, allowed: str) -> ExperimentError:
  return ExperimentError(f"{MACROS[field]} = {value!r}: {allowed}")


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return (isinstance(v, (int, float)) and not isinstance(v, bool)
          and math.isfinite(float(v)))


@gin.configurable(module="dsbs.experiment")
@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything that decides what a run trains (see the module docstring for the macros)."""
  dataset: str
  method: str
  fraction: float
  label_rate: float
  vocab: str
  alpha: float
  loss_mode: str
  pack: bool
  task_feature_lengths: Mapping[str, int]
  train_steps: int
  batch_size: int
  seed: int
  student: str
  initial_checkpoint_path: str | None
  dropout_rate: float
  learning_rate: float | None
  eval_period: int
  saving_period: int
  module: str | None

  def __post_init__(self):
    # Types and ranges only; names that need the registries are checked by `validate`.
    for f in dataclasses.fields(self):
      if getattr(self, f.name) is gin.REQUIRED:
        raise ExperimentError(f"{MACROS[f.name]} is not set: set it in an experiment file or "
                              f"with --gin.{MACROS[f.name]}=... (see dsbs/experiment.py)")
    for f in ("dataset", "method", "vocab", "loss_mode", "student"):
      v = getattr(self, f)
      if not isinstance(v, str) or not v.strip():
        raise _fail(f, v, "must be a non-empty string")
    for f in ("initial_checkpoint_path", "module"):
      v = getattr(self, f)
      if v is not None and (not isinstance(v, str) or not v.strip()):
        raise _fail(f, v, "must be a non-empty string or None")
    if not _is_number(self.fraction) or not 0 < float(self.fraction) <= 100:
      raise _fail("fraction", self.fraction, "must be a percentage in (0, 100]")
    if not _is_number(self.label_rate) or not 0 < float(self.label_rate) < 1:
      raise _fail("label_rate", self.label_rate, "must be in (0, 1)")
    if not _is_number(self.alpha) or not 0 <= float(self.alpha) <= 1:
      raise _fail("alpha", self.alpha, "must be in [0, 1]")
    if self.loss_mode not in LOSS_MODES:
      raise _fail("loss_mode", self.loss_mode, f"must be one of {LOSS_MODES}")
    if not isinstance(self.pack, bool):
      raise _fail("pack", self.pack, "must be True or False")
    lengths = self.task_feature_lengths
    if (not isinstance(lengths, Mapping) or set(lengths) != {"inputs", "targets"}
        or not all(_is_int(v) and v > 0 for v in lengths.values())):
      raise _fail("task_feature_lengths", lengths,
                  "must be {'inputs': n, 'targets': m} with positive integers")
    for f in ("train_steps", "batch_size"):
      v = getattr(self, f)
      if not _is_int(v) or v <= 0:
        raise _fail(f, v, "must be a positive integer")
    for f in ("eval_period", "saving_period", "seed"):
      v = getattr(self, f)
      if not _is_int(v) or v < 0:
        raise _fail(f, v, "must be an integer >= 0")
    if self.saving_period == 0:
      raise _fail("saving_period", 0, "must be a positive integer")
    if not _is_number(self.dropout_rate) or not 0 <= float(self.dropout_rate) < 1:
      raise _fail("dropout_rate", self.dropout_rate, "must be in [0, 1)")
    if self.learning_rate is not None and (not _is_number(self.learning_rate)
                                           or float(self.learning_rate) <= 0):
      raise _fail("learning_rate", self.learning_rate, "must be a positive number or None")
    # Canonical types: ints and floats written either way in gin mean the same experiment.
    for f in ("fraction", "label_rate", "alpha", "dropout_rate"):
      object.__setattr__(self, f, float(getattr(self, f)))
    if self.learning_rate is not None:
      object.__setattr__(self, "learning_rate", float(self.learning_rate))
    object.__setattr__(self, "task_feature_lengths", dict(lengths))
    object.__setattr__(self, "vocab", self.vocab.strip())

  @property
  def is_mixture(self) -> bool:
    from dsbs.tasks import registry  # pylint: disable=g-import-not-at-top  (SeqIO, ~6 s)
    return self.method in registry.MIXTURES

  @property
  def mixture_or_task_name(self) -> str:
    """The SeqIO name built from the cell fields (registered on first use)."""
    import dsbs.tasks  # pylint: disable=g-import-not-at-top  (SeqIO, ~6 s; not needed to define)
    return dsbs.tasks.mixture(self.dataset, self.method, self.fraction, self.label_rate,
                              self.vocab)

  def validate(self) -> None:
    """Checks the names against the registries (datasets, methods, students, vocabulary)."""
    from dsbs.tasks import registry  # pylint: disable=g-import-not-at-top  (SeqIO, ~6 s)
    if self.module:
      try:
        importlib.import_module(self.module)
      except ImportError as e:
        raise _fail("module", self.module, f"cannot be imported ({e})") from None
    known = sorted(registry.datasets())
    if self.dataset not in known:
      raise _fail("dataset", self.dataset, "is not a registered dataset"
                  f"{gin_reading.did_you_mean(self.dataset, known)}; registered: {known}")
    methods = tuple(registry.MIXTURES) + registry.TASK_VARIANTS
    if self.method not in methods:
      raise _fail("method", self.method, f"must be one of {methods}")
    if self.method not in registry.MIXTURES and self.label_rate != registry.DEFAULT_RATE:
      raise _fail("label_rate", self.label_rate,
                  f"applies to the two-task methods {tuple(registry.MIXTURES)}, not to "
                  f"METHOD = {self.method!r}; leave it at {registry.DEFAULT_RATE}")
    if self.student not in model_config.CONFIGS:
      raise _fail("student", self.student,
                  "is not a dsbs.model config"
                  f"{gin_reading.did_you_mean(self.student, model_config.CONFIGS)}; "
                  f"known: {sorted(model_config.CONFIGS)}")
    try:
      self.mixture_or_task_name  # pylint: disable=pointless-statement  (registers, checks vocab)
    except ValueError as e:
      raise ExperimentError(f"experiment {self.cell()}: {e}") from None

  def cell(self) -> dict[str, Any]:
    """The fields that name the task: dataset, method, fraction, label rate, vocabulary."""
    return {MACROS[f]: getattr(self, f) for f in CELL_FIELDS}

  def to_json_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def as_bindings(self) -> list[str]:
    """`MACRO = value` gin lines that reproduce this experiment."""
    return [f"{MACROS[f.name]} = {getattr(self, f.name)!r}" for f in dataclasses.fields(self)]


# ---------------------------------------------------------------------------------------------
# T5X side: evaluated by T5X when it builds its train dataset and model (gin_configs/finetune.gin).


@gin.configurable(module="dsbs.experiment")
def t5x_train_pack(experiment: Experiment = gin.REQUIRED) -> bool:
  """`train/utils.DatasetConfig.pack` under T5X: validates and logs the experiment first."""
  experiment.validate()
  logging.info("dsbs experiment (T5X): %s -> %s", experiment.to_json_dict(),
               experiment.mixture_or_task_name)
  for line in t5x_caveats(experiment):
    logging.warning("%s", line)
  return experiment.pack


@gin.configurable(module="dsbs.experiment")
def t5x_loss_normalizing_factor(experiment: Experiment = gin.REQUIRED) -> str | float:
  """T5X's `loss_normalizing_factor` that makes its loss the experiment's loss.

  T5X divides sum(token_loss * decoder_loss_weights) by this factor. 'paper' mode needs the
  number of examples: unpacked that is the batch size (exact for every alpha); packed T5X has
  no such factor, and the sum of the weights equals it only at alpha = 0.5 (`t5x_caveats`).
  """
  if experiment.loss_mode == "paper" and not experiment.pack:
    return float(experiment.batch_size)
  return "NUM_REAL_TARGET_TOKENS"


def t5x_caveats(experiment: Experiment) -> list[str]:
  """What T5X cannot do exactly for this experiment (said at the start of a T5X run)."""
  if (experiment.loss_mode == "paper" and experiment.pack and experiment.alpha != PAPER_ALPHA
      and experiment.is_mixture):
    return [f"LOSS_ALPHA = {experiment.alpha} with PACK = True: T5X divides the weighted loss by "
            "the sum of the loss weights, not by the number of examples, so its loss is a "
            "self-normalised weighted mean, not exactly a * L_label + (1 - a) * L_rationale "
            "(dsbs.train computes it exactly). For the exact loss under T5X set PACK = False."]
  return []


# ---------------------------------------------------------------------------------------------
# Reading experiment files for the built-in runner.


@dataclasses.dataclass(frozen=True)
class Loaded:
  """An experiment read from gin files, with what was read and what was skipped."""
  experiment: Experiment
  files: tuple[str, ...]
  bindings: tuple[str, ...]
  skipped: tuple[str, ...]


# Macros the runner reads itself (`dsbs.train`), beyond those the experiment's bindings use.
RUNNER_MACROS = ("MODEL_DIR",)


def load(gin_files: Sequence[str], bindings: Sequence[str] = (), *,
         validate: bool = True) -> Loaded:
  """Parses `gin_files` then `bindings` ("KEY=VALUE", later wins) with gin into an Experiment.

  `gin_configs/experiment.gin` (the defaults and the field bindings) is read first. Clears gin's
  configuration first; after the call gin holds the experiment's bindings (TrainConfig, ...).
  With `validate`, names are checked against the registries (imports SeqIO).
  """
  # The runner's configurables (TrainConfig, OptimizerConfig, ...) must be registered before
  # experiment files that bind them are parsed; imported here, not at the top, because dsbs.train
  # imports this module.
  importlib.import_module("dsbs.train")
  _import_tasks()
  try:
    reading = gin_reading.read([EXPERIMENT_GIN, *gin_files], bindings, base_dir=REPO_DIR,
                               macros=set(MACROS.values()) | set(RUNNER_MACROS))
  except gin_reading.ReadError as e:
    raise ExperimentError(str(e)) from None
  try:
    experiment = Experiment()  # pylint: disable=no-value-for-parameter  (bound by gin)
  except ExperimentError as e:
    raise ExperimentError(gin_reading.first_line(e)) from None
  except (ValueError, TypeError, RuntimeError, KeyError) as e:
    macro = gin_reading.missing_macro(e)
    if macro:
      raise ExperimentError(f"{macro} is not set: set it in an experiment file or with "
                            f"--gin.{macro}=... (see dsbs/experiment.py)") from None
    raise ExperimentError(f"the experiment's bindings: {e}") from None
  if validate:
    experiment.validate()
    _check_task_name(experiment)
  return Loaded(experiment, reading.files, tuple(bindings), reading.skipped)


def _import_tasks() -> None:
  """`import dsbs.tasks` (task.gin imports it too), with a broken $DSBS_USER_DATASETS as an
  ExperimentError naming it rather than an error inside gin's parse of task.gin."""
  try:
    importlib.import_module("dsbs.tasks")
  except (ValueError, OSError) as e:  # RecordError, a missing file: read on import
    path = os.environ.get("DSBS_USER_DATASETS", "")
    if not path:
      raise
    raise ExperimentError(f"DSBS_USER_DATASETS={path}: {' '.join(str(e).split())}") from None


def _check_task_name(experiment: Experiment) -> None:
  """MIXTURE_OR_TASK_NAME, as gin evaluates it, must be the name the fields build."""
  try:
    value = gin.query_parameter("%MIXTURE_OR_TASK_NAME")
  except ValueError:
    return
  if isinstance(value, gin.config.ConfigurableReference):
    value = value.scoped_configurable_fn() if value.evaluate else value
  built = experiment.mixture_or_task_name
  if value != built:
    cell = ", ".join(f"{k}={v!r}" for k, v in experiment.cell().items())
    raise ExperimentError(
        f"MIXTURE_OR_TASK_NAME is {value!r}, but the experiment ({cell}) trains {built!r}. "
        "Choose the task with DATASET, METHOD, FRACTION, LABEL_RATE and VOCAB (e.g. "
        "--gin.METHOD=\"'finetune'\" --gin.FRACTION=25), not with MIXTURE_OR_TASK_NAME.")


def environment() -> dict[str, str | None]:
  """The environment settings that change what a run trains or reads (ENV_SETTINGS)."""
  return {k: os.environ.get(k) for k in ENV_SETTINGS}

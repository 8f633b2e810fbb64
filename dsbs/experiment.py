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

`load` reads experiment files for the built-in runner with gin itself. T5X's own statements are
not executed there: includes of T5X's gin files (`t5x/...`) read as empty, imports of `t5x`
modules are skipped, and bindings of their configurables are skipped; each is listed in
`Loaded.skipped` (and in the run dir). Anything else unknown is an error.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import importlib.abc
import importlib.machinery
import inspect
import io as std_io
import logging
import math
import os
import re
import sys
from typing import Any, Iterable, Mapping, Sequence

import gin

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
_T5X_MODULES = ("t5x",)  # modules whose configurables only T5X binds


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
      raise _fail("dataset", self.dataset, f"is not a registered dataset{_close(self.dataset, known)}"
                  f"; registered: {known}")
    methods = tuple(registry.MIXTURES) + registry.TASK_VARIANTS
    if self.method not in methods:
      raise _fail("method", self.method, f"must be one of {methods}")
    if self.method not in registry.MIXTURES and self.label_rate != registry.DEFAULT_RATE:
      raise _fail("label_rate", self.label_rate,
                  f"applies to the two-task methods {tuple(registry.MIXTURES)}, not to "
                  f"METHOD = {self.method!r}; leave it at {registry.DEFAULT_RATE}")
    if self.student not in model_config.CONFIGS:
      raise _fail("student", self.student,
                  f"is not a dsbs.model config{_close(self.student, model_config.CONFIGS)}; "
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


def _close(word: str, options: Iterable[str]) -> str:
  near = difflib.get_close_matches(word, list(options), n=3)
  return f" (did you mean {', '.join(map(repr, near))}?)" if near else ""


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


class _T5XOnly(set):
  """gin's `skip_unknown`: skips exactly the configurables of T5X modules, and records them."""

  def __init__(self):
    super().__init__()
    self.aliases: set[str] = set()
    self.skipped: list[str] = []

  def __bool__(self) -> bool:  # gin skips a failed import only when this is truthy
    return True

  def __contains__(self, selector: object) -> bool:
    if not isinstance(selector, str):
      return False
    root = selector.rsplit("/", 1)[-1].split(".")[0]
    if root in self.aliases or root in _T5X_MODULES:
      if selector not in self.skipped:
        self.skipped.append(selector)
      return True
    return False


class _StubT5X(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Serves empty stand-in modules for `t5x...` imports during a parse (T5X need not be
  installed); `load` removes them from sys.modules afterwards. Their origin is a path that does
  not exist, so gin's package-resource reader finds no `t5x/...` include beside them and the
  includes reach `_empty_t5x_file`."""

  def __init__(self, skip: _T5XOnly):
    self.skip = skip
    self.stubbed: list[str] = []

  def find_spec(self, fullname, path, target=None):  # pylint: disable=unused-argument
    if fullname.split(".")[0] not in _T5X_MODULES:
      return None
    self.stubbed.append(fullname)
    self.skip.aliases.add(fullname.split(".")[-1])
    origin = os.path.join(os.sep, "nonexistent-t5x-stand-in", *fullname.split("."),
                          "__init__.py")
    return importlib.machinery.ModuleSpec(fullname, self, origin=origin, is_package=True)

  def create_module(self, spec):
    return None  # the default module object

  def exec_module(self, module):
    module.__path__ = []  # a package: `from t5x.examples.t5 import network` resolves too


_T5X_INCLUDE = re.compile(r"(^|/)t5x/(configs|examples|contrib)/")
_reading: list[list[str]] = []  # stack of "skipped includes" lists while `load` runs


def _t5x_include_readable(path: str) -> bool:
  return bool(_reading) and bool(_T5X_INCLUDE.search(path)) and not os.path.isfile(path)


@contextlib.contextmanager
def _empty_t5x_file(path: str):
  _reading[-1].append(path)
  yield std_io.StringIO("")


gin.config.register_file_reader(_empty_t5x_file, _t5x_include_readable)


class _QuietProbes(logging.Filter):
  """Drops gin's resource reader's log lines for each search-path probe that misses."""

  def filter(self, record: logging.LogRecord) -> bool:
    msg = str(record.msg)
    return not (msg.startswith("Path not found") or msg.startswith("system_path_file_exists"))


def _search_path() -> None:
  if REPO_DIR not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
    gin.add_config_file_search_path(REPO_DIR)


# Macros the runner reads itself (`dsbs.train`), beyond those the experiment's bindings use.
RUNNER_MACROS = ("MODEL_DIR",)


def _bound_macros() -> set[str]:
  """The macros gin holds a value for (gin lists them only in its config dict, read here)."""
  return {scope for scope, selector in gin.config._CONFIG  # pylint: disable=protected-access
          if selector == "gin.macro"}


def _referenced_macros() -> set[str]:
  """The macros some parsed binding reads (`%NAME`)."""
  refs = gin.config.iterate_references(gin.config._CONFIG,  # pylint: disable=protected-access
                                       to=gin.get_configurable(gin.config.macro))
  return {ref.config_key[0] for ref in refs}


def _check_macros(set_by: list[tuple[str, set[str]]], defined: set[str]) -> None:
  """A binding may set a macro that the files define or that something reads; anything else is
  a typo (gin would keep `TRAIN_STEPZ = 10` and train the default number of steps)."""
  known = defined | _referenced_macros() | set(MACROS.values()) | set(RUNNER_MACROS)
  for binding, new in set_by:
    for name in sorted(new - known):
      near = difflib.get_close_matches(name, sorted(known), n=1)
      hint = f"did you mean {near[0]}? " if near else ""
      raise ExperimentError(
          f"binding {binding!r}: no experiment file or binding reads a macro {name} ({hint}the "
          "experiment macros are listed in dsbs/experiment.py)")


_UNPARSED_TOKEN = re.compile(r"Failed to parse token '([^']*)'")
_NO_PARAMETER = re.compile(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'")
_NO_CONFIGURABLE = re.compile(r"No configurable matching '([^']+)'")
_GIN_LOCATION = re.compile(r'\n\s+In (?:file "([^"]+)", line (\d+)|bindings string line \d+).*',
                           re.S)


def _gin_error(err: Exception, where: str, binding: str | None = None) -> str:
  """One line for a gin parse error: where, what, and the fix for the usual mistakes."""
  text = str(err)
  loc = _GIN_LOCATION.search(text)
  if loc:
    text = text[:loc.start()]
    if loc.group(1):
      where = f"{loc.group(1)}:{loc.group(2)}"
  if isinstance(err, SyntaxError) and err.filename and err.lineno:
    where = f"{err.filename}:{err.lineno}"
  text = re.sub(r" \((?:[^()]*, )?line \d+\)$", "", text.strip())
  text = re.sub(r"malformed node or string on line \d+: <ast\.\w+ object at 0x[0-9a-f]+>\s*", "",
                text)
  text = text.rstrip(".")
  token = _UNPARSED_TOKEN.search(text)
  if binding is not None and "=" in binding:
    key = binding.split("=", 1)[0].strip()
    quoted = "--gin.{key}=\"'{value}'\""
  else:
    key, quoted = "", "'{value}'"
  if token and token.group(1).isidentifier():
    text += ("; gin values are Python literals, so a string needs quotes of its own: "
             + quoted.format(key=key, value=token.group(1))
             + (" (the shell removes the outer ones)" if key else ""))
  elif isinstance(err, SyntaxError):
    text += ("; gin values are Python literals: numbers (10, 0.5), True/False/None, lists, dicts "
             "and strings in quotes (" + quoted.format(key=key, value="text") + ")")
  m = _NO_PARAMETER.search(text)
  if m:
    text += _close(m.group(2), _parameters(m.group(1)))
  m = _NO_CONFIGURABLE.search(text)
  if m:
    text += _close(m.group(1), _configurable_names(qualified="." in m.group(1)))
  return f"{where}: {' '.join(text.split())}"


def _parameters(selector: str) -> list[str]:
  try:
    fn = gin.get_configurable(selector)
  except ValueError:
    return []
  while hasattr(fn, "__wrapped__"):
    fn = fn.__wrapped__
  try:
    return list(inspect.signature(fn).parameters)
  except (TypeError, ValueError):
    return []


def _configurable_names(qualified: bool) -> set[str]:
  """Registered configurables by their full or their short names (from gin's registry)."""
  selectors = [s for s, _ in gin.config._REGISTRY.items()]  # pylint: disable=protected-access
  return set(selectors) if qualified else {s.rsplit(".", 1)[-1] for s in selectors}


def _missing_macro(err: Exception) -> str | None:
  """The macro an unbound-macro error from gin is about, if it is one."""
  text = str(err)
  m = re.search(r"configurable 'macro' .*in scope '([A-Za-z_][A-Za-z0-9_.]*)'", text)
  if m:
    return m.group(1)
  m = re.search(r"^([A-Za-z_][A-Za-z0-9_]*)/macro\.value set to `%gin\.REQUIRED`", text)
  return m.group(1) if m else None


def _first_line(err: Exception) -> str:
  """gin appends 'In call to configurable ...' / 'In file ...' context lines: keep the message."""
  return str(err).split("\n  In ")[0]


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
  gin.clear_config()
  _search_path()
  files = [EXPERIMENT_GIN]
  for f in gin_files:
    path = f
    if not os.path.isabs(f) and not os.path.exists(f) and os.path.exists(os.path.join(REPO_DIR, f)):
      path = os.path.join(REPO_DIR, f)
    if not os.path.exists(path) and "://" not in path:
      raise ExperimentError(f"gin file {f!r} not found (relative paths are tried from the "
                            f"current directory and from {REPO_DIR})")
    files.append(path)
  skip = _T5XOnly()
  stub = _StubT5X(skip)
  skipped_includes: list[str] = []
  _reading.append(skipped_includes)
  sys.meta_path.insert(0, stub)
  quiet = _QuietProbes()
  logging.getLogger().addFilter(quiet)
  try:
    # What gin.parse_config_files_and_bindings does, one statement source at a time, so that an
    # error names its file or binding and the macros the files define are known to the bindings.
    for path in files:
      try:
        gin.parse_config_file(path, skip_unknown=skip)
      except (ValueError, SyntaxError, NameError, ImportError, IOError, TypeError) as e:
        raise ExperimentError(_gin_error(e, path)) from None
    defined = _bound_macros()
    set_by: list[tuple[str, set[str]]] = []
    for binding in bindings:
      before = _bound_macros()
      try:
        gin.parse_config(binding, skip_unknown=skip)
      except (ValueError, SyntaxError, NameError, ImportError, TypeError) as e:
        raise ExperimentError(_gin_error(e, f"binding {binding!r}", binding)) from None
      set_by.append((binding, _bound_macros() - before))
    _check_macros(set_by, defined)
  finally:
    sys.meta_path.remove(stub)
    logging.getLogger().removeFilter(quiet)
    _reading.pop()
    for name in stub.stubbed:
      if getattr(sys.modules.get(name), "__loader__", None) is stub:
        del sys.modules[name]
  try:
    experiment = Experiment()  # pylint: disable=no-value-for-parameter  (bound by gin)
  except ExperimentError as e:
    raise ExperimentError(_first_line(e)) from None
  except (ValueError, TypeError, RuntimeError, KeyError) as e:
    macro = _missing_macro(e)
    if macro:
      raise ExperimentError(f"{macro} is not set: set it in an experiment file or with "
                            f"--gin.{macro}=... (see dsbs/experiment.py)") from None
    raise ExperimentError(f"the experiment's bindings: {e}") from None
  if validate:
    experiment.validate()
    _check_task_name(experiment)
  skipped = ([f"include {p} (a T5X gin file)" for p in skipped_includes]
             + [f"import {m} (a T5X module)" for m in dict.fromkeys(stub.stubbed)
                if not m.endswith(".")]
             + [f"bindings of {s} (a T5X configurable)" for s in skip.skipped])
  return Loaded(experiment, tuple(files), tuple(bindings), tuple(skipped))


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

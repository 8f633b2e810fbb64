"""Reads one experiment definition from the same gin files T5X runs, for the built-in runner.

An experiment file is a T5X gin file (`gin_configs/<ds>_<size>.gin`) or the runner's own
(`gin_configs/default.gin`). Both engines read the same macros:

| macro | meaning | runner default |
|---|---|---|
| `MIXTURE_OR_TASK_NAME` | SeqIO task or mixture to train on (from `dsbs.tasks`) | required |
| `MIXTURE_OR_TASK_MODULE` | module imported to register it (`dsbs.tasks` is always imported) | None |
| `TASK_FEATURE_LENGTHS` | `{"inputs": n, "targets": m}` | required |
| `TRAIN_STEPS` | last step, absolute as in T5X: a run from `checkpoint_1000000` with `TRAIN_STEPS = 1_010_000` trains 10k steps | required |
| `BATCH_SIZE` | global batch size (all hosts) | 128 (T5X's) |
| `DROPOUT_RATE` | dropout in the student | 0.1 |
| `INITIAL_CHECKPOINT_PATH` | T5X checkpoint dir, HF dir, or None to train from scratch | None |
| `LEARNING_RATE` | base learning rate of the schedule | optimizer default |
| `DSBS_MODEL` | `dsbs.model.get_config` name, e.g. `t5_1_1_large` | from the model include, else required |
| `LOSS_ALPHA` | weight `a` of the label task in `a*L_label + (1-a)*L_rationale` | 0.5 |
| `LOSS_MODE` | `paper` (per-example mean, alpha-weighted) or `tokens` (mixture-rate sampling, token sum) | `paper` |
| `RANDOM_SEED` | seed of init, dropout and data shuffling | 0 |
| `MODEL_DIR` | run directory (the `--model_dir` flag wins) | required by T5X, flag here |
| `EVAL_PERIOD`, `SAVING_PERIOD` | steps between evaluations / checkpoints | runner's `TrainConfig` |

How T5X-only statements are treated, deliberately:
* `include 't5x/examples/t5/t5_1_1/<size>.gin'` (and `t5_1_0`, `flan`...) sets `DSBS_MODEL` from
  `T5X_MODEL_GINS`; other `t5x/...` includes (run modes such as `configs/runs/finetune.gin`) are
  skipped and listed in `Experiment.skipped`.
* `import` / `from ... import` lines are not executed (T5X need not be installed).
* Bindings of configurables this process has not registered (T5X's, SeqIO's) are skipped and
  listed; bindings of registered dsbs configurables (`TrainConfig.eval_period = 50`,
  `OptimizerConfig.name = 'adamw'`) are applied to gin, so one file can tune both engines.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable

import gin
from gin import config_parser

from dsbs import fileio

REPO_GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "gin_configs")

# T5X model gin files -> `dsbs.model.get_config` names.
T5X_MODEL_GINS = {
    f"t5x/examples/t5/{family}/{size}.gin": f"{family}_{size}"
    for family in ("t5_1_1", "t5_1_0") for size in ("small", "base", "large", "xl", "xxl")
}
T5X_MODEL_GINS.update({
    f"t5x/examples/t5/t5_1_1/flan/{size}.gin": f"flan_t5_{size}"
    for size in ("small", "base", "large", "xl", "xxl")
})

_DEFAULTS = {
    "BATCH_SIZE": 128,
    "DROPOUT_RATE": 0.1,
    "INITIAL_CHECKPOINT_PATH": None,
    "LEARNING_RATE": None,
    "LOSS_ALPHA": 0.5,
    "LOSS_MODE": "paper",
    "RANDOM_SEED": 0,
    "MIXTURE_OR_TASK_MODULE": None,
    "MODEL_DIR": None,
    "EVAL_PERIOD": None,
    "SAVING_PERIOD": None,
}


class ExperimentError(ValueError):
  """An experiment file that cannot run: names the file, line and macro."""


@dataclasses.dataclass(frozen=True)
class Ref:
  """A gin configurable reference (`@name` / `@name()`), kept as text."""
  name: str
  evaluate: bool

  def __repr__(self) -> str:
    return f"@{self.name}()" if self.evaluate else f"@{self.name}"


@dataclasses.dataclass(frozen=True)
class Macro:
  """A gin macro reference (`%NAME`)."""
  name: str

  def __repr__(self) -> str:
    return f"%{self.name}"


class _Delegate(config_parser.ParserDelegate):

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return Ref(scoped_configurable_name, evaluate)

  def macro(self, macro_name):
    return Macro(macro_name)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """The resolved macros of one experiment plus what was skipped and why."""
  mixture_or_task_name: str
  mixture_or_task_module: str | None
  task_feature_lengths: dict[str, int]
  train_steps: int
  batch_size: int
  dropout_rate: float
  initial_checkpoint_path: str | None
  learning_rate: float | None
  model_name: str
  loss_alpha: float
  loss_mode: str
  random_seed: int
  model_dir: str | None
  eval_period: int | None
  saving_period: int | None
  macros: dict[str, Any]
  files: tuple[str, ...]
  skipped: tuple[str, ...]
  runner_bindings: str  # gin text applied to this process's configurables

  def to_json_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["macros"] = {k: repr(v) if isinstance(v, (Ref, Macro)) else v for k, v in self.macros.items()}
    return d


def _resolve_include(name: str, including_file: str | None, search_path: Iterable[str]) -> str | None:
  cands = [name] if os.path.isabs(name) else []
  if including_file:
    cands.append(os.path.join(os.path.dirname(including_file), name))
  cands += [os.path.join(d, name) for d in search_path]
  cands.append(os.path.join(REPO_GIN_DIR, os.path.basename(name)) if name.startswith("gin_configs/")
               else os.path.join(REPO_GIN_DIR, name))
  for c in cands:
    if fileio.exists(c):
      return c
  return None


def _is_registered(selector: str) -> bool:
  try:
    return gin.config._REGISTRY.get_match(selector) is not None  # pylint: disable=protected-access
  except (ValueError, KeyError):
    return False


class _Reader:
  """Walks gin statements across includes, collecting macros and runner bindings."""

  def __init__(self, search_path: Iterable[str]):
    self.search_path = list(search_path)
    self.macros: dict[str, Any] = {}
    self.macro_where: dict[str, str] = {}
    self.bindings: list[str] = []
    self.skipped: list[str] = []
    self.files: list[str] = []
    self.model_from_include: str | None = None

  def read_file(self, path: str) -> None:
    if path in self.files:
      raise ExperimentError(f"{path}: included twice (include cycle?)")
    self.files.append(path)
    with fileio.open_text(path) as f:
      self.read_text(f.read(), path)

  def read_text(self, text: str, filename: str) -> None:
    parser = config_parser.ConfigParser(text, _Delegate())
    while True:
      try:
        stmt = parser.parse_statement()
      except SyntaxError as e:
        raise ExperimentError(f"{filename}:{e.lineno}: gin syntax error: {e.msg}") from e
      if stmt is None:
        return
      where = f"{filename}:{stmt.location.line_num}"
      if isinstance(stmt, config_parser.IncludeStatement):
        self._include(stmt.filename, filename, where)
      elif isinstance(stmt, config_parser.ImportStatement):
        continue  # modules are not imported: T5X need not be installed (see module docstring)
      elif isinstance(stmt, config_parser.BindingStatement):
        self._binding(stmt, where)

  def _include(self, name: str, including: str, where: str) -> None:
    if name in T5X_MODEL_GINS:
      self.model_from_include = T5X_MODEL_GINS[name]
      return
    path = _resolve_include(name, including if including != "<bindings>" else None,
                            self.search_path)
    if path is None:
      if name.startswith("t5x/"):
        self.skipped.append(f"{where}: include {name!r} (T5X run/model file; not read)")
        return
      raise ExperimentError(f"{where}: include {name!r} not found (searched beside the file, "
                            f"{self.search_path} and {REPO_GIN_DIR})")
    self.read_file(path)

  def _binding(self, stmt: config_parser.BindingStatement, where: str) -> None:
    if not stmt.arg_name and not stmt.scope:  # a macro: `NAME = value`
      self.macros[stmt.selector] = stmt.value
      self.macro_where[stmt.selector] = where
      return
    if _is_registered(stmt.selector):
      scope = f"{stmt.scope}/" if stmt.scope else ""
      self.bindings.append(f"{scope}{stmt.selector}.{stmt.arg_name} = {stmt.value!r}")
    else:
      self.skipped.append(f"{where}: {stmt.selector}.{stmt.arg_name} (not a dsbs configurable)")


def _resolve(value: Any, macros: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
  if isinstance(value, Macro):
    if value.name in seen:
      raise ExperimentError(f"macro cycle: {' -> '.join(seen + (value.name,))}")
    if value.name not in macros:
      raise ExperimentError(f"macro %{value.name} is used but never defined")
    return _resolve(macros[value.name], macros, seen + (value.name,))
  if isinstance(value, dict):
    return {k: _resolve(v, macros, seen) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(_resolve(v, macros, seen) for v in value)
  return value


def load(gin_files: Iterable[str], bindings: Iterable[str] = (),
         search_path: Iterable[str] = (), apply_runner_bindings: bool = True) -> Experiment:
  """Reads `gin_files` then `bindings` ("KEY=VALUE" strings, later wins) into an Experiment.

  With `apply_runner_bindings`, bindings of registered dsbs configurables (and every macro they
  may reference) are parsed into gin, so import the runner's modules first.
  """
  reader = _Reader(search_path)
  for f in gin_files:
    path = _resolve_include(f, None, reader.search_path)
    if path is None:
      raise ExperimentError(f"gin file {f!r} not found")
    reader.read_file(path)
  for b in bindings:
    reader.read_text(b, "<bindings>")

  macros = {k: _resolve(v, reader.macros) for k, v in reader.macros.items()}
  values = dict(_DEFAULTS)
  values.update(macros)
  model_name = values.get("DSBS_MODEL") or reader.model_from_include

  def need(key: str, types: tuple[type, ...]):
    if key not in values or values[key] is None:
      raise ExperimentError(f"{', '.join(reader.files) or '<bindings>'}: macro {key} is not set")
    v = values[key]
    if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
      where = reader.macro_where.get(key, "default")
      raise ExperimentError(f"{where}: macro {key} = {v!r} should be {'/'.join(t.__name__ for t in types)}")
    return v

  def opt(key: str, types: tuple[type, ...]):
    return None if values.get(key) is None else need(key, types)

  lengths = need("TASK_FEATURE_LENGTHS", (dict,))
  if set(lengths) != {"inputs", "targets"} or not all(isinstance(v, int) for v in lengths.values()):
    raise ExperimentError(f"{reader.macro_where.get('TASK_FEATURE_LENGTHS')}: TASK_FEATURE_LENGTHS "
                          f"must be {{'inputs': int, 'targets': int}}, got {lengths!r}")
  if not model_name:
    raise ExperimentError(f"{', '.join(reader.files)}: no model: set DSBS_MODEL or include a T5X "
                          "model gin listed in dsbs.experiment.T5X_MODEL_GINS")
  loss_mode = need("LOSS_MODE", (str,))
  if loss_mode not in ("paper", "tokens"):
    raise ExperimentError(f"{reader.macro_where.get('LOSS_MODE')}: LOSS_MODE must be 'paper' or "
                          f"'tokens', got {loss_mode!r}")
  lr = opt("LEARNING_RATE", (float, int))
  exp = Experiment(
      mixture_or_task_name=need("MIXTURE_OR_TASK_NAME", (str,)),
      mixture_or_task_module=opt("MIXTURE_OR_TASK_MODULE", (str,)),
      task_feature_lengths=dict(lengths),
      train_steps=need("TRAIN_STEPS", (int,)),
      batch_size=need("BATCH_SIZE", (int,)),
      dropout_rate=float(need("DROPOUT_RATE", (float, int))),
      initial_checkpoint_path=opt("INITIAL_CHECKPOINT_PATH", (str,)),
      learning_rate=None if lr is None else float(lr),
      model_name=str(model_name),
      loss_alpha=float(need("LOSS_ALPHA", (float, int))),
      loss_mode=loss_mode,
      random_seed=need("RANDOM_SEED", (int,)),
      model_dir=opt("MODEL_DIR", (str,)),
      eval_period=opt("EVAL_PERIOD", (int,)),
      saving_period=opt("SAVING_PERIOD", (int,)),
      macros=macros,
      files=tuple(reader.files),
      skipped=tuple(reader.skipped),
      runner_bindings="\n".join(reader.bindings),
  )
  if apply_runner_bindings and reader.bindings:
    plain = {k: v for k, v in reader.macros.items() if not _has_ref(v)}
    text = "\n".join([f"{k} = {v!r}" for k, v in plain.items()] + reader.bindings)
    gin.parse_config(text)
  return exp


def _has_ref(value: Any) -> bool:
  if isinstance(value, Ref):
    return True
  if isinstance(value, dict):
    return any(_has_ref(v) for v in value.values())
  if isinstance(value, (list, tuple)):
    return any(_has_ref(v) for v in value)
  return False

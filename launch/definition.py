"""Sweep definitions: a Python file whose `get_config()` (or `get_sweep()`) returns a ConfigDict.

    def get_config():
      c = ml_collections.ConfigDict()
      c.name = 'arith-methods'                  # lowercase letters, digits, '-'
      c.gin = {'TRAIN_STEPS': 2000}             # macros bound in every cell
      c.grid = {'dataset': 'arith', 'vocab': 'byte', 'student': 'tiny',
                'method': ['finetune', 'dsbs'], 'fraction': [25, 100], 'seed': [0, 1, 2]}
      return c

A grid node is one of
  {axis: value or [values], ...}   the product of its axes (a scalar is a one-value axis);
                                   `gin: {MACRO: value or [values]}` inside it adds gin axes
  {'product': [node, ...]}         the product of the nodes (no axis in two of them)
  {'zip': [node, ...]}             the i-th cells of equally long nodes, merged
  {'chain': [node, ...]}           the cells of each node, one node after the other

Axes and the gin macro each binds: dataset DATASET (any registered dataset: the benchmarks,
`arith`, user datasets), method METHOD, fraction FRACTION (percent of train, (0, 100]),
label_rate LABEL_RATE ((0, 1); mixtures only), alpha LOSS_ALPHA ([0, 1]; mixtures only),
loss_mode LOSS_MODE, vocab VOCAB ('t5', 'byte' or a .model path), student STUDENT (a
`dsbs.model.get_config` name), seed RANDOM_SEED, engine (no macro: which trainer runs the cell,
`dsbs` or `t5x`), and `gin.<MACRO>` for any other macro. Every cell needs `dataset` and
`method`. Cells that differ only in an axis their method ignores (label_rate and alpha for
finetune / distill / cot) collapse into one; the count is reported. Within one mapping the seed
varies slowest, so a sweep that is stopped early has whole seeds done.

Other top-level keys: `gin` (macros bound in every cell), `gin_bindings` (raw gin lines for
configurables, e.g. 'TrainConfig.eval_period = 50'), `gin_file` (experiment file or list of
files; may name {dataset}, {student}, {size}; default per engine, see ENGINE_GIN_FILE),
`engine`, `target` ('local', or a registered remote target), `sweep_dir`, `run_root` (where run
dirs go; default <sweep_dir>/runs; gs:// for remote targets), `python` (the interpreter that
runs the trainers; default this one), `test_eval` (default True), `description`, `tpu` (options
handed to the TPU target as they are).

A bad definition raises `SweepError(path, field, message)` before anything runs.
"""
from __future__ import annotations

import dataclasses
import decimal
import hashlib
import itertools
import json
import math
import os
import re
import runpy
from typing import Any, Callable, Iterable, Mapping, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Axis -> the experiment macro it binds (engine binds none: it picks the trainer).
AXIS_MACRO = {
    "dataset": "DATASET", "method": "METHOD", "fraction": "FRACTION", "label_rate": "LABEL_RATE",
    "alpha": "LOSS_ALPHA", "loss_mode": "LOSS_MODE", "vocab": "VOCAB", "student": "STUDENT",
    "seed": "RANDOM_SEED", "engine": None,
}
AXES = tuple(AXIS_MACRO)
GIN_AXIS = "gin."  # prefix of free gin-macro axes inside a cell: "gin.LEARNING_RATE"
# Order of the parts of a cell name, and of the loops in a mapping's product (first = slowest).
NAME_ORDER = ("dataset", "method", "fraction", "label_rate", "alpha", "loss_mode", "vocab",
              "student", "engine", "seed")
LOOP_ORDER = ("seed", "engine", "dataset", "student", "vocab", "loss_mode", "alpha",
              "label_rate", "fraction", "method")
NAME_PREFIX = {"fraction": "pct", "label_rate": "rate", "alpha": "a", "seed": "s"}
METHODS = ("dsbs", "dsbs_llm", "finetune", "distill", "cot")
MIXTURE_METHODS = ("dsbs", "dsbs_llm")
MIXTURE_ONLY_AXES = ("label_rate", "alpha")  # ignored by single-task methods
ENGINES = ("dsbs", "t5x")
LOSS_MODES = ("paper", "tokens")
_CHOICES = {"method": METHODS, "loss_mode": LOSS_MODES, "engine": ENGINES}
NODE_KINDS = ("product", "zip", "chain")
TOP_KEYS = ("name", "description", "grid", "gin", "gin_bindings", "gin_file", "engine", "target",
            "sweep_dir", "run_root", "python", "test_eval", "tpu")
# Macros a sweep never sets: derived from the axes, or owned by the runner.
DERIVED_MACROS = ("MIXTURE_OR_TASK_NAME", "MODEL_DIR")
# The experiment file of each engine when `gin_file` is not given.
ENGINE_GIN_FILE = {"dsbs": "gin_configs/default.gin", "t5x": "gin_configs/{dataset}_{size}.gin"}
# T5X file names: gin_configs/<prefix>_<size>.gin.
T5X_DATASET_PREFIX = {"anli1": "anli", "esnli": "esnli", "cqa": "cqa", "svamp": "svamp"}
T5X_SIZE = {"t5_1_1_base": "220m", "t5_1_1_large": "770m", "t5_1_1_xl": "3b",
            "t5_1_1_xxl": "11b", "flan_t5_base": "220m", "flan_t5_large": "770m",
            "flan_t5_xl": "3b", "flan_t5_xxl": "11b"}
MAX_NAME = 120
_SWEEP_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MACRO = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SAFE = re.compile(r"^[a-z0-9._]+$")
_BINDING = re.compile(r"^\s*[A-Za-z_][\w/.]*\.\w+\s*=\s*\S")


class SweepError(ValueError):
  """A sweep definition that cannot run; the message names the file and the field."""

  def __init__(self, path: str, field: str, message: str):
    super().__init__(f"{path}: {field}: {message}")
    self.path, self.field = path, field


@dataclasses.dataclass(frozen=True)
class Cell:
  """One point of the grid: its canonical overrides, stable name and gin bindings."""
  name: str
  overrides: dict[str, Any]  # axis -> value ("gin.<MACRO>" for free gin axes)
  bindings: tuple[str, ...]  # "KEY=VALUE" gin statements, passed as --gin.KEY=VALUE

  @property
  def engine(self) -> str:
    return self.overrides.get("engine", "dsbs")


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A loaded, validated definition and its cells, in run order."""
  name: str
  path: str
  config: dict[str, Any]  # the definition as plain data (what `get_config()` returned)
  cells: tuple[Cell, ...]
  collapsed: int  # grid points merged because their method ignores an axis

  def get(self, key: str, default: Any = None) -> Any:
    return self.config.get(key, default)

  @property
  def target(self) -> str:
    return self.config.get("target", "local")

  @property
  def test_eval(self) -> bool:
    return bool(self.config.get("test_eval", True))

  def sweep_dir(self, flag: str | None = None) -> str:
    return flag or self.config.get("sweep_dir") or os.path.join("sweeps", self.name)

  def run_root(self, sweep_dir: str) -> str:
    return self.config.get("run_root") or os.path.join(sweep_dir, "runs")

  def gin_files(self, cell: Cell) -> list[str]:
    """The cell's experiment files, placeholders filled ({dataset}, {student}, {size})."""
    spec = self.config.get("gin_file") or ENGINE_GIN_FILE[cell.engine]
    files = [spec] if isinstance(spec, str) else list(spec)
    ds = cell.overrides.get("dataset", "")
    student = cell.overrides.get("student", "")
    fields = {"dataset": T5X_DATASET_PREFIX.get(ds, ds), "student": student,
              "size": T5X_SIZE.get(student, student)}
    return [f.format(**fields) for f in files]


# ---- Loading ----------------------------------------------------------------------------------

def load(path: str, *, known_datasets: Callable[[], Iterable[str]] | None = None,
         known_students: Callable[[], Iterable[str]] | None = None,
         repo: str = REPO) -> Sweep:
  """Reads, validates and expands the definition at `path` (see the module docstring)."""
  return expand(read(path), path, known_datasets=known_datasets, known_students=known_students,
                repo=repo)


def read(path: str) -> dict[str, Any]:
  """Runs the definition file and returns its get_config() / get_sweep() as plain data."""
  if not path.endswith(".py"):
    raise SweepError(path, "<file>", "a sweep definition is a Python file with get_config() "
                     "(JSON/YAML definitions were converted: see launch/sweeps/*.py)")
  if not os.path.exists(path):
    raise SweepError(path, "<file>", "no such file")
  try:
    module = runpy.run_path(path)
  except Exception as e:  # pylint: disable=broad-except  (user code: report, do not trace)
    raise SweepError(path, "<file>", f"running it raised {type(e).__name__}: {e}") from e
  fn = module.get("get_config") or module.get("get_sweep")
  if not callable(fn):
    raise SweepError(path, "get_config", "the file defines neither get_config() nor get_sweep()")
  try:
    config = fn()
  except Exception as e:  # pylint: disable=broad-except  (user code: report, do not trace)
    raise SweepError(path, fn.__name__, f"raised {type(e).__name__}: {e}") from e
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  if not isinstance(config, Mapping):
    raise SweepError(path, "get_config", f"returned {type(config).__name__}, not a ConfigDict")
  return _plain(dict(config))


def _plain(value: Any) -> Any:
  """ConfigDict leftovers (tuples, nested ConfigDicts) -> dicts and lists."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


# ---- Expansion ----------------------------------------------------------------------------------

def expand(config: Mapping[str, Any], path: str = "<sweep>", *,
           known_datasets: Callable[[], Iterable[str]] | None = None,
           known_students: Callable[[], Iterable[str]] | None = None,
           repo: str = REPO) -> Sweep:
  """Validates `config` and expands its grid into named cells."""
  config = _plain(dict(config))
  unknown = sorted(set(config) - set(TOP_KEYS))
  if unknown:
    raise SweepError(path, unknown[0], f"unknown key (known: {', '.join(TOP_KEYS)})")
  name = config.get("name")
  if not isinstance(name, str) or not _SWEEP_NAME.match(name):
    raise SweepError(path, "name", f"need lowercase letters, digits and '-', got {name!r}")
  engine = config.get("engine", "dsbs")
  if engine not in ENGINES:
    raise SweepError(path, "engine", f"{engine!r} is not one of {ENGINES}")
  fixed = config.get("gin", {}) or {}
  if not isinstance(fixed, Mapping):
    raise SweepError(path, "gin", "must map MACRO -> value")
  for key, value in fixed.items():
    _check_gin_macro(path, f"gin.{key}", key)
    _gin_literal(value, path, f"gin.{key}")
  raw = config.get("gin_bindings", []) or []
  if not isinstance(raw, list):
    raise SweepError(path, "gin_bindings", "must be a list of 'Configurable.param = value' lines")
  for i, line in enumerate(raw):
    if not isinstance(line, str) or not _BINDING.match(line):
      raise SweepError(path, f"gin_bindings[{i}]", f"{line!r} is not 'Configurable.param = "
                       "value' (macros go in `gin` or the grid)")
  for key in ("sweep_dir", "run_root", "python", "description"):
    if config.get(key) is not None and not isinstance(config[key], str):
      raise SweepError(path, key, f"must be a string, got {config[key]!r}")
  if not isinstance(config.get("test_eval", True), bool):
    raise SweepError(path, "test_eval", "must be True or False")
  spec = config.get("gin_file")
  if spec is not None and not (isinstance(spec, str) or (
      isinstance(spec, list) and spec and all(isinstance(s, str) for s in spec))):
    raise SweepError(path, "gin_file", "must be a path or a list of paths")
  if "grid" not in config:
    raise SweepError(path, "grid", "required: the axes of the sweep")

  checks: list[tuple[str, str, Any]] = []  # (field path, axis, value) for registry lookups
  points = _expand_node(config["grid"], path, "grid", checks)
  _check_registry(path, checks, known_datasets, known_students)

  cells: dict[str, Cell] = {}
  collapsed = 0
  for where, point in points:
    point = {"engine": engine, **point} if "engine" not in point and engine != "dsbs" else point
    for axis in ("dataset", "method"):
      if axis not in point:
        raise SweepError(path, where, f"a cell without {axis!r}: {point}")
    if point["method"] not in MIXTURE_METHODS:
      point = {k: v for k, v in point.items() if k not in MIXTURE_ONLY_AXES}
    cell_name = cell_name_of(point)
    if cell_name in cells:
      if cells[cell_name].overrides != point:  # a hash suffix keeps names unique; never reached
        raise SweepError(path, where, f"two different cells named {cell_name!r}")
      collapsed += 1
      continue
    cells[cell_name] = Cell(name=cell_name, overrides=point, bindings=tuple(
        bindings_of(point, fixed) + list(raw)))
  sweep = Sweep(name=name, path=path, config=config, cells=tuple(cells.values()),
                collapsed=collapsed)
  for cell in sweep.cells:
    for f in sweep.gin_files(cell):
      if "://" not in f and not os.path.exists(os.path.join(repo, f)) and not os.path.exists(f):
        raise SweepError(path, "gin_file", f"cell {cell.name}: {f} does not exist")
  return sweep


def _expand_node(node: Any, path: str, where: str,
                 checks: list[tuple[str, str, Any]]) -> list[tuple[str, dict[str, Any]]]:
  """The (field path, cell overrides) points of one grid node."""
  if not isinstance(node, Mapping) or not node:
    raise SweepError(path, where, f"a grid node is a non-empty mapping, got {node!r}")
  kinds = [k for k in NODE_KINDS if k in node]
  if kinds:
    kind = kinds[0]
    if len(node) != 1:
      raise SweepError(path, where, f"'{kind}' must be the node's only key, got {sorted(node)}")
    parts = node[kind]
    if not isinstance(parts, list) or not parts:
      raise SweepError(path, f"{where}.{kind}", "must be a non-empty list of grid nodes")
    subs = [_expand_node(p, path, f"{where}.{kind}[{i}]", checks) for i, p in enumerate(parts)]
    if kind == "chain":
      return [pt for sub in subs for pt in sub]
    if kind == "zip":
      lengths = [len(s) for s in subs]
      if len(set(lengths)) != 1:
        raise SweepError(path, f"{where}.zip", f"nodes expand to different numbers of cells "
                         f"{lengths}; zip needs equal lengths")
      combos = zip(*subs)
    else:
      combos = itertools.product(*subs)
    out = []
    for combo in combos:
      merged: dict[str, Any] = {}
      for (w, point) in combo:
        twice = sorted(set(merged) & set(point))
        if twice:
          raise SweepError(path, f"{where}.{kind}", f"axis {twice[0]!r} is set by two of its "
                           f"nodes ({w})")
        merged.update(point)
      out.append((where, merged))
    return out
  axes: dict[str, list[Any]] = {}
  for key, value in node.items():
    if key == "gin":
      if not isinstance(value, Mapping) or not value:
        raise SweepError(path, f"{where}.gin", "must map MACRO -> value or [values]")
      for macro, v in value.items():
        _check_gin_macro(path, f"{where}.gin.{macro}", macro)
        axes[GIN_AXIS + macro] = _values(v, path, f"{where}.gin.{macro}")
        for i, item in enumerate(axes[GIN_AXIS + macro]):
          _gin_literal(item, path, f"{where}.gin.{macro}[{i}]")
      continue
    if key not in AXIS_MACRO:
      raise SweepError(path, f"{where}.{key}", f"unknown axis (axes: {', '.join(AXES)}, "
                       f"gin.<MACRO>; nodes: {', '.join(NODE_KINDS)})")
    values = _values(value, path, f"{where}.{key}")
    for i, v in enumerate(values):
      field = f"{where}.{key}" + (f"[{i}]" if isinstance(value, list) else "")
      values[i] = _check_value(path, field, key, v)
      if key in ("dataset", "student"):
        checks.append((field, key, values[i]))
    axes[key] = values
  order = [a for a in LOOP_ORDER if a in axes] + sorted(a for a in axes if a not in LOOP_ORDER)
  combos = itertools.product(*(axes[a] for a in order))
  return [(where, dict(zip(order, combo))) for combo in combos]


def _values(value: Any, path: str, field: str) -> list[Any]:
  if isinstance(value, list):
    if not value:
      raise SweepError(path, field, "empty list of values")
    return list(value)
  return [value]


def _check_value(path: str, field: str, axis: str, v: Any) -> Any:
  """One axis value, validated and normalised (numbers as floats / ints)."""
  def fail(msg: str):
    raise SweepError(path, field, msg)

  def number(lo: float, hi: float, lo_open: bool, hi_open: bool) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
      fail(f"{v!r} is not a number")
    x = float(v)
    if x < lo or x > hi or (lo_open and x == lo) or (hi_open and x == hi):
      fail(f"{v!r} is out of {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")
    if float(f"{x:.6g}") != x:  # task names carry the value: it must be exact in 6 digits
      fail(f"{v!r} has more than 6 significant digits")
    return x

  if axis == "dataset" or axis == "student":
    if not isinstance(v, str) or not v:
      fail(f"{v!r} is not a name")
    return v
  if axis in _CHOICES:
    if v not in _CHOICES[axis]:
      fail(f"unknown {axis} {v!r} ({axis}s: {', '.join(_CHOICES[axis])})")
    return v
  if axis == "fraction":
    return number(0, 100, True, False)
  if axis == "label_rate":
    return number(0, 1, True, True)
  if axis == "alpha":
    return number(0, 1, False, False)
  if axis == "vocab":
    if v in ("t5", "byte"):
      return v
    if not isinstance(v, str) or not v.endswith(".model"):
      fail(f"{v!r} is not 't5', 'byte' or a SentencePiece .model path")
    if "://" not in v and not os.path.exists(v):
      fail(f"{v}: no such file")
    return v
  if axis == "seed":
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
      fail(f"{v!r} is not a non-negative integer")
    return v
  raise AssertionError(axis)


def _check_gin_macro(path: str, field: str, macro: str) -> None:
  if not isinstance(macro, str) or not _MACRO.match(macro):
    raise SweepError(path, field, "a gin macro name is upper case (configurables go in "
                     "gin_bindings)")
  if macro in DERIVED_MACROS:
    raise SweepError(path, field, f"{macro} is derived from the cell, never set in a sweep")
  owner = next((a for a, m in AXIS_MACRO.items() if m == macro), None)
  if owner:
    raise SweepError(path, field, f"{macro} is bound by the {owner!r} axis: use it instead")


def _check_registry(path: str, checks: list[tuple[str, str, Any]],
                    known_datasets: Callable[[], Iterable[str]] | None,
                    known_students: Callable[[], Iterable[str]] | None) -> None:
  """Every dataset and student named in the grid exists (registries loaded only if needed)."""
  for axis, lookup in (("dataset", known_datasets or _registered_datasets),
                       ("student", known_students or _registered_students)):
    wanted = [(f, v) for f, a, v in checks if a == axis]
    if not wanted:
      continue
    known = set(lookup([v for _, v in wanted]))
    for field, value in wanted:
      if value not in known:
        raise SweepError(path, field, f"unknown {axis} {value!r} (registered: "
                         f"{', '.join(sorted(known))})")


def _registered_datasets(names: Sequence[str] = ()) -> list[str]:
  """Registered dataset names; `dsbs.tasks` (SeqIO, seconds to import) only for non-built-ins."""
  import dsbs.data  # pylint: disable=g-import-not-at-top  (cheap; keeps `status` free of it)
  builtin = list(dsbs.data.ALL_DATASETS)
  if all(n in builtin for n in names):
    return builtin
  import dsbs.tasks  # pylint: disable=g-import-not-at-top  (SeqIO: only when a name needs it)
  return list(dsbs.tasks.datasets())


def _registered_students(names: Sequence[str] = ()) -> list[str]:
  del names
  from dsbs.model import config  # pylint: disable=g-import-not-at-top  (imports JAX and Flax)
  return list(config.CONFIGS)


# ---- Names and bindings -------------------------------------------------------------------------

def canonical_number(x: float | int) -> tuple[str, bool]:
  """(text, exact): the shortest decimal of `x` rounded to 12 significant digits, no exponent
  (0.1 + 0.2 -> '0.3', 100.0 -> '100', 1e-05 -> '0.00001'); exact says it reads back as `x`."""
  if isinstance(x, int) and not isinstance(x, bool):
    return str(x), True
  f = float(x)
  if not math.isfinite(f):
    return str(f).lower(), True
  short = repr(float(f"{f:.12g}"))
  text = format(decimal.Decimal(short), "f")
  if "." in text:
    text = text.rstrip("0").rstrip(".")
  return text, float(text) == f


def _part(value: Any) -> tuple[str, bool]:
  """A filesystem-safe rendering of one value and whether it is lossless."""
  if isinstance(value, bool):
    return str(value).lower(), True
  if isinstance(value, (int, float)):
    text, exact = canonical_number(value)
    return text.replace("-", "m"), exact
  if value is None:
    return "none", True
  if isinstance(value, str):
    if value.endswith(".model"):  # a vocabulary path: name it by a hash of the spec
      return "vocab" + hashlib.sha1(value.encode()).hexdigest()[:8], True
    low = value.lower()
    if _SAFE.match(low) and low == value:
      return value, True
    return re.sub(r"[^a-z0-9._]+", "_", low).strip("_")[:24] or "x", False
  return "x", False  # lists / dicts: the hash suffix identifies them


def canonical_json(overrides: Mapping[str, Any]) -> str:
  """Key-order-independent text of a cell's overrides (floats as floats, 100 == 100.0)."""
  def norm(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str):
      return v
    if isinstance(v, int):
      return float(v)
    if isinstance(v, float):
      return v
    if isinstance(v, Mapping):
      return {str(k): norm(x) for k, x in sorted(v.items())}
    if isinstance(v, (list, tuple)):
      return [norm(x) for x in v]
    return repr(v)
  return json.dumps({k: norm(v) for k, v in sorted(overrides.items())}, sort_keys=True)


def cell_name_of(overrides: Mapping[str, Any]) -> str:
  """A short, filesystem-safe name, the same for equal overrides in any key order on any
  machine; a hash suffix is added only when the parts alone could not tell cells apart."""
  parts, exact = [], True
  for axis in NAME_ORDER:
    if axis in overrides:
      text, ok = _part(overrides[axis])
      parts.append(NAME_PREFIX.get(axis, "") + text)
      exact &= ok
  for key in sorted(k for k in overrides if k.startswith(GIN_AXIS)):
    text, ok = _part(overrides[key])
    parts.append(key[len(GIN_AXIS):].lower() + text)
    exact &= ok
  unknown = sorted(k for k in overrides if k not in AXIS_MACRO and not k.startswith(GIN_AXIS))
  if unknown:
    raise ValueError(f"unknown axes {unknown}")
  name = "-".join(parts)
  if not exact or len(name) > MAX_NAME:
    digest = hashlib.sha1(canonical_json(overrides).encode()).hexdigest()[:8]
    name = name[:MAX_NAME - 9].rstrip("-") + "-" + digest
  return name


def _gin_literal(value: Any, path: str = "<sweep>", field: str = "value") -> str:
  """A gin literal for a Python value: strings quoted, numbers bare, None/True/False."""
  if value is None or isinstance(value, (bool, str)):
    return repr(value)
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, Mapping):
    return "{" + ", ".join(f"{_gin_literal(k, path, field)}: {_gin_literal(v, path, field)}"
                           for k, v in value.items()) + "}"
  if isinstance(value, (list, tuple)):
    return "(" + "".join(f"{_gin_literal(v, path, field)}, " for v in value).rstrip(" ") + ")"
  raise SweepError(path, field, f"{value!r} ({type(value).__name__}) has no gin literal")


def bindings_of(overrides: Mapping[str, Any], fixed: Mapping[str, Any] = ()) -> list[str]:
  """`KEY=VALUE` gin statements of a cell: the sweep's fixed macros, then the cell's axes."""
  out = {k: _gin_literal(v) for k, v in dict(fixed).items()}
  for axis in NAME_ORDER:
    macro = AXIS_MACRO[axis]
    if axis in overrides and macro:
      v = overrides[axis]
      out[macro] = _gin_literal(float(v) if axis in ("fraction", "label_rate", "alpha") else v)
  for key in sorted(k for k in overrides if k.startswith(GIN_AXIS)):
    out[key[len(GIN_AXIS):]] = _gin_literal(overrides[key])
  return [f"{k}={v}" for k, v in out.items()]

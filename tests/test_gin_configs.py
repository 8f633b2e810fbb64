"""The shipped gin configs, checked WITHOUT T5X: includes, macros, run commands, task names.

T5X is not installed in CI, so these read the files with gin's own parser and a table of the
T5X files they include (T5X_INCLUDES). tests/test_t5x_configs.py checks that table against the
real T5X files and binds every config under T5X when T5X is installed.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
import shlex
from typing import Any

import pytest
from gin import config_parser

import dsbs.data
from dsbs import experiment
from dsbs.seqio_ext import vocab

REPO = pathlib.Path(__file__).resolve().parent.parent
GIN_DIR = REPO / "gin_configs"
DATASETS = ("anli", "cqa", "esnli", "svamp")
SIZES = {"220m": "base", "770m": "large", "3b": "xl", "11b": "xxl"}
REQUIRED = "gin.REQUIRED"

# The T5X gin files our configs include: macros each defines (with the ones left %gin.REQUIRED)
# and what it includes in turn. tests/test_t5x_configs.py checks this table against T5X itself.
T5X_INCLUDES: dict[str, dict[str, Any]] = {
    "t5x/configs/runs/finetune.gin": {
        "defines": {"BATCH_SIZE", "DROPOUT_RATE", "EVALUATOR_NUM_EXAMPLES",
                    "EVALUATOR_USE_MEMORY_CACHE", "EVAL_PERIOD", "EVAL_STEPS",
                    "INITIAL_CHECKPOINT_PATH", "JSON_WRITE_N_RESULTS", "MIXTURE_OR_TASK_MODULE",
                    "MIXTURE_OR_TASK_NAME", "MODEL_DIR", "RANDOM_SEED", "TASK_FEATURE_LENGTHS",
                    "TRAIN_STEPS", "TRAIN_STEPS_RELATIVE", "USE_CACHED_TASKS",
                    "USE_HARDWARE_RNG"},
        "required": {"INITIAL_CHECKPOINT_PATH", "MIXTURE_OR_TASK_NAME", "MODEL_DIR",
                     "TASK_FEATURE_LENGTHS", "TRAIN_STEPS"},
        "uses": {"MODEL"},
        "includes": [],
    },
    "t5x/configs/runs/eval.gin": {
        "defines": {"CHECKPOINT_PATH", "EVAL_OUTPUT_DIR", "MIXTURE_OR_TASK_MODULE",
                    "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS"},
        "required": {"CHECKPOINT_PATH", "EVAL_OUTPUT_DIR", "MIXTURE_OR_TASK_NAME"},
        "uses": {"MODEL"},
        "includes": [],
    },
    "t5x/configs/runs/infer.gin": {
        "defines": {"CHECKPOINT_PATH", "INFER_OUTPUT_DIR", "MIXTURE_OR_TASK_MODULE",
                    "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS"},
        "required": {"CHECKPOINT_PATH", "INFER_OUTPUT_DIR", "MIXTURE_OR_TASK_NAME",
                     "TASK_FEATURE_LENGTHS"},
        "uses": {"MODEL"},
        "includes": [],
    },
    "t5x/examples/t5/t5_1_1/base.gin": {
        "defines": {"DROPOUT_RATE", "LABEL_SMOOTHING", "LOSS_NORMALIZING_FACTOR", "MODEL",
                    "OPTIMIZER", "VOCABULARY", "Z_LOSS"},
        "required": {"DROPOUT_RATE"},
        "uses": set(),
        "includes": [],
    },
}
for _size in ("large", "xl", "xxl"):
  T5X_INCLUDES[f"t5x/examples/t5/t5_1_1/{_size}.gin"] = {
      "defines": set(), "required": set(), "uses": set(),
      "includes": ["t5x/examples/t5/t5_1_1/base.gin"]}


class _Ref:

  def __init__(self, name: str, evaluate: bool):
    self.name, self.evaluate = name, evaluate


class _Macro:

  def __init__(self, name: str):
    self.name = name


class _Delegate(config_parser.ParserDelegate):

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return _Ref(scoped_configurable_name, evaluate)

  def macro(self, macro_name):
    return _Macro(macro_name)


@dataclasses.dataclass
class GinFile:
  """The statements of one of our gin files."""
  path: pathlib.Path
  first_line: str
  includes: list[tuple[int, str]]  # (line, include path as written)
  macros: list[tuple[int, str, Any]]  # (line, name, parsed value) in file order
  bindings: list[tuple[int, str, Any]]  # (line, "scope/selector.arg", parsed value)


def parse_file(path: pathlib.Path) -> GinFile:
  text = path.read_text(encoding="utf-8")
  parser = config_parser.ConfigParser(text, _Delegate())
  out = GinFile(path, text.splitlines()[0] if text else "", [], [], [])
  while True:
    stmt = parser.parse_statement()
    if stmt is None:
      return out
    line = stmt.location.line_num
    if isinstance(stmt, config_parser.IncludeStatement):
      out.includes.append((line, stmt.filename))
    elif isinstance(stmt, config_parser.BindingStatement):
      if not stmt.arg_name and not stmt.scope:
        out.macros.append((line, stmt.selector, stmt.value))
      else:
        key = (f"{stmt.scope}/" if stmt.scope else "") + f"{stmt.selector}.{stmt.arg_name}"
        out.bindings.append((line, key, stmt.value))
    elif isinstance(stmt, config_parser.BlockDeclaration):  # pragma: no cover (gin >= 0.5)
      continue


def macro_refs(value: Any) -> set[str]:
  """Names of %MACROs inside a parsed value (lists, tuples, dicts, nested)."""
  if isinstance(value, _Macro):
    return {value.name}
  if isinstance(value, dict):
    return set().union(*(macro_refs(v) for v in value.values())) if value else set()
  if isinstance(value, (list, tuple)):
    return set().union(*(macro_refs(v) for v in value)) if value else set()
  return set()


def is_bare_macro(value: Any) -> bool:
  return isinstance(value, _Macro) and value.name != REQUIRED


def ours() -> list[pathlib.Path]:
  return sorted(GIN_DIR.glob("*.gin"))


def run_command(gf: GinFile) -> list[str] | None:
  """The argv of the command on the first line ('# python -m t5x.<mode> ...'), or None."""
  if not gf.first_line.startswith("# python -m "):
    return None
  return shlex.split(gf.first_line[2:])


def command_gin_files_and_bindings(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  files, bindings = [], {}
  for arg in argv:
    if arg.startswith("--gin_file="):
      files.append(arg.split("=", 1)[1])
    elif arg.startswith("--gin."):
      key, value = arg[len("--gin."):].split("=", 1)
      bindings[key] = value
  return files, bindings


@dataclasses.dataclass
class Resolved:
  """What one command line sees after following every include, in gin's order."""
  macro_values: dict[str, Any]  # last binding wins; T5X-defined ones map to "<t5x>"
  required_left: set[str]
  used: dict[str, str]  # macro -> where first used (ours only)
  problems: list[str]
  our_depth: int


def resolve(gin_files: list[str], bindings: dict[str, str] | None = None) -> Resolved:
  """Walks `gin_files` (repo-relative) like gin would, collecting macros and problems."""
  res = Resolved({}, set(), {}, [], 0)

  def visit(name: str, where: str, depth: int) -> None:
    if name in T5X_INCLUDES:
      facts = T5X_INCLUDES[name]
      for inc in facts["includes"]:
        visit(inc, name, depth)
      for m in facts["defines"]:
        res.macro_values[m] = "<t5x>"
        res.required_left.discard(m)
      res.required_left |= facts["required"]
      for m in facts["uses"]:
        res.used.setdefault(m, name)
      return
    if name.startswith("t5x/"):
      res.problems.append(f"{where}: include {name!r} is not a known T5X file "
                          f"({sorted(T5X_INCLUDES)})")
      return
    if not name.startswith("gin_configs/"):
      res.problems.append(f"{where}: include {name!r} must be repo-relative "
                          "('gin_configs/...'), the path T5X's search path resolves")
      return
    path = REPO / name
    if not path.exists():
      res.problems.append(f"{where}: include {name!r} does not exist")
      return
    res.our_depth = max(res.our_depth, depth)
    gf = parse_file(path)
    # gin applies statements in file order; includes anywhere in the file take effect there.
    events = sorted([(l, "include", n) for l, n in gf.includes]
                    + [(l, "macro", (n, v)) for l, n, v in gf.macros]
                    + [(l, "binding", (k, v)) for l, k, v in gf.bindings],
                    key=lambda e: e[0])
    for line, kind, payload in events:
      loc = f"{name}:{line}"
      if kind == "include":
        visit(payload, loc, depth + 1)
      elif kind == "macro":
        macro, value = payload
        if is_bare_macro(value):
          res.problems.append(f"{loc}: macro {macro} points at macro %{value.name}")
        if isinstance(value, _Macro) and value.name == REQUIRED:
          res.required_left.add(macro)
        else:
          res.required_left.discard(macro)
        res.macro_values[macro] = value
        for m in macro_refs(value):
          res.used.setdefault(m, loc)
      else:
        for m in macro_refs(payload[1]):
          res.used.setdefault(m, loc)

  for f in gin_files:
    visit(f, "<command>", 0)
  for key, value in (bindings or {}).items():
    if "." not in key and "/" not in key:
      res.macro_values[key] = value
      res.required_left.discard(key)
  for m, where in sorted(res.used.items()):
    if m != REQUIRED and m not in res.macro_values:
      res.problems.append(f"{where}: macro %{m} is used but never defined")
  return res


def literal_task_names(text: str) -> set[str]:
  """Task/mixture names a file sets or shows in override examples."""
  names = set(re.findall(r"MIXTURE_OR_TASK_NAME\s*=\s*'([a-z0-9_.]+)'", text))
  names |= set(re.findall(r"""MIXTURE_OR_TASK_NAME="'([a-z0-9_.]+)'\"""", text))
  return names


# ---------------------------------------------------------------------------------------------
# Tests.

TRAIN_FILES = [f"{d}_{s}.gin" for d in DATASETS for s in SIZES]
COMMAND_FILES = TRAIN_FILES + ["smoke_offline.gin", "eval.gin", "infer.gin"]
# Macros a user must pass on the command line (documented in each first-line command).
USER_MACROS = {"train": {"MODEL_DIR"}, "eval": {"CHECKPOINT_PATH", "EVAL_OUTPUT_DIR",
                                                 "MIXTURE_OR_TASK_NAME"},
               "infer": {"CHECKPOINT_PATH", "INFER_OUTPUT_DIR", "MIXTURE_OR_TASK_NAME"}}


def _parsed(name: str) -> GinFile:
  return parse_file(GIN_DIR / name)


def test_every_dataset_and_size_has_a_train_config():
  present = {p.name for p in ours()}
  assert not set(TRAIN_FILES) - present, sorted(set(TRAIN_FILES) - present)


@pytest.mark.parametrize("path", ours(), ids=lambda p: p.name)
def test_file_parses_and_includes_resolve(path):
  gf = parse_file(path)
  res = resolve([str(path.relative_to(REPO))])
  bad = [p for p in res.problems if "never defined" not in p]  # free macros: see next tests
  assert not bad, bad
  # One level of our own includes below the file named on the command line, no deeper
  # (model_<size>.gin -> student.gin is the deepest chain).
  assert res.our_depth <= 2, f"{path.name}: include chain {res.our_depth} deep"
  for line, name, value in gf.macros:
    assert not is_bare_macro(value), f"{path.name}:{line}: {name} = %{value.name}"


@pytest.mark.parametrize("name", COMMAND_FILES)
def test_first_line_is_the_command_that_runs_it(name):
  gf = _parsed(name)
  argv = run_command(gf)
  assert argv is not None, f"{name}: first line must be '# python -m t5x.<mode> ...'"
  assert argv[:2] == ["python", "-m"] and argv[2] in ("t5x.train", "t5x.eval", "t5x.infer")
  files, bindings = command_gin_files_and_bindings(argv)
  assert f"gin_configs/{name}" in files, f"{name}: its command does not run it: {files}"
  mode = argv[2].split(".")[1]
  missing = USER_MACROS[mode] - set(bindings)
  assert not missing, f"{name}: command must pass {sorted(missing)}"
  res = resolve(files, bindings)
  assert not res.problems, res.problems
  assert not res.required_left, f"{name}: %gin.REQUIRED left unset: {sorted(res.required_left)}"


def _runs_builtin_runner(gf: GinFile) -> bool:
  argv = run_command(gf)
  return bool(argv) and argv[2].startswith("dsbs.")


def test_include_only_files_have_no_command_and_are_included():
  included = set()
  for p in ours():
    included |= {n for _, n in parse_file(p).includes}
  for p in ours():
    gf = parse_file(p)
    if p.name in COMMAND_FILES or _runs_builtin_runner(gf):  # default.gin: dsbs.train's own
      continue
    assert run_command(gf) is None, f"{p.name}: an include-only file should not look runnable"
    assert f"gin_configs/{p.name}" in included, f"{p.name} is neither run nor included"


@pytest.mark.parametrize("name", TRAIN_FILES)
def test_train_config_picks_size_checkpoint_and_dataset(name):
  ds, size = name[:-4].split("_")
  gf = _parsed(name)
  assert [n for _, n in gf.includes] == [f"gin_configs/model_{size}.gin",
                                         "gin_configs/finetune.gin", f"gin_configs/data_{ds}.gin"]
  macros = {n: v for _, n, v in gf.macros}
  assert macros["INITIAL_CHECKPOINT_PATH"] == (
      f"gs://t5-data/pretrained_models/t5x/t5_1_1_{SIZES[size]}/checkpoint_1000000")
  model = _parsed(f"model_{size}.gin")
  assert f"t5x/examples/t5/t5_1_1/{SIZES[size]}.gin" in [n for _, n in model.includes]


@pytest.mark.parametrize("name", TRAIN_FILES)
def test_header_documents_the_values_the_includes_set(name):
  """The header repeats lengths and partitions: check them against the included files."""
  ds, size = name[:-4].split("_")
  text = (GIN_DIR / name).read_text()
  data = {n: v for _, n, v in _parsed(f"data_{ds}.gin").macros}
  model = {n: v for _, n, v in _parsed(f"model_{size}.gin").macros}
  assert f"TASK_FEATURE_LENGTHS = {data['TASK_FEATURE_LENGTHS']!r}" in text
  assert f"NUM_PARTITIONS = {model['NUM_PARTITIONS']}" in text
  assert f"every {data['EVAL_PERIOD']} steps" in text
  assert data["TRAIN_STEPS"] == 1_010_000 and "TRAIN_STEPS = 1_010_000" in text
  finetune = {n: v for _, n, v in _parsed("finetune.gin").macros}
  assert f"BATCH_SIZE = {finetune['BATCH_SIZE']}" in text


def test_partitioning_grows_with_model_size():
  parts = [dict((n, v) for _, n, v in _parsed(f"model_{s}.gin").macros)["NUM_PARTITIONS"]
           for s in SIZES]
  assert parts == sorted(parts) and parts[0] == 1 and parts[-1] >= 8


def test_loss_weighting_is_bound_to_the_feature_converter():
  student = _parsed("student.gin")
  bindings = {k: v for _, k, v in student.bindings}
  conv = bindings["models.EncoderDecoderModel.feature_converter_cls"]
  assert isinstance(conv, _Ref) and not conv.evaluate  # T5X calls the class with pack=...
  assert conv.name == "feature_converters.DsbsEncDecFeatureConverter"
  assert macro_refs(bindings["feature_converters.DsbsEncDecFeatureConverter.alpha"]) == {"LOSS_ALPHA"}
  macros = {n: v for _, n, v in student.macros}
  # AVERAGE_PER_SEQUENCE would renormalise each sequence and erase alpha (converter docstring).
  assert macros["LOSS_NORMALIZING_FACTOR"] == "NUM_REAL_TARGET_TOKENS"
  assert macros["LOSS_ALPHA"] == 0.5 and macros["LOSS_MODE"] == "paper"


def test_task_names_resolve_in_the_registry():
  seqio = pytest.importorskip("seqio")
  import dsbs.tasks  # pylint: disable=g-import-not-at-top,unused-import  (after the skip above)

  names = set()
  for p in ours():
    names |= {(p.name, n) for n in literal_task_names(p.read_text())}
  assert len({n for _, n in names}) >= 8, names  # defaults, examples, tiny
  for where, n in sorted(names):
    try:
      seqio.get_mixture_or_task(n)
    except ValueError as e:
      pytest.fail(f"{where}: {n!r} is not a registered task or mixture: {e}")


def test_vocabulary_matches_what_the_tasks_use():
  """T5X's eval refuses a model whose vocabulary differs from the task's; both come from here."""
  for size in SIZES:
    b = {k: v for _, k, v in _parsed(f"model_{size}.gin").bindings}
    assert b["vocab.get_vocabulary.spec"] == vocab.DEFAULT_SPEC
  tiny = {k: v for _, k, v in _parsed("model_smoke.gin").bindings}
  assert tiny["vocab.get_vocabulary.spec"] == "byte"
  assert tiny["network.T5Config.vocab_size"] >= vocab.get_vocabulary("byte").vocab_size


@pytest.mark.parametrize("name", TRAIN_FILES + ["smoke_offline.gin"])
def test_builtin_runner_reads_the_same_experiment(name):
  """dsbs.train reads these files too (dsbs.experiment): same task, lengths, steps, model."""
  exp = experiment.load([f"gin_configs/{name}"], search_path=[str(REPO)],
                        apply_runner_bindings=False)
  res = resolve([f"gin_configs/{name}"], {"MODEL_DIR": "'/tmp/x'"})
  assert exp.mixture_or_task_name == res.macro_values["MIXTURE_OR_TASK_NAME"]
  assert exp.task_feature_lengths == res.macro_values["TASK_FEATURE_LENGTHS"]
  assert exp.train_steps == res.macro_values["TRAIN_STEPS"]
  assert exp.loss_alpha == 0.5 and exp.loss_mode == "paper"
  if name == "smoke_offline.gin":
    assert exp.model_name == "smoke" and exp.initial_checkpoint_path is None
  else:
    assert exp.model_name == f"t5_1_1_{SIZES[name[:-4].split('_')[1]]}"
    assert exp.initial_checkpoint_path.endswith("/checkpoint_1000000")


def test_feature_lengths_cover_the_released_data(data_dir):
  """inputs/targets hold p99 of the released inputs and rationales at 4.2 chars per token."""
  chars_per_token, prefix_tokens = 4.2, 3
  splits = {"anli": ("anli1", "test"), "cqa": ("cqa", "test"), "esnli": ("esnli", "test"),
            "svamp": ("svamp", "test")}
  for ds, (name, split) in splits.items():
    lengths = {n: v for _, n, v in _parsed(f"data_{ds}.gin").macros}["TASK_FEATURE_LENGTHS"]
    examples = dsbs.data.load_examples(name, split, data_dir=data_dir)
    def p99(values):
      values = sorted(values)
      return values[int(0.99 * (len(values) - 1))]
    inp = p99([len(e.input) for e in examples]) / chars_per_token + prefix_tokens
    rat = p99([len(e.rationale) for e in examples if e.rationale]) / chars_per_token
    assert inp * 1.25 <= lengths["inputs"], (ds, inp, lengths)
    assert rat * 1.25 <= lengths["targets"], (ds, rat, lengths)

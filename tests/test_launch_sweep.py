"""launch/: sweep definitions (product / zip / chain, validation), stable cell names, the state
machine of the runner against a fake trainer (resume, kill -9, Ctrl-C once and twice, two
runners at once), run records, status, the T5X test-checkpoint helpers, the shipped sweeps."""
from __future__ import annotations

import dataclasses
import io as stdio
import json
import os
import pathlib
import re
import runpy
import shlex
import signal
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given, settings, strategies as st

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from dsbs import report  # pylint: disable=wrong-import-position
from launch import definition  # pylint: disable=wrong-import-position
from launch import engines  # pylint: disable=wrong-import-position
from launch import state as state_lib  # pylint: disable=wrong-import-position
from launch import sweep as sweep_lib  # pylint: disable=wrong-import-position
from launch import targets  # pylint: disable=wrong-import-position

pytestmark = pytest.mark.timeout(240)

DATASETS = lambda names=(): ["anli1", "arith", "cqa", "esnli", "svamp", "my_data"]  # noqa: E731
STUDENTS = lambda names=(): ["tiny", "t5_1_1_base", "t5_1_1_large"]  # noqa: E731


def _expand(config, path="def.py"):
  return definition.expand(config, path, known_datasets=DATASETS, known_students=STUDENTS)


def _cfg(**kw):
  c = {"name": "t", "grid": {"dataset": "arith", "method": ["finetune", "dsbs"],
                             "fraction": [25, 100], "seed": [0, 1]}}
  c.update(kw)
  return c


# ---- definitions ---------------------------------------------------------------------------

def test_mapping_is_a_product_with_the_seed_slowest():
  sweep = _expand(_cfg())
  assert len(sweep.cells) == 8 and sweep.collapsed == 0
  assert [c.overrides["seed"] for c in sweep.cells] == [0] * 4 + [1] * 4
  assert [c.name for c in sweep.cells[:4]] == [
      "arith-finetune-pct25-s0", "arith-dsbs-pct25-s0", "arith-finetune-pct100-s0",
      "arith-dsbs-pct100-s0"]
  assert sweep.cells[1].bindings == ("DATASET='arith'", "METHOD='dsbs'", "FRACTION=25.0",
                                     "RANDOM_SEED=0")


def test_product_zip_and_chain():
  grid = {"chain": [
      {"product": [{"dataset": "arith", "method": "dsbs"},
                   {"zip": [{"label_rate": [0.25, 0.75]}, {"alpha": [0.3, 0.7]}]},
                   {"seed": [0, 1]}]},
      {"dataset": "svamp", "method": "finetune", "student": "tiny",
       "gin": {"LEARNING_RATE": [0.001, 0.01]}},
  ]}
  sweep = _expand(_cfg(grid=grid, gin={"TRAIN_STEPS": 20}, gin_bindings=[
      "TrainConfig.eval_period = 5"]))
  got = [c.overrides for c in sweep.cells]
  assert got[:4] == [
      {"dataset": "arith", "method": "dsbs", "label_rate": 0.25, "alpha": 0.3, "seed": 0},
      {"dataset": "arith", "method": "dsbs", "label_rate": 0.25, "alpha": 0.3, "seed": 1},
      {"dataset": "arith", "method": "dsbs", "label_rate": 0.75, "alpha": 0.7, "seed": 0},
      {"dataset": "arith", "method": "dsbs", "label_rate": 0.75, "alpha": 0.7, "seed": 1}]
  assert got[4:] == [{"dataset": "svamp", "student": "tiny", "method": "finetune",
                      "gin.LEARNING_RATE": lr} for lr in (0.001, 0.01)]
  assert sweep.cells[0].name == "arith-dsbs-rate0.25-a0.3-s0"
  assert sweep.cells[5].name == "svamp-finetune-tiny-learning_rate0.01"
  assert sweep.cells[5].bindings == ("TRAIN_STEPS=20", "DATASET='svamp'", "METHOD='finetune'",
                                     "STUDENT='tiny'", "LEARNING_RATE=0.01",
                                     "TrainConfig.eval_period = 5")


def test_axes_a_single_task_method_ignores_collapse():
  sweep = _expand(_cfg(grid={"dataset": "arith", "method": ["finetune", "cot", "dsbs_llm"],
                             "label_rate": [0.25, 0.5], "alpha": [0.2, 0.8]}))
  # dsbs_llm: 2 rates x 2 a = 4 cells; finetune and cot: 1 each (3 of their 4 points merge).
  assert len(sweep.cells) == 6 and sweep.collapsed == 6
  assert {c.name for c in sweep.cells if "dsbs" not in c.name} == {"arith-finetune", "arith-cot"}


def test_gin_literals_for_every_value_kind():
  sweep = _expand(_cfg(grid={"dataset": "my_data", "method": "dsbs", "loss_mode": "tokens",
                             "engine": "dsbs", "gin": {"PACK": True, "INITIAL_CHECKPOINT_PATH":
                                                       None}},
                       gin={"TASK_FEATURE_LENGTHS": {"inputs": 82, "targets": 50},
                            "TRAIN_STEPS": 10}))
  (cell,) = sweep.cells
  assert cell.bindings == ("TASK_FEATURE_LENGTHS={'inputs': 82, 'targets': 50}",
                           "TRAIN_STEPS=10", "DATASET='my_data'", "METHOD='dsbs'",
                           "LOSS_MODE='tokens'", "INITIAL_CHECKPOINT_PATH=None", "PACK=True")


@pytest.mark.parametrize("patch,field,words", [
    ({"colour": 1}, "colour", "unknown key"),
    ({"name": "Bad_Name"}, "name", "lowercase"),
    ({"grid": {"dataset": "arith", "method": "dsbs", "lr": [1]}}, "grid.lr", "unknown axis"),
    ({"grid": {"dataset": "mnli", "method": "dsbs"}}, "grid.dataset", "unknown dataset 'mnli'"),
    ({"grid": {"dataset": "arith", "method": ["dsbs", "sft"]}}, "grid.method[1]",
     "unknown method 'sft'"),
    ({"grid": {"dataset": "arith", "method": "dsbs", "fraction": [50, 150]}},
     "grid.fraction[1]", "out of (0, 100]"),
    ({"grid": {"dataset": "arith", "method": "dsbs", "fraction": 0}}, "grid.fraction",
     "out of (0, 100]"),
    ({"grid": {"dataset": "arith", "method": "dsbs", "fraction": 12.3456789}}, "grid.fraction",
     "6 significant digits"),
    ({"grid": {"dataset": "arith", "method": "dsbs", "label_rate": 1.0}}, "grid.label_rate",
     "out of (0, 1)"),
    ({"grid": {"dataset": "arith", "method": "dsbs", "alpha": 1.5}}, "grid.alpha", "out of [0, 1]"),
    ({"grid": {"dataset": "arith", "method": "dsbs", "student": "t5_huge"}}, "grid.student",
     "unknown student 't5_huge'"),
    ({"grid": {"dataset": "arith", "method": "dsbs", "seed": -1}}, "grid.seed", "non-negative"),
    ({"grid": {"dataset": "arith", "method": "dsbs", "vocab": "spm"}}, "grid.vocab", ".model"),
    ({"grid": {"dataset": "arith", "method": "dsbs", "seed": []}}, "grid.seed", "empty"),
    ({"grid": {"dataset": "arith", "fraction": 10}}, "grid", "without 'method'"),
    ({"grid": {"zip": [{"dataset": "arith", "method": "dsbs", "seed": [0, 1]},
                       {"fraction": [1, 2, 3]}]}}, "grid.zip", "different numbers"),
    ({"grid": {"product": [{"dataset": "arith", "method": "dsbs"}, {"method": "cot"}]}},
     "grid.product", "axis 'method' is set by two"),
    ({"grid": {"product": []}}, "grid.product", "non-empty list"),
    ({"grid": {"dataset": "arith", "method": "dsbs", "gin": {"lr": 1}}}, "grid.gin.lr",
     "upper case"),
    ({"gin": {"MIXTURE_OR_TASK_NAME": "x"}}, "gin.MIXTURE_OR_TASK_NAME", "derived"),
    ({"gin": {"DATASET": "arith"}}, "gin.DATASET", "'dataset' axis"),
    ({"gin_bindings": ["TRAIN_STEPS = 3"]}, "gin_bindings[0]", "Configurable.param"),
    ({"engine": "pytorch"}, "engine", "not one of"),
    ({"gin_file": "gin_configs/nope.gin"}, "gin_file", "does not exist"),
])
def test_bad_definitions_fail_naming_the_field(patch, field, words):
  with pytest.raises(definition.SweepError) as e:
    _expand(_cfg(**patch))
  assert e.value.field == field, str(e.value)
  assert words in str(e.value) and str(e.value).startswith("def.py: ")


def test_definition_files(tmp_path):
  good = tmp_path / "good.py"
  good.write_text("import ml_collections\n\ndef get_config():\n"
                  "  c = ml_collections.ConfigDict()\n  c.name = 'g'\n"
                  "  c.grid = {'dataset': 'arith', 'method': ['dsbs', 'cot'], 'seed': (0, 1)}\n"
                  "  return c\n")
  sweep = definition.load(str(good), known_datasets=DATASETS, known_students=STUDENTS)
  assert len(sweep.cells) == 4 and sweep.name == "g" and sweep.target == "local"
  for text, words in (("x = 1\n", r"neither get_config\(\) nor get_sweep\(\)"),
                      ("def get_sweep():\n  raise KeyError('k')\n", "raised KeyError"),
                      ("def get_config():\n  return 3\n", "not a ConfigDict")):
    bad = tmp_path / "bad.py"
    bad.write_text(text)
    with pytest.raises(definition.SweepError, match=words):
      definition.load(str(bad))
  with pytest.raises(definition.SweepError, match="Python file"):
    definition.load(str(tmp_path / "old.json"))


def test_registry_lookups_are_real():
  """Without injected registries: the built-in datasets need no SeqIO; the student list is
  dsbs.model's."""
  sweep = definition.expand(_cfg(grid={"dataset": "arith", "method": "dsbs",
                                       "student": "smoke"}), "d.py")
  assert sweep.cells[0].name == "arith-dsbs-smoke"
  with pytest.raises(definition.SweepError, match="unknown student 'huge'.*t5_1_1_base"):
    definition.expand(_cfg(grid={"dataset": "arith", "method": "dsbs", "student": "huge"}))


# ---- names ---------------------------------------------------------------------------------

def test_names_are_canonical_and_order_free():
  a = {"dataset": "arith", "method": "dsbs", "alpha": 0.1 + 0.2, "fraction": 100.0, "seed": 2}
  b = {"seed": 2, "fraction": 100, "alpha": 0.30000000000000004, "method": "dsbs",
       "dataset": "arith"}
  assert definition.cell_name_of(a) == definition.cell_name_of(b)
  # 0.1 + 0.2 is not 0.3: the names differ only by the hash of the exact value.
  assert definition.cell_name_of(a).startswith("arith-dsbs-pct100-a0.3-s2-")
  assert definition.cell_name_of({**a, "alpha": 0.3}) == "arith-dsbs-pct100-a0.3-s2"
  assert definition.cell_name_of({"dataset": "arith", "method": "dsbs", "fraction": 12.5,
                                  "gin.LEARNING_RATE": 1e-5}) == \
      "arith-dsbs-pct12.5-learning_rate0.00001"
  assert definition.canonical_number(1e-5) == ("0.00001", True)
  assert definition.canonical_number(2.0) == ("2", True)
  odd = definition.cell_name_of({"dataset": "arith", "method": "dsbs",
                                 "gin.INITIAL_CHECKPOINT_PATH": "gs://b/T5X ckpt"})
  assert odd.startswith("arith-dsbs-initial_checkpoint_path") and len(odd.split("-")[-1]) == 8
  long = definition.cell_name_of({"dataset": "arith", "method": "dsbs",
                                  **{f"gin.M{i}": 123456 for i in range(20)}})
  assert len(long) <= definition.MAX_NAME


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "dataset": st.sampled_from(["arith", "svamp"]),
    "method": st.sampled_from(definition.METHODS),
    "alpha": st.floats(0, 1), "fraction": st.floats(0.001, 100),
    "seed": st.integers(0, 3),
    "gin.X": st.one_of(st.text(max_size=6), st.integers(), st.none())}), min_size=2,
    max_size=6))
def test_names_are_filesystem_safe_and_unique(cells):
  names = {}
  for c in cells:
    name = definition.cell_name_of(c)
    assert len(name) <= definition.MAX_NAME
    assert all(ch.isalnum() or ch in "._-" for ch in name) and name == name.lower()
    assert name == definition.cell_name_of(dict(reversed(list(c.items()))))
    names.setdefault(name, set()).add(definition.canonical_json(c))
  assert all(len(v) == 1 for v in names.values())


# ---- state transitions (units) ------------------------------------------------------------

def _dead_runner():
  return {"host": state_lib.socket.gethostname(), "pid": 2 ** 22 + 7, "proc_start": "1",
          "heartbeat": 0, "token": "dead"}


def test_state_claim_finish_and_interrupted(tmp_path):
  st_ = state_lib.SweepState(str(tmp_path))
  me = state_lib.identity()
  spec = [{"name": n, "overrides": {"seed": i}, "bindings": [], "run_dir": f"/r/{n}",
           "identity": n} for i, n in enumerate(["a", "b", "c"])]
  with st_.update(create={"sweep": "t"}) as data:
    data["runners"] = {me["token"]: me, "dead": _dead_runner()}
    state_lib.sync_cells(data, spec, allow_changes=False)
    assert state_lib.claim(data, "a", me) is None
    assert state_lib.claim(data, "a", me).startswith("running under")
    state_lib.finish(data, "a", state_lib.DONE, 0)
    assert state_lib.claim(data, "a", me) == "done"
    data["cells"]["b"].update(status=state_lib.RUNNING, owner="dead", attempts=1)
  data = st_.read()
  assert state_lib.counts(data) == {"pending": 1, "running": 0, "done": 1, "failed": 0,
                                    "interrupted": 1}
  with st_.update() as data:
    assert state_lib.claim(data, "b", me) is None  # the dead runner's cell is taken over
    assert data["cells"]["b"]["attempts"] == 2 and data["cells"]["b"]["run_dir"] == "/r/b"
    state_lib.finish(data, "b", state_lib.FAILED, 3, "phase train exited with 3")
  cell = st_.read()["cells"]["b"]
  assert cell["status"] == "failed" and cell["history"][-1]["exit_code"] == 3
  with pytest.raises(state_lib.StateError, match="--update"):
    with st_.update() as data:
      state_lib.sync_cells(data, [{**spec[0], "identity": "changed"}], allow_changes=False)
  with st_.update() as data:
    assert state_lib.sync_cells(data, [{**spec[0], "identity": "changed"}],
                                allow_changes=True) == ["a"]
  data = st_.read()
  assert data["cells"]["a"]["status"] == "pending" and not data["cells"]["c"]["in_definition"]


# ---- the runner against a fake trainer ------------------------------------------------------

FAKE = '''#!{python}
"""Stands in for `python -m dsbs.train`: counts its invocations in the run dir, sleeps, and
writes test metrics, as the plan file beside it says for the cell (keys: fnmatch patterns)."""
import fnmatch, json, os, pathlib, sys, time
args = sys.argv[1:]
assert args[:2] == ["-m", "dsbs.train"], args
run = pathlib.Path(next(a.split("=", 1)[1] for a in args if a.startswith("--model_dir=")))
run.mkdir(parents=True, exist_ok=True)
plan = json.loads(pathlib.Path(__file__).with_name("plan.json").read_text())
todo = {{}}
for pattern, what in plan.items():
  if fnmatch.fnmatch(run.name, pattern):
    todo.update(what)
with open(run / "invocations", "a") as f:
  f.write(f"start {{os.getpid()}}\\n")
n = sum(1 for l in open(run / "invocations") if l.startswith("start"))
time.sleep(todo.get("sleep", 0.0))
if n <= todo.get("fail_first", 0):
  sys.exit(todo.get("exit", 3))
binds = dict(a[len("--gin."):].split("=", 1) for a in args if a.startswith("--gin."))
(run / "experiment.json").write_text(json.dumps({{"bindings": binds}}))
if todo.get("metrics", True) and "--then_evaluate" in args:
  acc = 30 + 10 * ("dsbs" in binds["METHOD"]) + float(binds.get("FRACTION", 100)) / 10
  (run / "eval" / "test_greedy").mkdir(parents=True, exist_ok=True)
  (run / "eval" / "test_greedy" / "metrics.json").write_text(
      json.dumps({{"metrics": {{"accuracy": acc}}}}))
with open(run / "invocations", "a") as f:
  f.write("end\\n")
'''


@pytest.fixture()
def fake(tmp_path):
  """(definition path, sweep dir, set_plan) for a 3-cell sweep on the fake trainer."""
  exe = tmp_path / "fake_python"
  exe.write_text(FAKE.format(python=sys.executable))
  exe.chmod(0o755)
  plan = tmp_path / "plan.json"

  def set_plan(p):
    plan.write_text(json.dumps(p))

  set_plan({"*": {"sleep": 0.0}})
  defn = tmp_path / "def.py"
  defn.write_text(textwrap.dedent(f"""
      import ml_collections
      def get_config():
        c = ml_collections.ConfigDict()
        c.name = "fake"
        c.python = {str(exe)!r}
        c.gin = {{"TRAIN_STEPS": 5}}
        c.grid = {{"dataset": "arith", "method": ["finetune", "dsbs", "distill"]}}
        return c
      """))
  return str(defn), str(tmp_path / "sweep"), set_plan


def _runner(defn, sweep_dir, **kw):
  sweep = definition.load(defn, known_datasets=DATASETS, known_students=STUDENTS)
  out = kw.pop("out", stdio.StringIO())
  return sweep_lib.Runner(sweep, sweep_dir, targets.LocalTarget(), out=out, **kw)


def _starts(sweep_dir):
  runs = pathlib.Path(sweep_dir, "runs")
  return {d.name: (d / "invocations").read_text().count("start") for d in sorted(runs.iterdir())
          if (d / "invocations").exists()}


def _cells(sweep_dir):
  data = state_lib.SweepState(sweep_dir).read()
  return {k: {**v, "effective": state_lib.effective_status(data, v)}
          for k, v in data["cells"].items()}


def test_failed_cell_reruns_in_its_run_dir_and_done_cells_never(fake):
  defn, sweep_dir, set_plan = fake
  set_plan({"*": {"sleep": 0.0}, "arith-dsbs": {"fail_first": 1, "exit": 7}})
  out = stdio.StringIO()
  assert _runner(defn, sweep_dir, out=out).run() == 1
  cells = _cells(sweep_dir)
  assert {k: v["status"] for k, v in cells.items()} == {
      "arith-finetune": "done", "arith-dsbs": "failed", "arith-distill": "done"}
  assert cells["arith-dsbs"]["exit_code"] == 7
  assert "phase train+test exited with 7" in cells["arith-dsbs"]["reason"]
  log = pathlib.Path(sweep_dir, "logs", "arith-dsbs.log").read_text()
  assert "dsbs.train" in log and "--model_dir=" in log
  text = out.getvalue()
  assert "done 1/3" in text and "ETA" in text and "mean" in text
  assert _runner(defn, sweep_dir).run() == 0
  assert _starts(sweep_dir) == {"arith-finetune": 1, "arith-dsbs": 2, "arith-distill": 1}
  cell = _cells(sweep_dir)["arith-dsbs"]
  assert cell["attempts"] == 2 and [h["status"] for h in cell["history"]] == ["failed", "done"]
  out = stdio.StringIO()
  assert _runner(defn, sweep_dir, out=out).run() == 0  # all done: nothing starts
  assert "skipping 3 done" in out.getvalue()
  assert _starts(sweep_dir) == {"arith-finetune": 1, "arith-dsbs": 2, "arith-distill": 1}


def test_exit_zero_without_test_metrics_is_a_failure(fake):
  defn, sweep_dir, set_plan = fake
  set_plan({"*": {"metrics": False}})
  assert _runner(defn, sweep_dir, only="finetune").run() == 1
  cell = _cells(sweep_dir)["arith-finetune"]
  assert cell["status"] == "failed" and f"no {report.TEST_METRICS}" in cell["reason"]
  assert _cells(sweep_dir)["arith-dsbs"]["status"] == "pending"  # --only


def test_run_record(fake):
  defn, sweep_dir, _ = fake
  assert _runner(defn, sweep_dir, only="dsbs").run() == 0
  run_dir = pathlib.Path(sweep_dir, "runs", "arith-dsbs")
  rec = json.loads((run_dir / "run_record.json").read_text())
  assert rec["sweep"] == "fake" and rec["cell"] == "arith-dsbs"
  assert rec["overrides"] == {"dataset": "arith", "method": "dsbs"}
  assert rec["gin_bindings"] == ["TRAIN_STEPS=5", "DATASET='arith'", "METHOD='dsbs'"]
  assert rec["engine"] == "dsbs" and rec["target"]["target"] == "local"
  assert rec["target"]["host"] == state_lib.socket.gethostname()
  assert len(rec["git"]["commit"]) == 40 and isinstance(rec["git"]["dirty"], bool)
  assert rec["status"] == "done" and rec["exit_code"] == 0 and rec["attempt"] == 1
  assert rec["started"].endswith("Z") and rec["ended"] >= rec["started"]
  assert rec["commands"][0][1:3] == ["-m", "dsbs.train"]
  assert f"--model_dir={run_dir}" in rec["commands"][0] and "--then_evaluate" in rec["commands"][0]
  assert rec["phases"][0]["exit_code"] == 0
  assert rec["experiment_file"] == "experiment.json"
  assert rec["experiment"]["bindings"]["METHOD"] == "'dsbs'"
  assert pathlib.Path(sweep_dir, "definition.py").read_text() == pathlib.Path(defn).read_text()


def _spawn(defn, sweep_dir, *extra):
  return subprocess.Popen(
      [sys.executable, "-m", "launch.sweep", "run", defn, f"--sweep_dir={sweep_dir}", *extra],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(predicate, timeout=90.0, what="condition"):
  end = time.time() + timeout
  while time.time() < end:
    try:
      if predicate():
        return
    except (state_lib.StateError, FileNotFoundError):
      pass
    time.sleep(0.05)
  raise AssertionError(f"timed out waiting for {what}")


def _gone(pid):
  return not state_lib.process_alive(pid, None)


def _trainer_pids(sweep_dir):
  pids = []
  for d in pathlib.Path(sweep_dir, "runs").iterdir():
    f = d / "invocations"
    if f.exists():
      pids += [int(l.split()[1]) for l in f.read_text().splitlines() if l.startswith("start")]
  return pids


def test_kill_9_then_resume_reruns_only_the_interrupted_cells(fake):
  defn, sweep_dir, set_plan = fake
  set_plan({"*": {"sleep": 1.5}, "arith-finetune": {"sleep": 0.0}})
  proc = _spawn(defn, sweep_dir, "--max_parallel=2")
  try:
    _wait(lambda: [c["status"] for c in _cells(sweep_dir).values()].count("done") == 1
          and len(_starts(sweep_dir)) == 3, what="one cell done, two trainers running")
  finally:
    proc.kill()
    proc.communicate()
  # The runner's death took its trainers with it (no second writer in a resumed run dir).
  _wait(lambda: all(_gone(p) for p in _trainer_pids(sweep_dir)), 30, "orphaned trainers to end")
  cells = _cells(sweep_dir)
  assert cells["arith-finetune"]["effective"] == "done"
  assert {cells[n]["effective"] for n in ("arith-dsbs", "arith-distill")} == {"interrupted"}
  status = sweep_lib.status_text(sweep_dir)
  assert "interrupted 2" in status and "its runner is gone" in status
  set_plan({"*": {"sleep": 0.0}})
  assert _runner(defn, sweep_dir).run() == 0
  assert _starts(sweep_dir) == {"arith-finetune": 1, "arith-dsbs": 2, "arith-distill": 2}
  assert all(c["status"] == "done" for c in _cells(sweep_dir).values())


def test_ctrl_c_once_finishes_the_running_cell_and_starts_no_other(fake):
  defn, sweep_dir, set_plan = fake
  set_plan({"*": {"sleep": 1.0}})
  proc = _spawn(defn, sweep_dir)
  _wait(lambda: _starts(sweep_dir), what="the first cell to start")
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 130, out
  assert "Ctrl-C: starting no new cells" in out
  cells = _cells(sweep_dir)
  assert cells["arith-finetune"]["status"] == "done"
  assert [cells[n]["status"] for n in ("arith-dsbs", "arith-distill")] == ["pending"] * 2
  assert _starts(sweep_dir) == {"arith-finetune": 1}


def test_ctrl_c_twice_ends_the_running_cell_and_the_state_resumes(fake):
  defn, sweep_dir, set_plan = fake
  set_plan({"*": {"sleep": 30.0}})
  proc = _spawn(defn, sweep_dir)
  _wait(lambda: _cells(sweep_dir)["arith-finetune"]["pid"], what="the first trainer")
  proc.send_signal(signal.SIGINT)
  time.sleep(0.3)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 130, out
  cells = _cells(sweep_dir)
  assert cells["arith-finetune"]["status"] == "interrupted", out
  assert "ended by the sweep runner" in cells["arith-finetune"]["reason"]
  assert [cells[n]["status"] for n in ("arith-dsbs", "arith-distill")] == ["pending"] * 2
  assert all(_gone(p) for p in _trainer_pids(sweep_dir))
  rec = json.loads(pathlib.Path(sweep_dir, "runs", "arith-finetune", "run_record.json")
                   .read_text())
  assert rec["status"] == "interrupted"
  set_plan({"*": {"sleep": 0.0}})
  assert _runner(defn, sweep_dir).run() == 0
  assert _starts(sweep_dir) == {"arith-finetune": 2, "arith-dsbs": 1, "arith-distill": 1}


def test_two_runners_on_one_sweep_run_each_cell_once(fake):
  defn, sweep_dir, set_plan = fake
  set_plan({"*": {"sleep": 0.5}})
  procs = [_spawn(defn, sweep_dir) for _ in range(2)]
  outs = [p.communicate(timeout=120)[0] for p in procs]
  assert sorted(p.returncode for p in procs) in ([0, 0], [0, 1]), outs
  assert _starts(sweep_dir) == {"arith-finetune": 1, "arith-dsbs": 1, "arith-distill": 1}
  assert all(c["status"] == "done" for c in _cells(sweep_dir).values())


def test_status_is_fast_and_lists_each_kind(fake, tmp_path):
  defn, sweep_dir, set_plan = fake
  set_plan({"*": {}, "arith-dsbs": {"fail_first": 5}})
  _runner(defn, sweep_dir, only="finetune|dsbs").run()
  code = ("import sys; from launch import sweep; rc = sweep.main(['status', sys.argv[1]]); "
          "print('heavy:', sorted(m for m in ('seqio', 'jax', 'tensorflow', 'ml_collections') "
          "if m in sys.modules)); sys.exit(rc)")
  out = subprocess.run([sys.executable, "-c", code, sweep_dir], cwd=REPO, capture_output=True,
                       text=True, timeout=60, check=True).stdout
  assert "3 cells; pending 1, running 0, done 1, failed 1, interrupted 0" in out
  assert "failed:\n  arith-dsbs  (attempt 1, exit 3: phase train+test exited with 3)" in out
  assert "pending:\n  arith-distill  (never started)" in out
  assert "done:\n  arith-finetune  (attempt 1, took" in out
  assert "heavy: []" in out
  bad = subprocess.run([sys.executable, "-m", "launch.sweep", "status", str(tmp_path / "none")],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2 and "no sweep state here" in bad.stderr


def test_changed_definition_needs_update(fake):
  defn, sweep_dir, _ = fake
  assert _runner(defn, sweep_dir, only="finetune").run() == 0  # every selected cell done
  text = pathlib.Path(defn).read_text().replace('"TRAIN_STEPS": 5', '"TRAIN_STEPS": 9')
  pathlib.Path(defn).write_text(text)
  with pytest.raises(state_lib.StateError, match="changed for 3 cell"):
    _runner(defn, sweep_dir)._register()  # pylint: disable=protected-access
  assert _runner(defn, sweep_dir, update=True, only="finetune").run() == 0
  assert _starts(sweep_dir) == {"arith-finetune": 2}  # done before, ran again for the change


@pytest.mark.parametrize("body,message", [
    ("{'name': 'b', 'grid': {'dataset': 'arith', 'method': 'dsbs', 'fraction': 101}}",
     "bad.py: grid.fraction: 101 is out of (0, 100]"),
    ("{'name': 'b', 'target': 'tpu', 'tpu': {'zone': 'z', 'accelerator': 'v4-8'}, "
     "'grid': {'dataset': 'arith', 'method': 'dsbs'}}",
     "bad.py: run_root: the tpu target needs run_root = 'gs://BUCKET/...'"),
    ("{'name': 'b', 'target': 'slurm', 'grid': {'dataset': 'arith', 'method': 'dsbs'}}",
     "bad.py: target: unknown target 'slurm' (targets: local, tpu)"),
])
def test_cli_stops_before_anything_runs(tmp_path, capsys, body, message):
  bad = tmp_path / "bad.py"
  bad.write_text(f"def get_config():\n  return {body}\n")
  assert sweep_lib.main(["run", str(bad), f"--sweep_dir={tmp_path / 's'}"]) == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "s").exists()


# ---- engines -------------------------------------------------------------------------------

def test_t5x_phases_pick_the_best_validation_checkpoint(tmp_path):
  run = tmp_path / "run"
  for step in (1000, 2000, 3000):
    (run / f"checkpoint_{step}").mkdir(parents=True)
  ev = run / "inference_eval"
  ev.mkdir()
  (ev / "anli1_label_gt-metrics.jsonl").write_text("".join(
      json.dumps({"step": s, "accuracy": a}) + "\n"
      for s, a in ((1000, 40.0), (2000, 55.0), (3000, 50.0), (4000, 60.0))))
  best = engines.best_t5x_checkpoint(str(run))
  assert best["step"] == 2000 and best["checkpoint"].endswith("checkpoint_2000")  # 4000: gone
  sweep = _expand(_cfg(engine="t5x", grid={"dataset": "anli1", "method": "dsbs",
                                           "student": "t5_1_1_large"}))
  (cell,) = sweep.cells
  assert cell.name == "anli1-dsbs-t5_1_1_large-t5x"
  train, test = engines.phases(sweep, cell, str(run), "py")
  assert train.argv()[:4] == ["py", "-m", "t5x.train", "--gin_file=gin_configs/anli_770m.gin"]
  assert f"--gin.MODEL_DIR={str(run)!r}" in train.argv()
  argv = test.argv()
  assert argv[:5] == ["py", "-m", "t5x.eval", "--gin_file=gin_configs/model_770m.gin",
                      "--gin_file=gin_configs/eval.gin"]
  assert f"--gin.CHECKPOINT_PATH={str(run / 'checkpoint_2000')!r}" in argv
  out = run / "test_eval" / "inference_eval"
  out.mkdir(parents=True)
  (out / "anli1_label_gt-metrics.jsonl").write_text(json.dumps({"step": 2000, "accuracy": 52.5})
                                                    + "\n")
  test.finish()
  got = json.loads((run / report.TEST_METRICS).read_text())
  assert got["metrics"] == {"anli1_label_gt/accuracy": 52.5, "accuracy": 52.5}
  assert got["step"] == 2000 and got["engine"] == "t5x"
  with pytest.raises(engines.EngineError, match="no checkpoint"):
    engines.best_t5x_checkpoint(str(tmp_path))


# ---- the shipped sweeps -------------------------------------------------------------------

def _trainer_commands(out: str) -> list[list[str]]:
  """The commands of a dry run: each line of a local sweep's; what each TPU worker runs (after
  worker.sh's `--`) in a tpu sweep's gcloud script."""
  commands = []
  for line in out.splitlines():
    if line.startswith("gcloud compute tpus tpu-vm ssh") and "dsbs-run" in line:
      remote = shlex.split(shlex.split(line)[-1][len("--command="):])
      commands.append(remote[remote.index("--") + 1:])
    elif "-m " in line and not line.startswith(("#", "gcloud ", "git ", " ")):
      commands.append(shlex.split(line))
  return commands


def test_shipped_sweeps_dry_run(capsys, monkeypatch):
  from launch import tpu  # pylint: disable=g-import-not-at-top
  clean_only = tpu.code_state  # the checkout may have uncommitted changes while tests run
  monkeypatch.setattr(tpu, "code_state",
                      lambda job: clean_only(dataclasses.replace(job, allow_dirty=True)))
  expected = {"tiny_local.py": (8, 8), "arith_paper.py": (54, 54), "main_job.py": (6, 6),
              "anli_v5e_spot.py": (9, 18),
              "anli_rate_x_pct.py": (96, 192), "paper_methods.py": (120, 240)}
  for path in sorted((REPO / "launch" / "sweeps").glob("*.py")):
    assert sweep_lib.main(["run", str(path), "--dry_run"]) == 0
    out = capsys.readouterr().out
    cells, commands = expected.pop(path.name)
    assert len(re.findall(r"^# \S+  \(\S+\)$", out, re.M)) == cells, path
    assert len(_trainer_commands(out)) == commands, path  # T5X cells: train, then test
    for argv in _trainer_commands(out):
      gin_files = [a.split("=", 1)[1] for a in argv if a.startswith("--gin_file=")]
      assert gin_files and all((REPO / f).exists() for f in gin_files), argv
      assert not any("MIXTURE_OR_TASK_NAME" in a for a in argv)
    if "tpu-vm create" in out:
      assert out.count("tpu-vm create") == out.count("tpu-vm delete") == cells
      assert {argv[0] for argv in _trainer_commands(out)} == {"python3"}
  assert not expected
  paper = definition.load(str(REPO / "launch" / "sweeps" / "arith_paper.py"))
  assert {c.overrides["method"] for c in paper.cells} == {"finetune", "distill", "dsbs",
                                                          "dsbs_llm"}
  assert sorted({c.overrides["fraction"] for c in paper.cells}) == [12.5, 25, 50, 100]
  assert {c.overrides["seed"] for c in paper.cells} == {0, 1, 2}
  module = runpy.run_path(str(REPO / "launch" / "sweeps" / "arith_paper.py"))
  budget, parity_steps = module["TRAIN_STEPS"], module["PARITY_STEPS"]
  assert all({"DATASET='arith'", "VOCAB='byte'", "STUDENT='default_student'"} <= set(c.bindings)
             for c in paper.cells)
  # Every method at one step budget; finetune and dsbs again on 100% at twice it.
  steps = [[b for b in c.bindings if b.startswith("TRAIN_STEPS=")] for c in paper.cells]
  assert all(len(s) == 1 for s in steps)
  parity = [c for c, s in zip(paper.cells, steps) if s != [f"TRAIN_STEPS={budget}"]]
  assert parity_steps == 2 * budget and all(s in ([f"TRAIN_STEPS={budget}"],
                                                  [f"TRAIN_STEPS={parity_steps}"]) for s in steps)
  assert sorted((c.overrides["method"], c.overrides["fraction"], c.overrides["seed"])
                for c in parity) == [(m, 100, s) for m in ("dsbs", "finetune") for s in (0, 1, 2)]
  assert len(paper.cells) - len(parity) == 4 * 4 * 3


def test_the_main_job_and_its_sweep_train_what_the_paper_sweep_cells_do():
  """`python -m dsbs.train` (default.gin alone) is arith_paper's 25% dsbs seed-0 cell, and each
  main_job.py cell is the arith_paper cell of its method and seed: the README's main-job figures
  are those cells'."""
  from dsbs import experiment  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top

  def resolved(bindings):
    try:
      exp = experiment.load([str(REPO / "gin_configs" / "default.gin")], bindings).experiment
    finally:
      gin.clear_config()
    return dataclasses.asdict(exp)

  paper = definition.load(str(REPO / "launch" / "sweeps" / "arith_paper.py"))
  main = definition.load(str(REPO / "launch" / "sweeps" / "main_job.py"))
  assert main.gin_files(main.cells[0]) == paper.gin_files(paper.cells[0])
  by_key = {(c.overrides["method"], c.overrides["seed"]): c for c in paper.cells
            if c.overrides["fraction"] == 25}
  assert resolved([]) == resolved(list(by_key[("dsbs", 0)].bindings))
  assert len(main.cells) == 6
  for cell in main.cells:
    twin = by_key[(cell.overrides["method"], cell.overrides["seed"])]
    assert resolved(list(cell.bindings)) == resolved(list(twin.bindings)), cell.name


# ---- end to end with the real trainer ------------------------------------------------------

@pytest.mark.timeout(900)
def test_tiny_sweep_end_to_end_with_the_real_trainer(tmp_path):
  """Two cells of tiny_local through `dsbs.train --then_evaluate`, resumed once, reported."""
  defn = tmp_path / "tiny.py"
  defn.write_text((REPO / "launch" / "sweeps" / "tiny_local.py").read_text().replace(
      '"seed": [0, 1]', '"seed": [0]').replace('"fraction": [25, 100]', '"fraction": [25]')
      .replace('"TRAIN_STEPS": 20', '"TRAIN_STEPS": 4').replace('"EVAL_PERIOD": 10',
                                                              '"EVAL_PERIOD": 2'))
  sweep_dir = tmp_path / "sweep"
  env = {**os.environ, "DSBS_COMPILATION_CACHE_DIR": "none"}
  proc = subprocess.run([sys.executable, "-m", "launch.sweep", "run", str(defn),
                         f"--sweep_dir={sweep_dir}"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  cells = _cells(str(sweep_dir))
  assert set(cells) == {"arith-finetune-pct25-byte-default_student-s0",
                        "arith-dsbs-pct25-byte-default_student-s0"}
  for name in cells:
    run = sweep_dir / "runs" / name
    exp = json.loads((run / "experiment.json").read_text())
    assert "finetune" in json.dumps(exp) if "finetune" in name else "dsbs" in json.dumps(exp)
    metrics = json.loads((run / report.TEST_METRICS).read_text())
    assert 0 <= metrics["metrics"]["accuracy"] <= 100
    rec = json.loads((run / "run_record.json").read_text())
    assert rec["status"] == "done" and rec["experiment"]
  again = subprocess.run([sys.executable, "-m", "launch.sweep", "run", str(defn),
                          f"--sweep_dir={sweep_dir}"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
  assert again.returncode == 0 and "skipping 2 done" in again.stdout
  assert report.main([str(sweep_dir)]) == 0
  summary = json.loads((sweep_dir / "report" / "report.json").read_text())
  assert sorted(c["cell"] for c in summary["cells"] if c["accuracy"] is not None) == sorted(cells)
  assert {g["axes"]["method"] for g in summary["groups"]} == {"finetune", "dsbs"}
  # Exported (records without checkpoints), the sweep reports the same and resumes from the copy.
  kept = tmp_path / "kept"
  assert sweep_lib.main(["export", str(sweep_dir), str(kept)]) == 0
  for name in cells:
    run = kept / "runs" / name
    assert {p.name for p in run.iterdir()} >= {"run_record.json", "experiment.json",
                                                "metrics.jsonl", "eval"}
    assert (run / report.TEST_METRICS).exists() and (run / report.TEST_PREDICTIONS).exists()
    assert not (run / "checkpoints").exists() and not (run / "tb").exists()
    rec = json.loads((run / "run_record.json").read_text())
    assert rec["run_dir"] == f"runs/{name}" and rec["git"]["checkout"] == "."
  for path in kept.rglob("*"):  # paths relative to the sweep dir and to the checkout that ran
    if path.is_file():
      text = path.read_text()
      assert str(sweep_dir) not in text and str(REPO) not in text, path
  assert report.main([str(kept), "--output", str(tmp_path / "kept_report")]) == 0
  copied = json.loads((tmp_path / "kept_report" / "report.json").read_text())
  assert ({c["cell"]: c["accuracy"] for c in copied["cells"]}
          == {c["cell"]: c["accuracy"] for c in summary["cells"]})
  shutil.rmtree(sweep_dir)
  shutil.copytree(kept, sweep_dir)  # another machine, the sweep dir at the same path
  again = subprocess.run([sys.executable, "-m", "launch.sweep", "run", str(defn),
                          f"--sweep_dir={sweep_dir}"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
  assert again.returncode == 0 and "skipping 2 done" in again.stdout, again.stdout
  assert not any((sweep_dir / "runs" / name / "checkpoints").exists() for name in cells)
  assert sweep_lib.main(["export", str(sweep_dir), str(sweep_dir)]) == 2


def test_only_selects_cells_in_a_dry_run_and_a_bad_pattern_is_one_line(capsys):
  path = str(REPO / "launch" / "sweeps" / "arith_paper.py")
  assert sweep_lib.main(["run", path, "--dry_run", "--only=-(finetune|dsbs)-pct50-"]) == 0
  out = capsys.readouterr().out
  names = re.findall(r"^# (\S+)  \(", out, re.M)
  assert "54 cells, 6 selected by --only" in out
  assert sorted(names) == sorted(f"arith-{m}-pct50-byte-default_student-s{s}"
                                 for m in ("finetune", "dsbs") for s in (0, 1, 2))
  assert sweep_lib.main(["run", path, "--dry_run", "--only=pct("]) == 2
  assert "--only=pct(: not a regular expression" in capsys.readouterr().err
  assert sweep_lib.main(["run", path, "--only=-pct33-"]) == 2
  assert "matches none of the 54 cells of arith-paper" in capsys.readouterr().err

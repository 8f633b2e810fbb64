"""Every shipped gin config binds under the REAL T5X (skipped where T5X is not installed).

Each T5X entry point imports its run script as `__main__` inside the gin files
(`import __main__ as train_script`), so each mode is parsed in its own subprocess with that
module installed as `__main__`, with `skip_unknown=False` and `finalize_config=True`, exactly as
`python -m t5x.<mode>` parses them. Setup of T5X for these tests: gin_configs/README.md.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from test_gin_configs import (COMMAND_FILES, GIN_DIR, REPO, T5X_INCLUDES, TRAIN_FILES,
                              command_gin_files_and_bindings, parse_file, run_command)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("t5x") is None,
    reason="T5X is not installed (not on PyPI): pip install it from GitHub to run these, "
           "see gin_configs/README.md")

_PARSE = r"""
import importlib, json, os, sys
mode, cases = sys.argv[1], json.loads(sys.argv[2])
sys.modules["__main__"] = importlib.import_module("t5x." + mode)
import gin
from t5x import gin_utils
t5x_root = os.path.dirname(os.path.dirname(importlib.import_module("t5x").__file__))
out = {}
for name, files, bindings in cases:
  gin.clear_config()
  try:
    gin_utils.parse_gin_flags([".", t5x_root], files, bindings, skip_unknown=False,
                              finalize_config=True)
    q = lambda k: repr(gin.query_parameter(k))
    task = gin.query_parameter("%MIXTURE_OR_TASK_NAME")
    if hasattr(task, "scoped_configurable_fn"):  # @dsbs.tasks.mixture(): T5X evaluates it
      task = task.scoped_configurable_fn()
    out[name] = {
        "task": task,
        "converter": q("models.EncoderDecoderModel.feature_converter_cls"),
        "partitions": gin.query_parameter("%NUM_PARTITIONS"),
        "partitions_binding": q("partitioning.PjitPartitioner.num_partitions"),
        "vocab": q("models.EncoderDecoderModel.input_vocabulary"),
        "spec": gin.query_parameter("vocab.get_vocabulary.spec"),
        "lnf": gin.query_parameter("%LOSS_NORMALIZING_FACTOR"),
        "dropout": gin.query_parameter("%DROPOUT_RATE"),
    }
  except Exception as e:  # reported per file by the test
    out[name] = {"error": f"{type(e).__name__}: {e}"}
print("RESULT " + json.dumps(out, default=str))
"""


def _bind(mode: str, cases: list[tuple[str, list[str], list[str]]]) -> dict:
  proc = subprocess.run([sys.executable, "-c", _PARSE, mode, json.dumps(cases)], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  assert proc.returncode == 0 and lines, proc.stderr[-4000:]
  return json.loads(lines[-1][len("RESULT "):])


def _command_case(name: str) -> tuple[str, list[str], list[str]]:
  argv = run_command(parse_file(GIN_DIR / name))
  files, bindings = command_gin_files_and_bindings(argv)
  return name, files, [f"{k} = {v}" for k, v in bindings.items()]


def test_t5x_include_table_matches_t5x():
  """T5X_INCLUDES (used by the no-T5X checks) says what the real T5X files define."""
  import t5x  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(t5x.__file__).resolve().parent.parent
  for name, facts in T5X_INCLUDES.items():
    gf = parse_file(root / name)
    defined = {n for _, n, _ in gf.macros}
    required = {n for _, n, v in gf.macros if getattr(v, "name", None) == "gin.REQUIRED"}
    # finetune.gin re-defines MIXTURE_OR_TASK_MODULE = None after REQUIRED: last one wins.
    last = {}
    for _, n, v in gf.macros:
      last[n] = v
    required = {n for n in required if getattr(last[n], "name", None) == "gin.REQUIRED"}
    assert defined == facts["defines"], (name, defined ^ facts["defines"])
    assert required == facts["required"], (name, required ^ facts["required"])
    assert [n for _, n in gf.includes] == facts["includes"], name


def test_train_configs_bind_under_t5x():
  cases = [_command_case(n) for n in TRAIN_FILES + ["smoke_offline.gin"]]
  # One override picks another method / fraction / rate, and alpha: they bind too.
  cases.append(("anli_770m.gin+override", ["gin_configs/anli_770m.gin"],
                ["MODEL_DIR = '/tmp/x'", "MIXTURE_OR_TASK_NAME = 'anli1_distill_pct25'",
                 "LOSS_ALPHA = 0.3"]))
  # Off-grid fraction / rate through the registry's gin function (README, gin_configs/README).
  cases.append(("anli_220m.gin+mixture()", ["gin_configs/anli_220m.gin"],
                ["MODEL_DIR = '/tmp/x'", "MIXTURE_OR_TASK_NAME = @dsbs.tasks.mixture()",
                 "dsbs.tasks.mixture.dataset = 'anli1'", "dsbs.tasks.mixture.fraction = 12.5",
                 "dsbs.tasks.mixture.label_rate = 0.35"]))
  got = _bind("train", cases)
  errors = {k: v["error"] for k, v in got.items() if "error" in v}
  assert not errors, errors
  for name in TRAIN_FILES:
    r = got[name]
    assert r["converter"].endswith("DsbsEncDecFeatureConverter"), r
    assert r["spec"] == "t5" and r["lnf"] == "NUM_REAL_TARGET_TOKENS" and r["dropout"] == 0.1
    assert r["partitions_binding"] == "%NUM_PARTITIONS", r
  assert got["anli_770m.gin"]["partitions"] == 1 and got["anli_11b.gin"]["partitions"] == 8
  assert got["smoke_offline.gin"]["spec"] == "byte"
  assert got["anli_770m.gin+override"]["task"] == "anli1_distill_pct25"
  assert got["anli_220m.gin+mixture()"]["task"] == "anli1_dsbs_pct12.5_rate0.35"


@pytest.mark.parametrize("mode", ["eval", "infer"])
def test_eval_and_infer_configs_bind_under_t5x_for_every_size(mode):
  name = f"{mode}.gin"
  _, files, bindings = _command_case(name)
  cases = []
  for model in sorted(p.name for p in GIN_DIR.glob("model_*.gin")):
    swapped = [f"gin_configs/{model}" if f.startswith("gin_configs/model_") else f for f in files]
    cases.append((model, swapped, bindings))
  got = _bind(mode, cases)
  errors = {k: v["error"] for k, v in got.items() if "error" in v}
  assert not errors, errors
  assert got["model_3b.gin"]["partitions"] == 4 and got["model_smoke.gin"]["spec"] == "byte"
  assert all(r["dropout"] == 0.0 for r in got.values())
  assert all(r["partitions_binding"] == "%NUM_PARTITIONS" for r in got.values())


def test_every_command_file_is_covered():
  t5x_commands = {p.name for p in GIN_DIR.glob("*.gin")
                  if (run_command(parse_file(p)) or ["", "", ""])[2].startswith("t5x.")}
  assert set(COMMAND_FILES) == t5x_commands
  assert os.path.exists(REPO / "gin_configs" / "smoke_offline.gin")

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
import subprocess
import sys

import pytest

from test_gin_configs import (COMMAND_FILES, GIN_DIR, REPO, TRAIN_FILES,
                              command_gin_files_and_bindings, run_command)

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


def value(v):  # a %MACRO or @fn() reference: what gin passes when it calls the configurable
  return v.scoped_configurable_fn() if hasattr(v, "scoped_configurable_fn") else v


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
        "spec": value(gin.query_parameter("vocab.get_vocabulary.spec")),
        "lnf": gin.query_parameter("%LOSS_NORMALIZING_FACTOR"),
        "dropout": gin.query_parameter("%DROPOUT_RATE"),
    }
    lnf = gin.query_parameter("%LOSS_NORMALIZING_FACTOR")
    if hasattr(lnf, "scoped_configurable_fn"):  # finetune.gin: from the experiment
      out[name]["lnf"] = lnf.scoped_configurable_fn()
    if mode == "train":  # T5X's train dataset packing, from the experiment
      out[name]["pack"] = value(gin.query_parameter("train/utils.DatasetConfig.pack"))
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
  files, bindings = command_gin_files_and_bindings(run_command(name))
  return name, files, bindings


def test_train_configs_bind_under_t5x():
  cases = [_command_case(n) for n in TRAIN_FILES + ["smoke_offline.gin"]]
  # The experiment macros pick another method / fraction, and alpha: they bind too.
  cases.append(("anli_770m.gin+override", ["gin_configs/anli_770m.gin"],
                ["MODEL_DIR = '/tmp/x'", "METHOD = 'distill'", "FRACTION = 25",
                 "LOSS_ALPHA = 0.3"]))
  # Off-grid fraction / rate, unpacked: the task is registered on demand, the factor exact.
  cases.append(("anli_220m.gin+offgrid", ["gin_configs/anli_220m.gin"],
                ["MODEL_DIR = '/tmp/x'", "FRACTION = 12.5", "LABEL_RATE = 0.35",
                 "PACK = False"]))
  got = _bind("train", cases)
  errors = {k: v["error"] for k, v in got.items() if "error" in v}
  assert not errors, errors
  for name in TRAIN_FILES:
    r = got[name]
    assert r["converter"].endswith("DsbsEncDecFeatureConverter"), r
    assert r["spec"] == "t5" and r["lnf"] == "NUM_REAL_TARGET_TOKENS" and r["dropout"] == 0.1
    assert r["partitions_binding"] == "%NUM_PARTITIONS" and r["pack"] is True, r
  assert got["anli_770m.gin"]["partitions"] == 1 and got["anli_11b.gin"]["partitions"] == 8
  assert got["smoke_offline.gin"]["spec"] == "byte"
  assert got["anli_770m.gin+override"]["task"] == "anli1_distill_pct25"
  offgrid = got["anli_220m.gin+offgrid"]
  assert offgrid["task"] == "anli1_dsbs_pct12.5_rate0.35"
  assert offgrid["pack"] is False and offgrid["lnf"] == 64.0


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
                  if (run_command(p.name) or ["", "", ""])[2].startswith("t5x.")}
  assert set(COMMAND_FILES) == t5x_commands
  assert os.path.exists(REPO / "gin_configs" / "smoke_offline.gin")

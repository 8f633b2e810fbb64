"""A self-contained user dataset for runner tests (no released data).

`tiny_add`: `a + b` with label `c` and rationale `a + b = c` (numeric), registered through
`dsbs.tasks.register_dataset` from JSONL files this module writes, so the runner trains it like
any user dataset: METHOD 'dsbs' gives the mixture `tiny_add_dsbs_byte` of `predict: a + b` -> `c`
and `explain: a + b` -> `a + b = c`. Imported by the runner through the experiment macro
`MIXTURE_OR_TASK_MODULE = 'train_fixtures'`.
"""
import json
import os
import sys
import tempfile

import jax
import numpy as np

import dsbs.tasks

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS_DIR)
SIZES = {"train": 256, "validation": 24, "test": 24}
DATA_DIR = os.path.join(tempfile.gettempdir(), f"dsbs-test-tiny-add-{os.getuid()}")


def _rows(split: str) -> list[dict]:
  rng = np.random.default_rng({"train": 0, "validation": 1, "test": 2}[split])
  a = rng.integers(0, 50, SIZES[split])
  b = rng.integers(0, 50, SIZES[split])
  return [{"id": f"{split}-{i}", "input": f"{x} + {y}", "label": str(x + y),
           "rationale": f"{x} + {y} = {x + y}", "teacher_label": str(x + y)}
          for i, (x, y) in enumerate(zip(a, b))]


def register() -> None:
  if "tiny_add" in dsbs.tasks.datasets():
    return
  os.makedirs(DATA_DIR, exist_ok=True)
  paths = {}
  for split in SIZES:
    paths[split] = os.path.join(DATA_DIR, f"{split}.jsonl")
    tmp = f"{paths[split]}.{os.getpid()}"
    with open(tmp, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in _rows(split))
    os.replace(tmp, paths[split])
  dsbs.tasks.register_dataset("tiny_add", kind="numeric", **paths)


register()

MIXTURE = "tiny_add_dsbs_byte"
LABEL_TASK = "tiny_add_label_gt_byte"
RATIONALE_TASK = "tiny_add_rationale_byte"


def tiny_gin(path: str, steps: int = 3, method: str = "dsbs", extra: str = "",
             dataset: str = "tiny_add", module: str = "train_fixtures") -> str:
  """Writes an experiment file for the tiny model and returns its path."""
  text = f"""
include 't5x/examples/t5/t5_1_1/small.gin'
DATASET = '{dataset}'
METHOD = '{method}'
VOCAB = 'byte'
PACK = False
MIXTURE_OR_TASK_MODULE = '{module}'
TASK_FEATURE_LENGTHS = {{'inputs': 24, 'targets': 16}}
TRAIN_STEPS = {steps}
BATCH_SIZE = 8
DROPOUT_RATE = 0.0
STUDENT = 'test_tiny'
LEARNING_RATE = 0.01
TrainConfig.progress = False
TrainConfig.tensorboard = False
TrainConfig.eval_batch_size = 8
TrainConfig.log_period = 1
{extra}
"""
  with open(path, "w") as f:
    f.write(text)
  return path


_CACHE_DIR = os.path.join(tempfile.gettempdir(), f"dsbs-test-jax-cache-{os.getuid()}")


def share_compilation_cache() -> None:
  """One persistent XLA cache for this test session and its subprocesses (tiny programs)."""
  jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def subprocess_env(devices: int = 1) -> dict[str, str]:
  env = dict(os.environ)
  env["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  env["PYTHONPATH"] = os.pathsep.join([TESTS_DIR, REPO, env.get("PYTHONPATH", "")])
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  return env


PYTHON = sys.executable

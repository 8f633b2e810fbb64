"""A self-contained two-task SeqIO mixture for runner tests (no released data, no dsbs.tasks).

`tiny_add_dsbs`: `predict: a + b` -> `c` (task_kind 0) and `explain: a + b` -> `a + b = c`
(task_kind 1), byte vocabulary; `tiny_add_label` alone is a single label task. Imported by the
runner through the experiment macro `MIXTURE_OR_TASK_MODULE = 'train_fixtures'`.
"""
import os
import sys
import tempfile

import jax
import numpy as np
import seqio
import tensorflow as tf

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS_DIR)
SIZES = {"train": 256, "validation": 24, "test": 24}


def _examples(split: str, kind: int) -> dict[str, list]:
  rng = np.random.default_rng({"train": 0, "validation": 1, "test": 2}[split])
  a = rng.integers(0, 50, SIZES[split])
  b = rng.integers(0, 50, SIZES[split])
  prefix = "predict" if kind == 0 else "explain"
  targets = [str(x + y) if kind == 0 else f"{x} + {y} = {x + y}" for x, y in zip(a, b)]
  return {"inputs": [f"{prefix}: {x} + {y}" for x, y in zip(a, b)], "targets": targets,
          "task_kind": [kind] * len(targets)}


def _source(kind: int) -> seqio.FunctionDataSource:
  def fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices(_examples(split, kind))
  return seqio.FunctionDataSource(fn, splits=list(SIZES), num_input_examples=SIZES)


def accuracy(targets, predictions):
  return {"accuracy": 100.0 * float(np.mean([t == p for t, p in zip(targets, predictions)]))}


def _strip(text, example=None, is_target=False):
  del example, is_target
  return text.strip()


_FEATURES = {k: seqio.Feature(seqio.ByteVocabulary(), add_eos=True) for k in ("inputs", "targets")}


def register() -> None:
  for name, kind, metrics in (("tiny_add_label", 0, [accuracy]), ("tiny_add_rationale", 1, [])):
    if name in seqio.TaskRegistry.names():
      continue
    seqio.TaskRegistry.add(
        name, source=_source(kind), output_features=_FEATURES,
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        postprocess_fn=_strip, metric_fns=metrics)
  if "tiny_add_dsbs" not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add("tiny_add_dsbs", [("tiny_add_label", 1.0), ("tiny_add_rationale", 1.0)])


register()


def tiny_gin(path: str, steps: int = 3, task: str = "tiny_add_dsbs", extra: str = "") -> str:
  """Writes an experiment file for the tiny model and returns its path."""
  text = f"""
include 't5x/examples/t5/t5_1_1/small.gin'
MIXTURE_OR_TASK_NAME = '{task}'
MIXTURE_OR_TASK_MODULE = 'train_fixtures'
TASK_FEATURE_LENGTHS = {{'inputs': 24, 'targets': 16}}
TRAIN_STEPS = {steps}
BATCH_SIZE = 8
DROPOUT_RATE = 0.0
DSBS_MODEL = 'test_tiny'
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

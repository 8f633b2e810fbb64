"""Experiment files: T5X gin parsed for the runner; every shipped config resolves."""
import glob
import os
import re

import gin
import pytest

from dsbs import experiment
from dsbs import train  # registers TrainConfig / OptimizerConfig with gin
from dsbs.model import get_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(REPO, "gin_configs")
# Whole experiments (the rest are fragments included by them: model_*, data_*, student, ...).
EXPERIMENT_RE = re.compile(r"^((?!model_|data_)[a-z0-9]+_(220m|770m|3b|11b)|smoke_offline|default)\.gin$")


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def _write(tmp_path, name, text):
  p = tmp_path / name
  p.write_text(text)
  return str(p)


def test_t5x_file_macros_includes_and_skips(tmp_path):
  _write(tmp_path, "data.gin", "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 32}\n"
         "TRAIN_STEPS = %BASE_STEPS\nBASE_STEPS = 1_000_100\n")
  f = _write(tmp_path, "exp.gin", """
from __gin__ import dynamic_registration
from t5x import utils
include 't5x/examples/t5/t5_1_1/large.gin'
include 't5x/configs/runs/finetune.gin'
include 'data.gin'
MIXTURE_OR_TASK_NAME = 'svamp_dsbs'
INITIAL_CHECKPOINT_PATH = 'gs://b/t5_1_1_large/checkpoint_1000000'
VOCABULARY = @seqio.SentencePieceVocabulary()
utils.SaveCheckpointConfig.period = 100
TrainConfig.log_period = 7
OptimizerConfig.name = 'adamw'
""")
  exp = experiment.load([f], ["BATCH_SIZE = 16", "LOSS_ALPHA = 0.3"])
  assert exp.model_name == "t5_1_1_large"
  assert exp.train_steps == 1_000_100  # macro defined after its use, resolved at the end
  assert exp.task_feature_lengths == {"inputs": 64, "targets": 32}
  assert exp.batch_size == 16 and exp.loss_alpha == 0.3 and exp.loss_mode == "paper"
  assert exp.dropout_rate == 0.1 and exp.learning_rate is None
  assert any("finetune.gin" in s for s in exp.skipped)
  assert any("utils.SaveCheckpointConfig.period" in s and "exp.gin:" in s for s in exp.skipped)
  cfg = train.TrainConfig()
  assert cfg.log_period == 7 and cfg.optimizer.name == "adamw"
  assert train._initial_step(exp.initial_checkpoint_path) == 1_000_000


def test_dsbs_model_macro_wins_over_include(tmp_path):
  f = _write(tmp_path, "e.gin", "include 't5x/examples/t5/t5_1_1/base.gin'\n"
             "DSBS_MODEL = 'test_tiny'\nMIXTURE_OR_TASK_NAME = 'x'\nTASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 8}\n"
             "TRAIN_STEPS = 3\n")
  assert experiment.load([f]).model_name == "test_tiny"


@pytest.mark.parametrize("text, match", [
    ("MIXTURE_OR_TASK_NAME = 'x'\nTRAIN_STEPS = 3\nDSBS_MODEL = 'test_tiny'\n",
     "TASK_FEATURE_LENGTHS is not set"),
    ("MIXTURE_OR_TASK_NAME = 'x'\nTASK_FEATURE_LENGTHS = {'inputs': 8}\nTRAIN_STEPS = 3\n"
     "DSBS_MODEL = 'test_tiny'\n", r"bad.gin:2: TASK_FEATURE_LENGTHS"),
    ("MIXTURE_OR_TASK_NAME = 'x'\nTASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 8}\n"
     "TRAIN_STEPS = '3'\nDSBS_MODEL = 'test_tiny'\n",
     r"bad.gin:3: macro TRAIN_STEPS = '3' should be int"),
    ("MIXTURE_OR_TASK_NAME = 'x'\nTASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 8}\n"
     "TRAIN_STEPS = 3\n", "no model"),
    ("include 'missing.gin'\n", r"bad.gin:1: include 'missing.gin' not found"),
    ("A = %B\nB = %A\nMIXTURE_OR_TASK_NAME = %A\n", "macro cycle"),
    ("MIXTURE_OR_TASK_NAME = \n", r"bad.gin:1: gin syntax error"),
    ("MIXTURE_OR_TASK_NAME = 'x'\nTASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 8}\n"
     "TRAIN_STEPS = 3\nDSBS_MODEL = 'test_tiny'\nLOSS_MODE = 'mean'\n", "LOSS_MODE must be"),
])
def test_bad_experiments_name_file_line_and_macro(tmp_path, text, match):
  f = _write(tmp_path, "bad.gin", text)
  with pytest.raises(experiment.ExperimentError, match=match):
    experiment.load([f])


def test_every_shipped_gin_file_parses_and_experiments_resolve():
  files = sorted(glob.glob(os.path.join(GIN_DIR, "*.gin")))
  assert any(os.path.basename(f) == "default.gin" for f in files)
  n_exp = 0
  for f in files:
    reader = experiment._Reader([])
    reader.read_file(f)  # syntax, includes and macro references of every file, fragments too
    if EXPERIMENT_RE.match(os.path.basename(f)):
      exp = experiment.load([f])
      gin.clear_config()
      n_exp += 1
      assert exp.mixture_or_task_name and exp.train_steps > 0 and exp.batch_size > 0, f
      assert exp.model_name, f
      get_config(exp.model_name)  # the name exists in the model registry
  assert n_exp >= 2

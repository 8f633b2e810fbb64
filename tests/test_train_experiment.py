"""The experiment definition: read with real gin, the same from every reading, clear errors."""
import os
import subprocess
import sys

import gin
import pytest

import train_fixtures as support
from dsbs import experiment
from dsbs import gin_reading
from dsbs import preflight
from dsbs import train
from dsbs.seqio_ext import feature_converters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def _write(tmp_path, name, text):
  p = tmp_path / name
  p.write_text(text)
  return str(p)


_TINY = """
DATASET = 'arith'
VOCAB = 'byte'
STUDENT = 'smoke'
TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 32}
TRAIN_STEPS = 10
"""


def test_t5x_statements_are_skipped_and_listed_runner_bindings_applied(tmp_path):
  f = _write(tmp_path, "exp.gin", """
from __gin__ import dynamic_registration
from dsbs import optim
from dsbs import train
from t5x import utils
include 't5x/examples/t5/t5_1_1/large.gin'
include 't5x/configs/runs/finetune.gin'
""" + _TINY + """
INITIAL_CHECKPOINT_PATH = 'gs://b/t5_1_1_large/checkpoint_1000000'
utils.SaveCheckpointConfig.period = 100
train.TrainConfig.log_period = 7
optim.OptimizerConfig.name = 'adamw'
""")
  loaded = experiment.load([f], ["BATCH_SIZE = 16", "LOSS_ALPHA = 0.3"])
  exp = loaded.experiment
  assert exp.batch_size == 16 and exp.alpha == 0.3 and exp.loss_mode == "paper"
  assert exp.pack and exp.dropout_rate == 0.1 and exp.learning_rate is None  # experiment.gin
  assert any("finetune.gin" in s for s in loaded.skipped)
  assert any("utils.SaveCheckpointConfig" in s for s in loaded.skipped)
  stand_ins = [m for m, mod in list(sys.modules.items())
               if isinstance(getattr(mod, "__loader__", None), gin_reading._StubT5X)]
  assert not stand_ins  # the T5X stand-ins are gone after the parse
  cfg = train.TrainConfig()
  assert cfg.log_period == 7 and cfg.optimizer.name == "adamw"
  assert preflight.initial_step(exp.initial_checkpoint_path) == 1_000_000


def test_two_readings_of_one_definition_are_equal(tmp_path):
  """A file plus overrides, the overrides in another order, and the definition's own bindings."""
  a = experiment.load(["gin_configs/cqa_220m.gin"],
                      ["METHOD = 'dsbs_llm'", "FRACTION = 12.5", "LABEL_RATE = 0.35",
                       "PACK = False"]).experiment
  b = experiment.load([os.path.join(REPO, "gin_configs", "cqa_220m.gin")],
                      ["PACK = False", "LABEL_RATE = 0.35", "FRACTION = 12.5",
                       "METHOD = 'dsbs_llm'"]).experiment
  c = experiment.load([], a.as_bindings()).experiment
  assert a == b == c
  assert a.mixture_or_task_name == "cqa_dsbs_llm_pct12.5_rate0.35"


def test_mixture_function_is_the_task_in_the_builtin_runner():
  """`MIXTURE_OR_TASK_NAME = @dsbs.tasks.mixture()` (experiment.gin) names the experiment's task,
  registered on demand off the grid."""
  loaded = experiment.load(["gin_configs/default.gin"], ["FRACTION = 12.5", "LABEL_RATE = 0.35"])
  assert isinstance(gin.query_parameter("%MIXTURE_OR_TASK_NAME"), gin.config.ConfigurableReference)
  assert loaded.experiment.mixture_or_task_name == "arith_dsbs_pct12.5_rate0.35_byte"


def test_mixture_or_task_name_cannot_contradict_the_experiment():
  with pytest.raises(experiment.ExperimentError, match=r"trains 'arith_dsbs_pct25_byte'.*METHOD"):
    experiment.load(["gin_configs/default.gin"],
                    ["MIXTURE_OR_TASK_NAME = 'arith_finetune_pct25_byte'"])
  with pytest.raises(experiment.ExperimentError, match=r"trains 'arith_dsbs_pct25_byte'"):
    experiment.load(["gin_configs/default.gin"], ["MIXTURE_OR_TASK_NAME = 'arith_dsbs_byte'"])
  # Agreeing with it is fine (the same name, however written).
  experiment.load(["gin_configs/default.gin"], ["MIXTURE_OR_TASK_NAME = 'arith_dsbs_pct25_byte'"])
  experiment.load(["gin_configs/default.gin"],
                  ["FRACTION = 100", "MIXTURE_OR_TASK_NAME = 'arith_dsbs_byte'"])


def test_dataset_names_with_underscores(tmp_path):
  args, bindings = train.parse_flags(["--dataset=tiny_add", "--gin_file=gin_configs/default.gin"])
  loaded = experiment.load(args.gin_file, bindings + ["MIXTURE_OR_TASK_MODULE = 'train_fixtures'",
                                                      "FRACTION = 100"])
  assert loaded.experiment.dataset == "tiny_add"
  assert loaded.experiment.mixture_or_task_name == support.MIXTURE


def test_converter_and_t5x_factor_read_the_experiment():
  """Alpha, loss mode and packing reach T5X's converter and loss factor from the same macros."""
  experiment.load(["gin_configs/anli_770m.gin"], ["LOSS_ALPHA = 0.3", "LOSS_MODE = 'tokens'"])
  conv = feature_converters.DsbsEncDecFeatureConverter(pack=True)  # gin-bound, as T5X makes it
  assert conv.alpha == 0.3 and conv.loss_mode == "tokens"
  factor = gin.query_parameter("%LOSS_NORMALIZING_FACTOR").scoped_configurable_fn()
  assert factor == "NUM_REAL_TARGET_TOKENS"
  experiment.load(["gin_configs/anli_770m.gin"], ["PACK = False"])
  factor = gin.query_parameter("%LOSS_NORMALIZING_FACTOR").scoped_configurable_fn()
  assert factor == 64.0  # unpacked: the batch size, the number of examples (exact for any a)


def test_t5x_says_at_start_what_it_cannot_do_exactly():
  exp = experiment.load(["gin_configs/anli_770m.gin"], ["LOSS_ALPHA = 0.3"]).experiment
  (line,) = experiment.t5x_caveats(exp)
  assert "LOSS_ALPHA = 0.3 with PACK = True" in line and "PACK = False" in line
  exp = experiment.load(["gin_configs/anli_770m.gin"], ["LOSS_ALPHA = 0.3", "PACK = False"])
  assert experiment.t5x_caveats(exp.experiment) == []
  exp = experiment.load(["gin_configs/anli_770m.gin"], ["LOSS_ALPHA = 0.3", "METHOD = 'finetune'"])
  assert experiment.t5x_caveats(exp.experiment) == []  # one task: alpha does not act


@pytest.mark.parametrize("bindings,match", [
    (["DATASET = 'anl1'"], r"DATASET = 'anl1': is not a registered dataset \(did you mean 'anli1'"),
    (["METHOD = 'dsbsx'"], r"METHOD = 'dsbsx': must be one of"),
    (["FRACTION = 0"], r"FRACTION = 0: must be a percentage in \(0, 100\]"),
    (["LABEL_RATE = 1.5"], r"LABEL_RATE = 1.5: must be in \(0, 1\)"),
    (["METHOD = 'finetune'", "LABEL_RATE = 0.3"], r"LABEL_RATE = 0.3: applies to the two-task"),
    (["LOSS_ALPHA = -1"], r"LOSS_ALPHA = -1: must be in \[0, 1\]"),
    (["LOSS_MODE = 'mean'"], r"LOSS_MODE = 'mean': must be one of"),
    (["PACK = 1"], r"PACK = 1: must be True or False"),
    (["TRAIN_STEPS = '3'"], r"TRAIN_STEPS = '3': must be a positive integer"),
    (["BATCH_SIZE = 0"], r"BATCH_SIZE = 0: must be a positive integer"),
    (["TASK_FEATURE_LENGTHS = {'inputs': 8}"], r"TASK_FEATURE_LENGTHS = .*'targets': m"),
    (["STUDENT = 't5_1_1_lage'"], r"did you mean 't5_1_1_large'"),
    (["TRAIN_STEPS = %gin.REQUIRED"], r"TRAIN_STEPS is not set"),
    (["TrainConfig.log_perid = 3"], r"doesn't have a parameter named 'log_perid'"),
    (["MIXTURE_OR_TASK_MODULE = 'no_such_module_xyz'"], r"MIXTURE_OR_TASK_MODULE = .*cannot be"),
])
def test_bad_experiments_name_the_macro_and_what_is_allowed(bindings, match):
  with pytest.raises(experiment.ExperimentError, match=match):
    experiment.load(["gin_configs/default.gin"], bindings)


def test_missing_required_macros_and_files(tmp_path):
  with pytest.raises(experiment.ExperimentError, match=r"DATASET is not set.*--gin.DATASET"):
    experiment.load([_write(tmp_path, "e.gin", "STUDENT = 'smoke'\nVOCAB = 'byte'\n")])
  with pytest.raises(experiment.ExperimentError, match=r"gin file 'nope.gin' not found"):
    experiment.load(["nope.gin"])


def test_every_shipped_experiment_loads_and_names_a_registered_task():
  import seqio  # pylint: disable=g-import-not-at-top
  names = sorted(p for p in os.listdir(os.path.join(REPO, "gin_configs"))
                 if p.endswith(".gin") and not p.startswith("model_")
                 and (p in ("default.gin", "smoke_offline.gin")
                                            or p.split("_")[-1][:-4] in ("220m", "770m", "3b",
                                                                        "11b")))
  assert len(names) == 18
  for name in names:
    loaded = experiment.load([f"gin_configs/{name}"])
    assert seqio.get_mixture_or_task(loaded.experiment.mixture_or_task_name)
    assert all("T5X" in s for s in loaded.skipped), (name, loaded.skipped)


def test_runner_exits_2_with_one_line_on_a_bad_experiment(tmp_path):
  r = subprocess.run([sys.executable, "-m", "dsbs.train", f"--model_dir={tmp_path / 'run'}",
                      "--gin.FRACTION=0"], env=support.subprocess_env(), capture_output=True,
                     text=True, timeout=120, cwd=tmp_path)
  assert r.returncode == 2, r.stderr[-2000:]
  assert "error: FRACTION = 0: must be a percentage in (0, 100]" in r.stderr
  assert "Traceback" not in r.stderr
  assert not (tmp_path / "run").exists()

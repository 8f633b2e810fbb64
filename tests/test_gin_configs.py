"""The shipped gin configs, read by gin itself through the experiment loader (no T5X needed):
commands, what each file sets, the loss, vocabulary and lengths. tests/test_t5x_configs.py binds
the same files under the real T5X when it is installed."""
from __future__ import annotations

import pathlib
import re
import shlex

import gin
import pytest

from dsbs import experiment
from dsbs.seqio_ext import feature_converters

REPO = pathlib.Path(__file__).resolve().parent.parent
GIN_DIR = REPO / "gin_configs"
DATASETS = {"anli": "anli1", "cqa": "cqa", "esnli": "esnli", "svamp": "svamp"}
SIZES = {"220m": "base", "770m": "large", "3b": "xl", "11b": "xxl"}
TRAIN_FILES = [f"{d}_{s}.gin" for d in DATASETS for s in SIZES]
COMMAND_FILES = TRAIN_FILES + ["smoke_offline.gin", "eval.gin", "infer.gin"]
# Macros a user must pass on the command line (shown in each first-line command).
USER_MACROS = {"train": {"MODEL_DIR"}, "eval": {"CHECKPOINT_PATH", "EVAL_OUTPUT_DIR", "DATASET"},
               "infer": {"CHECKPOINT_PATH", "INFER_OUTPUT_DIR", "DATASET"}}


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def run_command(name: str) -> list[str] | None:
  """The argv of the command on the first line ('# python -m <module> ...'), or None."""
  first = (GIN_DIR / name).read_text().splitlines()[0]
  return shlex.split(first[2:]) if first.startswith("# python -m ") else None


def command_gin_files_and_bindings(argv: list[str]) -> tuple[list[str], list[str]]:
  files = [a.split("=", 1)[1] for a in argv if a.startswith("--gin_file=")]
  bindings = [a[len("--gin."):].replace("=", " = ", 1) for a in argv if a.startswith("--gin.")]
  return files, bindings


def includes(name: str) -> list[str]:
  return re.findall(r"^include '([^']+)'", (GIN_DIR / name).read_text(), flags=re.M)


def macro(name: str):
  return gin.query_parameter(f"%{name}")


def test_every_dataset_and_size_has_a_train_config():
  present = {p.name for p in GIN_DIR.glob("*.gin")}
  assert not set(TRAIN_FILES) - present, sorted(set(TRAIN_FILES) - present)


@pytest.mark.parametrize("name", COMMAND_FILES)
def test_first_line_is_the_command_that_runs_it(name):
  argv = run_command(name)
  assert argv is not None, f"{name}: first line must be '# python -m t5x.<mode> ...'"
  assert argv[:2] == ["python", "-m"] and argv[2] in ("t5x.train", "t5x.eval", "t5x.infer")
  files, bindings = command_gin_files_and_bindings(argv)
  assert f"gin_configs/{name}" in files, f"{name}: its command does not run it: {files}"
  passed = {b.split(" = ")[0] for b in bindings}
  missing = USER_MACROS[argv[2].split(".")[1]] - passed
  assert not missing, f"{name}: command must pass {sorted(missing)}"


def test_include_only_files_have_no_command_and_are_included():
  included = {i for p in GIN_DIR.glob("*.gin") for i in includes(p.name)}
  for p in GIN_DIR.glob("*.gin"):
    argv = run_command(p.name)
    if p.name in COMMAND_FILES or (argv and argv[2].startswith("dsbs.")):  # default.gin
      continue
    assert argv is None, f"{p.name}: an include-only file should not look runnable"
    assert f"gin_configs/{p.name}" in included, f"{p.name} is neither run nor included"


@pytest.mark.parametrize("name", TRAIN_FILES)
def test_train_config_is_the_experiment_its_header_documents(name):
  ds, size = name[:-4].split("_")
  assert includes(name) == [f"gin_configs/model_{size}.gin", "gin_configs/finetune.gin",
                            f"gin_configs/data_{ds}.gin"]
  assert f"t5x/examples/t5/t5_1_1/{SIZES[size]}.gin" in includes(f"model_{size}.gin")
  exp = experiment.load([f"gin_configs/{name}"]).experiment
  assert exp.dataset == DATASETS[ds] and exp.student == f"t5_1_1_{SIZES[size]}"
  assert exp.initial_checkpoint_path == (
      f"gs://t5-data/pretrained_models/t5x/t5_1_1_{SIZES[size]}/checkpoint_1000000")
  assert (exp.method, exp.fraction, exp.label_rate, exp.vocab) == ("dsbs", 100, 0.5, "t5")
  assert exp.pack and exp.alpha == 0.5 and exp.loss_mode == "paper" and exp.dropout_rate == 0.1
  text = (GIN_DIR / name).read_text()
  assert f"TASK_FEATURE_LENGTHS = {exp.task_feature_lengths!r}" in text
  assert f"NUM_PARTITIONS = {macro('NUM_PARTITIONS')}" in text
  assert f"every {exp.eval_period} steps" in text
  assert exp.train_steps == 1_010_000 and "TRAIN_STEPS = 1_010_000" in text
  assert f"BATCH_SIZE = {exp.batch_size}" in text


@pytest.mark.parametrize("name", TRAIN_FILES[:4] + ["smoke_offline.gin"])
def test_documented_overrides_load(name):
  """Every `--gin.KEY=VALUE` example in a file's header is a working override."""
  lines = (GIN_DIR / name).read_text().splitlines()
  # Override examples, not the continuation lines of another command (tiny_offline's t5x.eval).
  text = "\n".join(line for i, line in enumerate(lines)
                   if not line.rstrip().endswith("\\")
                   and not (i and lines[i - 1].rstrip().endswith("\\")))
  examples = re.findall(r"^#\s+(--gin\.[A-Z_]+=\S+(?:\s+--gin\.[A-Z_]+=\S+)*)", text, flags=re.M)
  assert examples or name == "smoke_offline.gin"
  for line in examples:
    _, bindings = command_gin_files_and_bindings(shlex.split(line))
    if any(b.startswith("NUM_PARTITIONS") for b in bindings):
      bindings = [b for b in bindings if not b.startswith("NUM_PARTITIONS")]
    experiment.load([f"gin_configs/{name}"], bindings)


def test_partitioning_grows_with_model_size():
  parts = []
  for size in SIZES:
    experiment.load([f"gin_configs/anli_{size}.gin"])
    parts.append(macro("NUM_PARTITIONS"))
  assert parts == sorted(parts) and parts[0] == 1 and parts[-1] >= 8


def test_loss_weighting_is_bound_to_the_feature_converter():
  """student.gin hands T5X the converter with the experiment's alpha and loss mode."""
  text = (GIN_DIR / "student.gin").read_text()
  assert ("models.EncoderDecoderModel.feature_converter_cls = "
          "@feature_converters.DsbsEncDecFeatureConverter\n") in text  # a class: T5X adds pack
  experiment.load(["gin_configs/svamp_220m.gin"], ["LOSS_ALPHA = 0.25"])
  conv = feature_converters.DsbsEncDecFeatureConverter(pack=True)
  assert conv.alpha == 0.25 and conv.loss_mode == "paper"
  # AVERAGE_PER_SEQUENCE would renormalise each sequence and erase alpha (losses.py).
  assert "LOSS_NORMALIZING_FACTOR = 'NUM_REAL_TARGET_TOKENS'" in text


@pytest.mark.parametrize("model", ["model_220m.gin", "model_smoke.gin"])
def test_model_vocabulary_is_the_tasks_vocabulary(model):
  """T5X's eval refuses a model whose vocabulary differs from the task's; both read VOCAB."""
  import seqio  # pylint: disable=g-import-not-at-top
  bindings = ["DATASET = 'arith'", "TASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 8}",
              "TRAIN_STEPS = 1"]
  exp = experiment.load([f"gin_configs/{model}"], bindings).experiment
  model_vocab = macro("VOCABULARY").scoped_configurable_fn()  # what T5X's model gin evaluates
  task = seqio.get_mixture_or_task(exp.mixture_or_task_name)
  for t in task.tasks:
    assert t.output_features["inputs"].vocabulary is model_vocab
  if model == "model_smoke.gin":
    assert exp.vocab == "byte"
    assert "vocab_size = 384" in (GIN_DIR / model).read_text()
    assert model_vocab.vocab_size <= 384


def test_feature_lengths_cover_the_released_data(data_dir):
  """inputs/targets hold p99 of the released inputs and rationales at 4.2 chars per token."""
  import dsbs.data  # pylint: disable=g-import-not-at-top

  chars_per_token, prefix_tokens = 4.2, 3
  for ds, name in DATASETS.items():
    lengths = experiment.load([f"gin_configs/{ds}_220m.gin"]).experiment.task_feature_lengths
    examples = dsbs.data.load_examples(name, "test", data_dir=data_dir)

    def p99(values):
      values = sorted(values)
      return values[int(0.99 * (len(values) - 1))]

    inp = p99([len(e.input) for e in examples]) / chars_per_token + prefix_tokens
    rat = p99([len(e.rationale) for e in examples if e.rationale]) / chars_per_token
    assert inp * 1.25 <= lengths["inputs"], (ds, inp, lengths)
    assert rat * 1.25 <= lengths["targets"], (ds, rat, lengths)

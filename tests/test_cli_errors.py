"""The programs' errors: one `error:` line naming the file, field, value and what is allowed,
exit code 2, no traceback (unless --verbose), and no run dir left behind; checks that run before
training (preflight); a user dataset without a validation split; a rerun of a finished run."""
import json
import logging
import os
import pathlib
import socket
import subprocess
import sys

import gin
import pytest

import train_fixtures as support
from dsbs import preflight, train
from dsbs.tasks import __main__ as tasks_cli

pytestmark = pytest.mark.timeout(300)
support.share_compilation_cache()
REPO = pathlib.Path(__file__).resolve().parent.parent

# Datasets registered the README's way (`register_dataset`), from a module the runner imports
# through MIXTURE_OR_TASK_MODULE: `mine` has train and test files only (validation is carved),
# `mine_few` has too few train rows to carve one, `mine_notest` has no test file, `mine_bad` a
# label outside its label space on line 3.
_MODULE = '''
import json, os
import dsbs.tasks

HERE = os.path.dirname(os.path.abspath(__file__))


def _file(name, rows):
  path = os.path.join(HERE, name)
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\\n" for r in rows)
  return path


def _rows(prefix, n):
  return [{{"id": f"{{prefix}}{{i}}", "input": f"{{i % 7}} + {{i % 5}}",
           "label": str(i % 7 + i % 5), "rationale": f"{{i % 7}} + {{i % 5}} = {{i % 7 + i % 5}}"}}
          for i in range(n)]


GRID = dict(vocabs=("byte",), fractions=(100,), rates=())
dsbs.tasks.register_dataset("mine", train=_file("train.jsonl", _rows("r", 200)),
                            test=_file("test.jsonl", _rows("t", 12)), kind="numeric", **GRID)
dsbs.tasks.register_dataset("mine_few", train=_file("few.jsonl", _rows("f", 4)),
                            test=_file("test.jsonl", _rows("t", 12)), kind="numeric", **GRID)
dsbs.tasks.register_dataset("mine_notest", train=_file("train.jsonl", _rows("r", 200)),
                            kind="numeric", **GRID)
bad = [{{"input": "a", "label": "yes"}}, {{"input": "b", "label": "no"}},
       {{"input": "c", "label": "maybe"}}]
dsbs.tasks.register_dataset("mine_bad", train=_file("bad.jsonl", bad), test=_file("bad.jsonl", bad),
                            kind="classification", label_space=["yes", "no"], **GRID)
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
  d = tmp_path_factory.mktemp("user_module")
  (d / "mine_datasets.py").write_text(_MODULE.format())
  sys.path.insert(0, str(d))
  yield "mine_datasets"
  sys.path.remove(str(d))


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def _gin(path, dataset="mine", steps=3, extra=""):
  return support.tiny_gin(str(path), steps=steps, dataset=dataset, module="mine_datasets",
                          extra="EVAL_PERIOD = 2\nSAVING_PERIOD = 2\n"
                                "TrainConfig.eval_max_examples = 8\n" + extra)


def _train(capsys, tmp_path, *argv, gin_file=None):
  """(exit code, the error lines, stdout) of `python -m dsbs.train` run in this process."""
  rc = train.cli([f"--gin_file={gin_file or support.tiny_gin(str(tmp_path / 'e.gin'))}",
                  f"--model_dir={tmp_path / 'run'}", *argv])
  out, err = capsys.readouterr()
  assert "Traceback" not in err
  return rc, [line for line in err.splitlines() if line.startswith("error: ")], out


@pytest.mark.parametrize("flag, message", [
    ("--gin.TRAIN_STEPZ=10", "binding 'TRAIN_STEPZ=10': no experiment file or binding reads a "
                             "macro TRAIN_STEPZ (did you mean TRAIN_STEPS?"),
    ("--gin.METHOD=finetune", "binding 'METHOD=finetune': Failed to parse token 'finetune'; gin "
                              "values are Python literals, so a string needs quotes of its own: "
                              "--gin.METHOD=\"'finetune'\""),
    ("--gin.TrainConfig.log_perod=5", "doesn't have a parameter named 'log_perod' (did you mean "
                                      "'log_period'?)"),
    ("--gin.TrainConfg.log_period=5", "No configurable matching 'TrainConfg' (did you mean "
                                      "'TrainConfig'"),
    ("--gin.DATASET='arth'", "DATASET = 'arth': is not a registered dataset (did you mean "
                             "'arith'?)"),
    ("--gin.BATCH_SIZE=0", "BATCH_SIZE = 0: must be a positive integer"),
    ("--gin.BATCH_SIZE=-4", "BATCH_SIZE = -4: must be a positive integer"),
    ("--gin.TRAIN_STEPS=0", "TRAIN_STEPS = 0: must be a positive integer"),
])
def test_bad_experiments_are_one_line_exit_2_and_leave_nothing(capsys, tmp_path, flag, message):
  rc, errors, _ = _train(capsys, tmp_path, flag)
  assert rc == 2 and len(errors) == 1 and message in errors[0], errors
  assert not (tmp_path / "run").exists()


def test_help_documents_gin_bindings(capsys):
  with pytest.raises(SystemExit):
    train.parse_flags(["--help"])
  out = capsys.readouterr().out
  assert "--gin.KEY=VALUE" in out and "--gin.METHOD=\"'finetune'\"" in out and "--verbose" in out


def test_verbose_shows_the_traceback(capsys, tmp_path):
  train.cli([f"--gin_file={support.tiny_gin(str(tmp_path / 'e.gin'))}", "--verbose",
             f"--model_dir={tmp_path / 'run'}", "--gin.TRAIN_STEPZ=10"])
  err = capsys.readouterr().err
  assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: binding")


def test_released_data_missing_names_the_environment_variable(capsys, tmp_path, monkeypatch):
  monkeypatch.delenv("DSBS_DATA_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  monkeypatch.setenv("DSBS_DATA_URL", (tmp_path / "no-such.zip").as_uri())
  rc, errors, _ = _train(capsys, tmp_path, "--gin.DATASET='svamp'",
                         gin_file="gin_configs/default.gin")
  assert rc == 2 and len(errors) == 1, errors
  assert errors[0].startswith("error: DATASET = 'svamp', train split: could not download")
  assert "set DSBS_DATA_DIR to the folder holding 'svamp/'" in errors[0]
  assert not (tmp_path / "run").exists()


def _gs_reachable() -> bool:
  try:
    socket.getaddrinfo("storage.googleapis.com", 443)
    return True
  except OSError:
    return False


@pytest.mark.skipif(_gs_reachable(), reason="gs:// is reachable here: the offline error is moot")
def test_t5x_experiment_offline_names_vocab_and_checkpoint(capsys, tmp_path):
  rc, errors, _ = _train(capsys, tmp_path, gin_file="gin_configs/svamp_220m.gin")
  assert rc == 2 and len(errors) == 2, errors
  assert errors[0].startswith("error: INITIAL_CHECKPOINT_PATH = 'gs://t5-data/")
  assert errors[1].startswith("error: VOCAB = 't5': the public T5 SentencePiece model gs://")
  assert "--gin.VOCAB=\"'/path/to/sentencepiece.model'\" (DSBS_VOCAB" in errors[1]
  assert not (tmp_path / "run").exists()


def test_data_checked_before_training(capsys, tmp_path, user_module):
  del user_module
  # Feature lengths far below the data: an error with the length that fits most examples.
  gin_file = _gin(tmp_path / "short.gin", extra="TASK_FEATURE_LENGTHS = {'inputs': 4, "
                                                "'targets': 16}\n")
  rc, errors, _ = _train(capsys, tmp_path, gin_file=gin_file)
  assert rc == 2 and len(errors) == 2, errors  # the label and the rationale task
  assert "TASK_FEATURE_LENGTHS['inputs'] = 4: 100.0% of 180 mine_label_gt_byte train inputs" \
         in errors[0]
  assert "--gin.TASK_FEATURE_LENGTHS=\"{'inputs': 15, 'targets': 16}\"" in errors[0]
  # --then_evaluate on a dataset without a test split: said before training, not after it.
  rc, errors, _ = _train(capsys, tmp_path, "--then_evaluate",
                         gin_file=_gin(tmp_path / "nt.gin", "mine_notest"))
  assert rc == 2 and errors == [
      "error: --eval_split=test: DATASET = 'mine_notest' has no test split (its splits: "
      "['train', 'validation']); the evaluation after training would fail"]
  # A malformed row: file, line, field.
  rc, errors, _ = _train(capsys, tmp_path, gin_file=_gin(tmp_path / "bad.gin", "mine_bad"))
  assert rc == 2 and len(errors) == 1 and "bad.jsonl:3: field 'label': 'maybe' is not in the " \
         "label space ['no', 'yes']" in errors[0]
  assert not (tmp_path / "run").exists()


def test_batch_must_split_over_the_data_axis():
  problems = preflight._batch(  # pylint: disable=protected-access
      type("E", (), {"batch_size": 12})(), data_parallel=8, eval_batch_size=16)
  assert problems == ["BATCH_SIZE = 12: must be a multiple of the 8 devices of the mesh's data "
                      "axis, which split each batch (e.g. 16)"]


def test_user_dataset_without_validation_carves_it_and_selects_on_it(capsys, caplog, tmp_path,
                                                                      user_module):
  del user_module
  caplog.set_level(logging.INFO)
  rc, errors, out = _train(capsys, tmp_path, "--then_evaluate",
                           gin_file=_gin(tmp_path / "m.gin", steps=4))
  assert rc == 0, errors
  assert ("mine: no validation file: validation is the 10% of train whose "
          "sha256(\"dsbs-validation-v1:\" + id) sorts last (train excludes them)") in caplog.text
  assert "data mine_label_gt_byte: train 180, validation 20, test 12" in caplog.text
  rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in rows if r["kind"] == "eval"]
  assert [r["step"] for r in evals] == [2, 4]
  assert evals[-1]["mine_label_gt_byte/num_examples"] == 8  # eval_max_examples of the 20
  best = json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())
  assert best["metric"] == "accuracy" and best["step"] in (2, 4)  # chosen on validation
  result = json.loads(out)
  assert result["test"]["metrics"]["mine_label_gt_byte/num_examples"] == 12
  assert (tmp_path / "run" / "eval" / "test_greedy" / "metrics.json").exists()


def test_too_few_rows_to_carve_selects_on_the_last_step(capsys, caplog, tmp_path, user_module):
  del user_module
  caplog.set_level(logging.INFO)
  rc, errors, out = _train(capsys, tmp_path, "--then_evaluate",
                           gin_file=_gin(tmp_path / "f.gin", "mine_few", steps=3))
  assert rc == 0, errors
  assert ("mine_few has no validation examples (too few train examples to carve 10% from): no "
          "validation evaluation during training; the checkpoint of the last step (TRAIN_STEPS "
          "= 3) is the one kept, and evaluated on test") in caplog.text
  result = json.loads(out)
  assert result["eval"] == "none" and result["test"]["step"] == 3


def test_rerun_of_a_finished_run_says_so_and_still_evaluates(capsys, caplog, tmp_path):
  gin_file = support.tiny_gin(str(tmp_path / "e.gin"), steps=2,
                              extra="EVAL_PERIOD = 2\nTrainConfig.eval_max_examples = 4")
  rc, _, out = _train(capsys, tmp_path, gin_file=gin_file)
  first = json.loads(out)
  assert rc == 0 and first["step"] == 2 and first["eval"]["accuracy"] >= 0
  caplog.set_level(logging.INFO)
  rc, _, out = _train(capsys, tmp_path, "--then_evaluate", gin_file=gin_file)
  again = json.loads(out)
  assert rc == 0 and again["complete"] and again["step"] == 2
  assert again["eval"] == first["eval"]  # the run's last validation, not {}
  assert "holds the finished run: its checkpoints reach step 2 (TRAIN_STEPS = 2); nothing to " \
         "train" in caplog.text
  assert again["test"]["split"] == "test" and again["test"]["step"] == 2
  rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  assert len([r for r in rows if '"train"' in r]) == 2  # nothing trained the second time


def test_initial_checkpoint_of_another_shape_leaves_nothing(capsys, tmp_path):
  from dsbs import evaluate  # pylint: disable=g-import-not-at-top
  from dsbs.model import checkpoint_formats  # pylint: disable=g-import-not-at-top
  gin_file = support.tiny_gin(str(tmp_path / "e.gin"), steps=2, extra="EVAL_PERIOD = 0")
  train.main([f"--gin_file={gin_file}", f"--model_dir={tmp_path / 'first'}"])
  gin.clear_config()
  cfg, params, _ = evaluate.load_model(str(tmp_path / "first"))
  path = checkpoint_formats.export(params, cfg, str(tmp_path / "t5x"), fmt="t5x", step=2)
  assert path.endswith("checkpoint_2")
  start = [f"--gin.INITIAL_CHECKPOINT_PATH='{path}'", "--gin.TRAIN_STEPS=4"]
  rc, errors, _ = _train(capsys, tmp_path, *start, gin_file=gin_file)
  assert rc == 2 and errors == [
      "error: STUDENT = 'test_tiny' has vocab_size 256, fewer ids than VOCAB = 'byte' (259); a "
      "pretrained student (INITIAL_CHECKPOINT_PATH) cannot grow its vocabulary: pick its own "
      "VOCAB"]
  assert not (tmp_path / "run").exists()
  rc, errors, _ = _train(
      capsys, tmp_path, *start,
      "--gin.TrainConfig.model_overrides=(('vocab_size', 384), ('emb_dim', 32))",
      gin_file=gin_file)
  assert rc == 2 and len(errors) == 1 and errors[0].startswith(
      f"error: INITIAL_CHECKPOINT_PATH = '{path}' does not load as STUDENT = 'test_tiny' (pick "
      "the STUDENT the checkpoint was trained as): ")
  assert "decoder/decoder_norm/scale: got (64,), want (32,)" in errors[0]
  assert not (tmp_path / "run").exists()


# ---- python -m dsbs.tasks ---------------------------------------------------------------------

def test_tasks_cli_unknown_and_broken_datasets(capsys, user_module):
  import importlib  # pylint: disable=g-import-not-at-top
  importlib.import_module(user_module)
  assert tasks_cli.main(["--dataset=arht"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: --dataset=arht: not a registered dataset (did you mean arith?); "
                 f"registered: {sorted(__import__('dsbs.tasks').tasks.datasets())}"]
  assert tasks_cli.main(["--dataset=mine_bad"]) == 2
  out, err = capsys.readouterr()
  errors = err.strip().splitlines()
  assert len(errors) == 1 and errors[0].startswith("error: mine_bad train: ")  # said once
  assert errors[0].endswith("bad.jsonl:3: field 'label': 'maybe' is not in the label space "
                            "['no', 'yes']")  # whole
  assert out.count("mine_bad_label_gt") == 1  # the task list, without counts


# ---- the programs themselves (their console) ------------------------------------------------

def test_programs_print_one_line_and_nothing_else(tmp_path):
  env = support.subprocess_env()
  env.pop("TF_CPP_MIN_LOG_LEVEL")  # the programs quiet TensorFlow themselves
  listing = tmp_path / "datasets.json"
  listing.write_text('[{"name": "mine", "train": "nope.jsonl"}]')
  for argv, extra in (
      (["dsbs.train", f"--model_dir={tmp_path / 'run'}", "--gin.TRAIN_STEPZ=10"], {}),
      (["dsbs.evaluate", f"--checkpoint={tmp_path / 'nope'}"], {}),
      (["dsbs.train", f"--model_dir={tmp_path / 'run'}"], {"DSBS_USER_DATASETS": str(listing)})):
    r = subprocess.run([support.PYTHON, "-m", *argv], env={**env, **extra}, capture_output=True,
                       text=True, timeout=240, cwd=REPO)
    assert r.returncode == 2 and r.stdout == "", r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
  assert lines[0] == (f"error: DSBS_USER_DATASETS={listing}: {listing}:1: field 'train': file "
                      f"{tmp_path / 'nope.jsonl'} does not exist")
  assert not (tmp_path / "run").exists()

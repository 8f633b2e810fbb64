"""dsbs.evaluate on a checkpoint of the tiny runner: files, fields, decoding modes, the
default output dirs per decoder, the rationale metric, and one-line errors (exit code 2)."""
import json
import os
import re

import gin
import pytest

import train_fixtures as support
from dsbs import evaluate, train
from dsbs.model import checkpoint_formats

pytestmark = pytest.mark.timeout(300)
support.share_compilation_cache()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("ev")
  gin_file = support.tiny_gin(str(tmp / "e.gin"), steps=2, extra="EVAL_PERIOD = 0")
  train.main([f"--gin_file={gin_file}", f"--model_dir={tmp / 'run'}"])
  gin.clear_config()
  return tmp / "run"


def _read(out_dir):
  with open(os.path.join(out_dir, "metrics.json")) as f:
    metrics = json.load(f)
  with open(os.path.join(out_dir, "predictions.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return metrics, rows


def test_greedy_from_run_dir_writes_metrics_and_predictions(run_dir, tmp_path):
  out = evaluate.main([f"--checkpoint={run_dir}", "--split=test", f"--output_dir={tmp_path}",
                       "--max_examples=10", "--batch_size=4"])
  metrics, rows = _read(tmp_path)
  assert metrics == json.loads(json.dumps(out))
  assert metrics["task"] == "tiny_add_dsbs_byte" and metrics["split"] == "test" and metrics["step"] == 2
  assert metrics["metrics"]["tiny_add_label_gt_byte/num_examples"] == 10
  assert 0.0 <= metrics["metrics"]["accuracy"] <= 100.0
  assert len(rows) == 10  # only the scored (predict:) task is decoded
  for row in rows:
    assert {"id", "input", "target", "prediction", "correct"} <= set(row)
    assert row["input"].startswith("predict: ") and row["correct"] == (row["prediction"] == row["target"])  # exact-match task
  assert sum(r["correct"] for r in rows) / 10 * 100 == pytest.approx(metrics["metrics"]["accuracy"])


def test_beam_with_rationale_from_step_dir(run_dir, tmp_path):
  step_dir = run_dir / "checkpoints" / "2"
  evaluate.main([f"--checkpoint={step_dir}", "--task=tiny_add_dsbs_byte", "--split=validation",
                 "--decode=beam", "--num_beams=2", "--with_rationale", "--max_examples=4",
                 f"--output_dir={tmp_path}"])
  metrics, rows = _read(tmp_path)
  assert metrics["decode"] == "beam" and metrics["num_beams"] == 2
  assert len(rows) == 4 and all(isinstance(r["rationale"], str) for r in rows)


def _evaluate(capsys, *argv):
  rc = evaluate.cli(list(argv))
  out, err = capsys.readouterr()
  assert "Traceback" not in err
  return rc, [line for line in err.splitlines() if line.startswith("error: ")], out


def test_evaluate_errors(capsys, tmp_path, run_dir):
  (tmp_path / "empty").mkdir()
  (tmp_path / "fresh_run").mkdir()
  (tmp_path / "fresh_run" / "model_config.json").write_text("{}")
  cases = [
      ([f"--checkpoint={tmp_path / 'nope'}"], f"--checkpoint={tmp_path / 'nope'}: no such file "
                                              "or directory; expected a dsbs run dir"),
      ([f"--checkpoint={tmp_path / 'empty'}"], "the directory is empty; expected a dsbs run dir"),
      ([f"--checkpoint={tmp_path / 'fresh_run'}"], "holds no checkpoint yet"),
      ([f"--checkpoint={run_dir}", "--num_beams=0", "--decode=beam"],
       "--num_beams=0: must be a positive integer"),
      ([f"--checkpoint={run_dir}", "--batch_size=-1"],
       "--batch_size=-1: must be a positive integer"),
      ([f"--checkpoint={run_dir}", "--task=tiny_add_dsbs_bte"],
       "--task=tiny_add_dsbs_bte: not a registered task or mixture (did you mean "
       "tiny_add_dsbs_byte"),
      ([f"--checkpoint={run_dir}", "--split=dev"],
       "--split=dev: task tiny_add_label_gt_byte has the splits ['train', 'validation', 'test']"),
      ([f"--checkpoint={run_dir}", "--feature_lengths={inputs: 3}"],
       "--feature_lengths={inputs: 3}: not JSON"),
  ]
  before = sorted(run_dir.rglob("*"))
  for argv, message in cases:
    rc, errors, _ = _evaluate(capsys, *argv)
    assert rc == 2 and len(errors) == 1 and message in errors[0], (argv, errors)
  assert sorted(run_dir.rglob("*")) == before  # nothing written by a refused evaluation


def test_evaluate_writes_per_decoder_and_scores_rationales(capsys, run_dir):
  for argv in (["--decode=greedy"], ["--decode=beam", "--num_beams=2"]):
    rc, errors, _ = _evaluate(capsys, f"--checkpoint={run_dir}", "--max_examples=4",
                              "--with_rationale", *argv)
    assert rc == 0, errors
  greedy = json.loads((run_dir / "eval" / "test_greedy" / "metrics.json").read_text())
  beam = json.loads((run_dir / "eval" / "test_beam2" / "metrics.json").read_text())
  assert greedy["decode"] == "greedy" and beam["decode"] == "beam" and beam["num_beams"] == 2
  score = greedy["metrics"]["tiny_add_label_gt_byte/rationale_ends_in_gold"]
  rows = [json.loads(l) for l in
          (run_dir / "eval" / "test_greedy" / "predictions.jsonl").read_text().splitlines()]
  numbers = [re.findall(r"\d+(?:\.\d+)?", r["rationale"]) for r in rows]
  want = sum(bool(n) and float(n[-1]) == float(r["target"]) for n, r in zip(numbers, rows))
  assert len(rows) == 4 and score == pytest.approx(100.0 * want / len(rows))


def test_hf_and_t5x_exports_evaluate_like_the_run_dir(run_dir, tmp_path):
  """The same weights exported to HF and T5X formats give the same predictions."""
  cfg, params, _ = evaluate.load_model(str(run_dir))
  hf_dir = checkpoint_formats.export(params, cfg, str(tmp_path / "hf"), fmt="hf")
  t5x_dir = checkpoint_formats.export(params, cfg, str(tmp_path / "t5x"), fmt="t5x", step=2)
  common = ["--task=tiny_add_dsbs_byte", "--split=test", "--max_examples=6",
            '--feature_lengths={"inputs": 24, "targets": 16}']
  evaluate.main([f"--checkpoint={run_dir}", f"--output_dir={tmp_path / 'a'}", *common])
  evaluate.main([f"--checkpoint={hf_dir}", f"--output_dir={tmp_path / 'b'}", *common])
  evaluate.main([f"--checkpoint={t5x_dir}", f"--model={run_dir / 'model_config.json'}",
                 f"--output_dir={tmp_path / 'c'}",
                 *common])
  preds = [[r["prediction_text"] for r in _read(tmp_path / d)[1]] for d in "abc"]
  assert preds[0] == preds[1] == preds[2] and len(preds[0]) == 6

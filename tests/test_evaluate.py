"""dsbs.evaluate on a checkpoint of the tiny runner: files, fields, decoding modes."""
import json
import os

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


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises((FileNotFoundError, ValueError)):
    evaluate.main([f"--checkpoint={tmp_path}", "--task=tiny_add_dsbs_byte"])


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

"""Run-dir writer: JSONL rows, TensorBoard scalars without the tensorboard package, rates."""
import glob
import json

import pytest
import tensorflow as tf

from dsbs import summaries


def test_jsonl_and_tensorboard(tmp_path):
  log = summaries.RunLog(str(tmp_path), start_step=0, total_steps=10, progress=False)
  rates = log.rates(5, tokens=1000.0)
  assert rates["steps_per_s"] > 0 and rates["tokens_per_s"] > 0
  log.write(5, "train", {"loss": 2.5, "lr": 0.1, **rates})
  log.write(6, "train", {"loss": float("nan")})
  log.write(6, "eval", {"accuracy": 12.5})
  log.close()
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows[0]["step"] == 5 and rows[0]["loss"] == 2.5 and rows[0]["kind"] == "train"
  assert rows[1]["loss"] == "nan"  # kept visible, valid JSON
  assert rows[2] == {"step": 6, "kind": "eval", "accuracy": 12.5}
  seen = {}
  for kind in ("train", "eval"):
    for f in glob.glob(str(tmp_path / "tb" / kind / "*")):
      for e in tf.compat.v1.train.summary_iterator(f):
        for v in e.summary.value:
          seen[(kind, v.tag, e.step)] = float(tf.make_ndarray(v.tensor))
  assert seen == pytest.approx({("train", "loss", 5): 2.5, ("train", "lr", 5): 0.1,
                  ("train", "steps_per_s", 5): rates["steps_per_s"],
                  ("train", "tokens_per_s", 5): rates["tokens_per_s"],
                  ("eval", "accuracy", 6): 12.5}, rel=1e-6)  # float32 in the event file


def test_write_json_and_versions(tmp_path):
  summaries.write_json(str(tmp_path), "x.json", {"a": 1})
  assert summaries.read_json(str(tmp_path / "x.json")) == {"a": 1}
  assert "jax" in summaries.versions()

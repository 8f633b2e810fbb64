"""The synthetic `arith` set: determinism, sizes, noise rates, learnability limits, parser path."""
import collections
import dataclasses
import re

import pytest

from dsbs import experiment
from dsbs.data import load_examples, parse_output
from dsbs.data import stats, synthetic
from dsbs.data.record import NO_TEACHER, OK, PARSE_STATUSES

SMALL = synthetic.ArithConfig(seed=3, train_size=400, validation_size=100, test_size=100)


def _check_arithmetic(rationale):
  for a, op, b, c in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", rationale):
    yield int({"+": lambda: int(a) + int(b), "-": lambda: int(a) - int(b),
               "*": lambda: int(a) * int(b)}[op]()) == int(c)


def test_default_splits_sizes_and_limits():
  splits = {s: load_examples("arith", s) for s in ("train", "validation", "test")}
  assert {s: len(v) for s, v in splits.items()} == {"train": 5000, "validation": 500, "test": 500}
  inputs = [set(e.input for e in v) for v in splits.values()]
  assert sum(map(len, inputs)) == 6000  # distinct problems, none shared across splits
  ids = [e.id for v in splits.values() for e in v]
  assert len(set(ids)) == len(ids) and ids[0] == "arith-train-0"
  cfg = synthetic.ArithConfig()
  most = cfg.max_start + max(cfg.num_steps) * max(cfg.max_operand, cfg.max_packs * cfg.max_pack_size)
  for ex in splits["train"]:
    # Short and narrow enough for the main job's byte student (inputs 82, targets 50 with EOS).
    assert len(ex.input) <= 72 and 1 <= int(ex.label) <= most == 27
    assert ex.meta["steps"] == 2
    if ex.rationale:
      assert len(ex.rationale) <= 48
  labels = collections.Counter(e.label for e in splits["test"])
  assert len(labels) >= 20 and labels.most_common(1)[0][1] / 500 < 0.1  # no dominant answer


def test_deterministic_by_seed():
  a = synthetic.generate(SMALL)
  b = synthetic.generate(dataclasses.replace(SMALL))  # equal config, same cache entry
  assert a is b
  synthetic.generate.cache_clear()
  c = synthetic.generate(SMALL)
  assert a == c
  d = synthetic.generate(dataclasses.replace(SMALL, seed=4))
  assert [e.input for e in d["test"]] != [e.input for e in a["test"]]
  # Growing train does not move test or validation.
  e = synthetic.generate(dataclasses.replace(SMALL, train_size=800))
  assert e["test"] == a["test"] and e["validation"] == a["validation"]


def test_noise_rates_and_statuses():
  train = load_examples("arith", "train")
  s = stats.compute_stats(train, "numeric")
  counts = s["status_counts"]
  assert set(k for k, v in counts.items() if v) == set(PARSE_STATUSES) - {NO_TEACHER}
  assert 1.0 <= 100 * (len(train) - counts[OK]) / len(train) <= 3.0  # unparseable_rate = 2%
  assert 86.0 <= s["teacher_accuracy"] <= 90.0  # 10% consistent slips + 2% unparseable
  noise = collections.Counter(e.meta["teacher_noise"] for e in train)
  assert 0.08 <= noise["wrong"] / len(train) <= 0.12
  for ex in train:
    if ex.parse_status != OK:
      continue
    checks = list(_check_arithmetic(ex.rationale))
    if ex.meta["teacher_noise"] == "clean":
      assert ex.teacher_label == ex.label and all(checks)
      # Every intermediate result is written down, the last one is the answer.
      results = [int(c) for c in re.findall(r"= (\d+)", ex.rationale)]
      assert results[-1] == int(ex.label) and len(results) >= ex.meta["steps"]
    else:  # one slip, carried on: wrong answer consistent with the rationale's last result
      assert ex.teacher_label != ex.label and checks.count(False) == 1
      assert ex.rationale.rstrip(".").endswith(f"= {ex.teacher_label}")


def test_goes_through_the_parser():
  rng = synthetic.random.Random(0)
  problem = synthetic._make_problem(rng, SMALL)  # pylint: disable=protected-access
  text, noise = synthetic.teacher_text(problem, rng, dataclasses.replace(SMALL, follow_up_rate=1.0))
  assert noise == "clean" and "\n\nQ:" in text
  r = parse_output(text, kind="numeric")
  assert r.status == OK and r.label == str(problem.answer) and "Q:" not in r.rationale


def test_main_job_lengths_cover_the_data():
  """default.gin's feature lengths fit every byte sequence of the default set (nothing cut)."""
  from dsbs import experiment  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  try:
    exp = experiment.load([experiment.REPO_GIN_DIR + "/default.gin"]).experiment
  finally:
    gin.clear_config()
  assert exp.mixture_or_task_name == "arith_dsbs_pct25_byte"
  exs = [e for s in ("train", "validation", "test") for e in load_examples("arith", s)]
  longest_input = max(len(e.input.encode()) for e in exs) + len("explain: ") + 1  # + EOS
  longest_target = max(len((e.rationale or e.label).encode()) for e in exs) + 1
  assert exp.task_feature_lengths["inputs"] >= longest_input
  assert exp.task_feature_lengths["targets"] >= longest_target
  # ... and are tight (the student's step time grows with them).
  assert exp.task_feature_lengths["inputs"] <= longest_input + 8
  assert exp.task_feature_lengths["targets"] <= longest_target + 8


def test_step_counts():
  cfg = dataclasses.replace(SMALL, num_steps=(1, 3))
  exs = synthetic.generate(cfg)["train"]
  assert set(e.meta["steps"] for e in exs) == {1, 3}
  one = next(e for e in exs if e.meta["steps"] == 1)
  assert ", then" not in one.input


def test_bad_config(monkeypatch):
  with pytest.raises(ValueError, match="wrong_rate"):
    synthetic.ArithConfig(wrong_rate=1.5)
  with pytest.raises(ValueError, match="must be <= 1"):
    synthetic.ArithConfig(wrong_rate=0.6, unparseable_rate=0.6)
  with pytest.raises(ValueError, match="num_steps"):
    synthetic.ArithConfig(num_steps=())
  with pytest.raises(ValueError, match="max_packs"):
    synthetic.ArithConfig(max_packs=1)
  fixed = synthetic.Problem("Mia has 2 pens. Mia finds 1, then loses 1. How many?", 2,
                            (("+", 1, 0), ("-", 1, 0)), 2)
  monkeypatch.setattr(synthetic, "_make_problem", lambda rng, cfg: fixed)
  with pytest.raises(ValueError, match="distinct"):  # an exhausted problem space stops, not hangs
    synthetic.generate(synthetic.ArithConfig(seed=99, train_size=2, validation_size=0, test_size=0))

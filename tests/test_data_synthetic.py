"""The synthetic `arith` set: determinism, sizes, noise rates, learnability limits, parser path."""
import collections
import dataclasses
import re

import pytest

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
  for ex in splits["train"]:
    assert len(ex.input) < 120 and 0 <= int(ex.label) < 200
    if ex.rationale:
      assert len(ex.rationale) < 120


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
  assert 84.0 <= s["teacher_accuracy"] <= 90.0  # 12% consistent slips + 2% unparseable
  noise = collections.Counter(e.meta["teacher_noise"] for e in train)
  assert 0.10 <= noise["wrong"] / len(train) <= 0.14
  for ex in train:
    if ex.parse_status != OK:
      continue
    checks = list(_check_arithmetic(ex.rationale))
    if ex.meta["teacher_noise"] == "clean":
      assert ex.teacher_label == ex.label and all(checks)
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


def test_bad_config(monkeypatch):
  with pytest.raises(ValueError, match="wrong_rate"):
    synthetic.ArithConfig(wrong_rate=1.5)
  with pytest.raises(ValueError, match="must be <= 1"):
    synthetic.ArithConfig(wrong_rate=0.6, unparseable_rate=0.6)
  fixed = synthetic.Problem("Mia has 2 pens. Mia finds 1, then loses 1. How many?", 2,
                            (("+", 1, 0), ("-", 1, 0)), 2)
  monkeypatch.setattr(synthetic, "_make_problem", lambda rng, cfg: fixed)
  with pytest.raises(ValueError, match="distinct"):  # an exhausted problem space stops, not hangs
    synthetic.generate(synthetic.ArithConfig(seed=99, train_size=2, validation_size=0, test_size=0))

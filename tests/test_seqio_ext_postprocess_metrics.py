"""Postprocessors (text -> label), CoT answer extraction and accuracy metrics."""
import math
import pickle

import pytest

from dsbs.seqio_ext import metrics
from dsbs.seqio_ext import postprocessors as pp
from dsbs.seqio_ext import preprocessors

NLI = ("entailment", "neutral", "contradiction")


@pytest.mark.parametrize("text,label", [
    ("neutral", "neutral"), (" Neutral. ", "neutral"), (b"CONTRADICTION", "contradiction"),
    ("contradiction, because the premise says", "contradiction"), ("entailment!", "entailment"),
    ("maybe", "maybe"), ("", ""),
])
def test_classification(text, label):
  assert pp.to_label(text, kind="classification", label_space=NLI) == label


def test_multiple_choice_and_free_normalise():
  assert pp.to_label("  Gather   Flowers. ", kind="multiple_choice") == "gather flowers"
  assert pp.to_label("\u201cPublic place\u201d", kind="free") == "public place"


def test_arithmetic_keeps_expression():
  assert pp.to_label(" ( 84.0 / 2.0 ). ", kind="arithmetic") == "( 84.0 / 2.0 )"


@pytest.mark.parametrize("rationale,label", [
    ("84 / 2 = 42.", "( 84.0 / 2.0 )"), (None, "neutral"), ("", "gather flowers"),
    ("So the answer is a trap. Then more.", "2.5"),
])
def test_cot_round_trip(rationale, label):
  target = preprocessors.cot_target(rationale, label)
  assert target.endswith(f"So the answer is {label}.")
  assert pp.extract_cot_answer(target) == label


def test_cot_extraction_edge_cases():
  assert pp.extract_cot_answer("no phrase here") == ""
  assert pp.extract_cot_answer("x. so the answer is: Neutral.\nQ: next") == "Neutral"
  post = pp.make_postprocessor("classification", NLI, cot=True)
  assert post("The man sleeps. So the answer is contradiction.", is_target=False) == "contradiction"
  assert post("rambling without an answer") == ""


def test_postprocessor_is_picklable_and_validates_kind():
  post = pickle.loads(pickle.dumps(pp.make_postprocessor("multiple_choice")))
  assert post("Zoo.", example={}, is_target=True) == "zoo"
  with pytest.raises(ValueError, match="kind"):
    pp.make_postprocessor("regression")


def test_exact_accuracy():
  assert metrics.exact_accuracy(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == {"accuracy": 75.0}
  assert math.isnan(metrics.exact_accuracy([], [])["accuracy"])
  with pytest.raises(ValueError):
    metrics.exact_accuracy(["a"], [])


def test_value_accuracy_compares_values():
  targets = ["( 84.0 / 2.0 )", "( 10.0 - ( 6.0 + 3.0 ) )", "12", "( 1.0 / 3.0 )", "5"]
  preds = ["(84/2)", "1", "12.0", "0.333333333", "1/0"]
  # 84/2 = 42 ok; 10-(6+3) = 1 ok; 12 ok; 1/3 vs 0.333333333 within 1e-6 ok; 1/0 wrong.
  assert metrics.value_accuracy(targets, preds) == {"accuracy": 80.0}
  assert metrics.value_accuracy(["3"], ["import os"]) == {"accuracy": 0.0}
  with pytest.raises(ValueError, match="target 0"):
    metrics.value_accuracy(["three"], ["3"])


def test_metric_for_kind():
  assert metrics.metric_for("arithmetic") is metrics.value_accuracy
  assert metrics.metric_for("numeric") is metrics.value_accuracy
  assert metrics.metric_for("classification") is metrics.exact_accuracy

"""Readers of the released benchmarks: real-data rates, splits, ids, and bad-input errors."""
import functools
import json
import os
import re

import pytest

from dsbs.data import (DATASETS, SPECS, MissingSplitError, RecordError, arithmetic, kind, label_space,
                       load_examples)
from dsbs.data import released, stats
from dsbs.data.record import NO_TEACHER, OK

# Measured on the released copy (parse success %, teacher accuracy % of rows with a teacher output):
#   anli1 validation 99.9 / 67.5   test 100.0 / 66.4
#   esnli validation 99.96 / 73.2  test 100.0 / 73.0
#   cqa   train 97.0 / 75.2        validation 97.6 / 77.0   test 97.95 / 78.5
#   svamp train 96.0 / 74.0        validation 95.0 / 78.8   test 96.5 / 77.5
# Floors sit just under the measurement; accuracy bands allow small parser changes, not breakage.
EXPECTED = {
    ("anli1", "validation"): (99.5, 64, 71), ("anli1", "test"): (99.5, 63, 70),
    ("esnli", "validation"): (99.5, 71, 75), ("esnli", "test"): (99.5, 71, 75),
    ("cqa", "train"): (96.5, 73, 78), ("cqa", "validation"): (96.0, 72, 82),
    ("cqa", "test"): (97.0, 75, 81),
    ("svamp", "train"): (95.0, 71, 77), ("svamp", "validation"): (92.0, 70, 87),
    ("svamp", "test"): (95.0, 73, 82),
}
SIZES = {("anli1", "validation"): 1000, ("anli1", "test"): 1000, ("esnli", "validation"): 9842,
         ("esnli", "test"): 9824, ("cqa", "train"): 8767, ("cqa", "validation"): 974,
         ("cqa", "test"): 1221, ("svamp", "train"): 720, ("svamp", "validation"): 80,
         ("svamp", "test"): 200}


@functools.lru_cache(maxsize=None)
def _load(data_dir, dataset, split):
  return load_examples(dataset, split, data_dir)


@pytest.mark.parametrize("dataset,split", sorted(EXPECTED))
def test_parse_rates_on_released_outputs(data_dir, dataset, split):
  examples = _load(data_dir, dataset, split)
  assert len(examples) == SIZES[dataset, split]
  s = stats.compute_stats(examples, kind(dataset))
  floor, lo, hi = EXPECTED[dataset, split]
  assert s["parse_success_rate"] >= floor, s
  assert lo <= s["teacher_accuracy"] <= hi, s
  assert s["status_counts"][NO_TEACHER] == 0
  assert sum(s["status_counts"].values()) == len(examples)
  space = label_space(dataset)
  for ex in examples:
    if ex.parse_status == OK:
      assert ex.rationale and ex.rationale == ex.rationale.strip()
      assert "\n\n" not in ex.rationale and not re.search(r"\n(Q|Premise|Question):", ex.rationale)
      if space is not None:
        assert ex.teacher_label in space and ex.label in space
      elif dataset == "cqa":
        assert ex.teacher_label in ex.meta["choices"] and ex.label in ex.meta["choices"]
      else:  # svamp: a gold-format expression whose value is the teacher's answer
        arithmetic.evaluate(ex.teacher_label)
        assert ex.teacher_label.startswith("( ") or re.fullmatch(r"-?\d+\.\d+", ex.teacher_label)


def test_input_formats_ids_and_meta(data_dir):
  nli = _load(data_dir, "anli1", "test")[0]
  assert nli.input.startswith("premise: Ernest Jones") and " hypothesis: The first" in nli.input
  assert nli.id == "4aae63a8-fcf7-406c-a2f3-50c31c5934a9"
  assert nli.label == "entailment" and nli.meta["source"] == "anli1_test.json:1"
  cqa = _load(data_dir, "cqa", "test")[0]
  assert cqa.input == ("question: A beaver is know for building prowess, their supplies come from "
                       "where? answer choices: (a) british columbia (b) body of water "
                       "(c) wooded area (d) pay debts (e) zoo")
  assert cqa.meta["choices"][2] == cqa.label == cqa.teacher_label == "wooded area"
  svamp = _load(data_dir, "svamp", "test")[0]
  assert svamp.id == "svamp-test-0" and "\n" not in svamp.input
  assert svamp.label == "( 10.0 * 45.0 )" and svamp.teacher_label == "( 10.0 * 45.0 )"
  esnli = _load(data_dir, "esnli", "test")
  assert esnli[0].id == "esnli-test-0" and len({e.id for e in esnli}) == len(esnli)
  assert len(esnli[0].meta["human_explanations"]) == 3


@pytest.mark.parametrize("dataset,n_train", [("cqa", 9741), ("svamp", 800)])
def test_validation_is_deterministic_slice_of_train(data_dir, dataset, n_train):
  train = [e.id for e in _load(data_dir, dataset, "train")]
  val = [e.id for e in _load(data_dir, dataset, "validation")]
  assert len(train) + len(val) == n_train
  assert not set(train) & set(val)
  assert len(val) == round(0.1 * n_train)
  again = released.load_released(dataset, "validation", data_dir)  # fresh, uncached read
  assert [e.id for e in again] == val
  # Held-out ids depend only on the ids themselves, not on row order.
  assert released.validation_ids(list(reversed(train + val))) == set(val)


@pytest.mark.parametrize("dataset", ["anli1", "esnli"])
def test_missing_train_split_is_a_clear_error(data_dir, dataset):
  with pytest.raises(MissingSplitError) as err:
    load_examples(dataset, "train", data_dir)
  msg = str(err.value)
  assert f"{dataset}_train.json" in msg and "datasets.zip" in msg and "DSBS_DATA_DIR" in msg
  assert isinstance(err.value, FileNotFoundError)


def test_specs_and_label_spaces():
  assert DATASETS == ("anli1", "esnli", "cqa", "svamp")
  assert label_space("anli1") == ["entailment", "neutral", "contradiction"]
  assert label_space("cqa") is None and label_space("svamp") is None and label_space("arith") is None
  assert [kind(d) for d in DATASETS + ("arith",)] == [
      "classification", "classification", "multiple_choice", "arithmetic", "numeric"]
  assert SPECS["cqa"].files["validation"] is None
  with pytest.raises(ValueError, match="unknown dataset"):
    load_examples("mnli", "test")
  with pytest.raises(ValueError, match="unknown split"):
    load_examples("svamp", "dev")


# --- bad input in small files written here -------------------------------------------------------


def _write_release(root, dataset, file_split, rows, outputs=None, raw_lines=None):
  d = os.path.join(root, dataset)
  os.makedirs(os.path.join(d, "llm"), exist_ok=True)
  with open(os.path.join(d, f"{dataset}_{file_split}.json"), "w") as f:
    for line in raw_lines if raw_lines is not None else [json.dumps(r) for r in rows]:
      f.write(line + "\n")
  if outputs is not None:
    with open(os.path.join(d, "llm", f"{file_split}_CoT_0.json"), "w") as f:
      json.dump(outputs, f)
  return os.path.join(d, f"{dataset}_{file_split}.json")


NLI_ROW = {"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": 0}


def test_small_release_round_trip(tmp_path):
  _write_release(str(tmp_path), "esnli", "test", [NLI_ROW, {**NLI_ROW, "label": 2}],
                 ["Sleeping is resting.\nAnswer: entailment", "Hmm\nAnswer: dunno"])
  exs = load_examples("esnli", "test", str(tmp_path))
  assert [e.parse_status for e in exs] == ["ok", "unmapped_label"]
  assert exs[1].label == "contradiction" and exs[1].meta["teacher_answer"] == "dunno"


@pytest.mark.parametrize("lines,field,line_no,pattern", [
    (['{"premise": "a", "hypothesis": "b", "label": 0}', '{"premise": "a", "hypo'], None, 2,
     "malformed JSON"),
    (['{"premise": "a", "label": 0}'], "hypothesis", 1, "missing required field"),
    (['{"premise": "a", "hypothesis": "b", "label": 3}'], "label", 1, "unknown label 3"),
    (['{"premise": "a", "hypothesis": "b", "label": "maybe"}'], "label", 1, "unknown label"),
    (['{"premise": 5, "hypothesis": "b", "label": 0}'], "premise", 1, "expected str"),
    (['[1, 2]'], None, 1, "expected a JSON object"),
])
def test_bad_nli_rows(tmp_path, lines, field, line_no, pattern):
  path = _write_release(str(tmp_path), "esnli", "test", None, None, raw_lines=lines)
  with pytest.raises(RecordError, match=pattern) as err:
    load_examples("esnli", "test", str(tmp_path))
  assert (err.value.path, err.value.line, err.value.field) == (path, line_no, field)
  assert f"{path}:{line_no}" in str(err.value)


def test_bad_cqa_and_svamp_rows(tmp_path):
  row = {"id": "q1", "question": "Where?", "choices": ["a", "b"], "answer": "c"}
  _write_release(str(tmp_path), "cqa", "test", [row])
  with pytest.raises(RecordError, match="unknown label 'c'") as err:
    load_examples("cqa", "test", str(tmp_path))
  assert err.value.field == "answer"
  _write_release(str(tmp_path), "cqa", "test", [{**row, "answer": "a"}, {**row, "answer": "b"}])
  with pytest.raises(RecordError, match="duplicate id 'q1'") as err:
    load_examples("cqa", "test", str(tmp_path))
  assert err.value.line == 2
  _write_release(str(tmp_path), "svamp", "test", [{"input": "x\ny?", "label": "( 2.0 + x )"}])
  with pytest.raises(RecordError, match="not an arithmetic expression") as err:
    load_examples("svamp", "test", str(tmp_path))
  assert err.value.field == "label"


def test_bad_teacher_files(tmp_path, caplog):
  root = str(tmp_path)
  _write_release(root, "esnli", "test", [NLI_ROW, NLI_ROW], ["only one\nAnswer: neutral"])
  with pytest.raises(RecordError, match="hold 1 outputs but .* has 2 rows"):
    load_examples("esnli", "test", root)
  _write_release(root, "esnli", "test", [NLI_ROW], [{"text": "x"}])
  with pytest.raises(RecordError, match="list item 0: expected a string") as err:
    load_examples("esnli", "test", root)
  assert err.value.path.endswith("test_CoT_0.json")
  with open(os.path.join(root, "esnli", "llm", "test_CoT_0.json"), "w") as f:
    f.write("[\"a\", ")
  with pytest.raises(RecordError, match="malformed JSON"):
    load_examples("esnli", "test", root)
  os.rename(os.path.join(root, "esnli", "llm", "test_CoT_0.json"),
            os.path.join(root, "esnli", "llm", "test_CoT_1.json"))
  with pytest.raises(RecordError, match="not numbered 0..n-1"):
    load_examples("esnli", "test", root)
  os.remove(os.path.join(root, "esnli", "llm", "test_CoT_1.json"))
  exs = load_examples("esnli", "test", root)  # no teacher outputs: kept, counted, warned
  assert [e.parse_status for e in exs] == [NO_TEACHER]
  assert "no teacher outputs" in caplog.text

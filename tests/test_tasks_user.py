"""A user's own dataset: plain/canonical JSONL, config file, errors naming file/line/field."""
import json

import pytest
import seqio

import dsbs.tasks
from dsbs.data import record
from dsbs.tasks import user

LENGTHS = {"inputs": 64, "targets": 64}


def _write(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return str(path)


PLAIN = [
    {"input": "the sky is blue", "label": "yes", "rationale": "It is blue.",
     "teacher_label": "yes"},
    {"input": "grass is red", "label": "no", "rationale": "Grass is green."},
    {"input": "snow is hot", "label": "no"},
    {"input": "fire is hot", "label": "yes", "teacher_label": "no"},
]


def _texts(name, split, field="targets_pretokenized"):
  ds = seqio.get_mixture_or_task(name).get_dataset(LENGTHS, split=split, shuffle=False)
  return [(e["id"].decode(), e[field].decode()) for e in ds.as_numpy_iterator()]


def test_plain_jsonl_family(tmp_path):
  train = _write(tmp_path / "train.jsonl", PLAIN)
  test = _write(tmp_path / "test.jsonl", [{"id": "t1", "input": "ice is cold", "label": "yes"}])
  names = dsbs.tasks.register_dataset("toy_plain", train=train, test=test,
                                      kind="classification", label_space=["yes", "no"],
                                      replace=True)
  assert "toy_plain_dsbs_pct50_rate0.25_byte" in names and "toy_plain_cot" in names
  # id defaults to the line number; rows without a rationale are skipped by the rationale task.
  assert _texts("toy_plain_label_gt_byte", "train") == [
      ("1", "yes"), ("2", "no"), ("3", "no"), ("4", "yes")]
  # A rationale without teacher_label explains the gold label; rows 3-4 are not OK.
  assert _texts("toy_plain_rationale_byte", "train") == [("1", "It is blue."),
                                                         ("2", "Grass is green.")]
  assert _texts("toy_plain_distill_byte", "train") == [("1", "yes"), ("2", "no")]
  assert _texts("toy_plain_cot_byte", "test") == [("t1", "So the answer is yes.")]
  # No validation file: validation is carved from train (none of 4 rows: 10% rounds to 0).
  assert seqio.get_mixture_or_task("toy_plain_dsbs_byte").tasks[0].splits == (
      "train", "validation", "test")
  assert _texts("toy_plain_label_gt_byte", "validation") == []
  skips = seqio.get_mixture_or_task("toy_plain_rationale_byte").source.skip_counts("train")
  assert skips == {"parse_status=no_teacher": 2}
  with pytest.raises(ValueError, match="already registered"):
    dsbs.tasks.register_dataset("toy_plain", train=train)
  # Replacing the dataset re-reads its (new) files, not the cached old ones.
  train2 = _write(tmp_path / "train2.jsonl", [{"input": "moon is cheese", "label": "no"}])
  dsbs.tasks.register_dataset("toy_plain", train=train2, label_space=["yes", "no"],
                              replace=True, vocabs=("byte",), fractions=(100,), rates=())
  assert _texts("toy_plain_label_gt_byte", "train") == [("1", "no")]
  assert "toy_plain_cot_pct10_byte" not in seqio.TaskRegistry.names()  # old grid removed


def test_canonical_jsonl(tmp_path):
  rows = [record.Example(id="a", input="1 + 2", label="3", teacher_label="3",
                         rationale="1 + 2 = 3.", parse_status=record.OK),
          record.Example(id="b", input="2 * 5", label="10", teacher_label=None,
                         parse_status=record.NO_ANSWER)]
  path = str(tmp_path / "canon.jsonl")
  record.write_jsonl(path, rows)
  dsbs.tasks.register_dataset("toy_canon", train=path, kind="numeric", replace=True,
                              vocabs=("byte",), fractions=(100,), rates=())
  assert [t.name for t in seqio.get_mixture_or_task("toy_canon_dsbs_llm_byte").tasks] == [
      "toy_canon_label_llm_byte", "toy_canon_rationale_byte"]
  assert _texts("toy_canon_label_llm_byte", "train", "inputs_pretokenized") == [
      ("a", "predict: 1 + 2")]
  assert _texts("toy_canon_rationale_byte", "train") == [("a", "1 + 2 = 3.")]
  assert "toy_canon_dsbs_pct10_byte" not in seqio.MixtureRegistry.names()  # grid overridden
  task = seqio.get_mixture_or_task("toy_canon_label_gt_byte")
  assert task.metric_fns[0](["3", "10"], ["3.0", "9"]) == {"accuracy": 50.0}


@pytest.mark.parametrize("line,field,match", [
    ('{"input": "x", "label": "maybe"}', "label", "label space"),
    ('{"input": "x", "label": "yes", "colour": 1}', "colour", "unknown field"),
    ('{"label": "yes"}', "input", "missing"),
    ('{"input": "x", "label": 3}', "label", "expected a string"),
    ('{"input": "x", "label": "yes"', None, "malformed JSON"),
    ('["input", "x"]', None, "JSON object"),
    ('{"input": "  ", "label": "yes"}', "input", "empty"),
    ('{"id": "1", "input": "y", "label": "no"}', "id", "duplicate id"),
])
def test_bad_rows_name_file_line_field(tmp_path, line, field, match):
  path = _write(tmp_path / "bad.jsonl", ['{"input": "ok", "label": "yes"}', "", line])
  with pytest.raises(record.RecordError, match=match) as err:
    user.read_user_jsonl(path, kind="classification", label_space=["yes", "no"])
  assert err.value.path == path and err.value.line == 3 and err.value.field == field
  assert f"{path}:3" in str(err.value)


def test_bad_arithmetic_label(tmp_path):
  path = _write(tmp_path / "a.jsonl", ['{"input": "x", "label": "( 1.0 + 2.0 )"}',
                                       '{"input": "y", "label": "two"}'])
  with pytest.raises(record.RecordError, match="arithmetic") as err:
    user.read_user_jsonl(path, kind="arithmetic")
  assert (err.value.line, err.value.field) == (2, "label")


def test_config_file_from_env(tmp_path, monkeypatch):
  _write(tmp_path / "tr.jsonl", PLAIN)
  config = tmp_path / "datasets.json"
  config.write_text(json.dumps([{"name": "toy_cfg", "train": "tr.jsonl", "kind": "free",
                                 "replace": True}], indent=2))
  monkeypatch.setenv("DSBS_USER_DATASETS", str(config))
  names = user.register_from_env()  # what `import dsbs.tasks` runs
  assert "toy_cfg_dsbs_byte" in names and "toy_cfg" in dsbs.tasks.datasets()
  assert _texts("toy_cfg_finetune_byte", "train")[0] == ("1", "yes")


@pytest.mark.parametrize("entries,line,field", [
    ('[\n  {"name": "ok_cfg_a", "train": "tr.jsonl", "replace": true},\n'
     '  {"name": "bad_cfg", "train": "tr.jsonl", "kind": "regression"}\n]', 3, "kind"),
    ('[\n  {"name": "bad_cfg", "train": "missing.jsonl"}\n]', 2, "train"),
    ('[\n  {"name": "Bad-Name", "train": "tr.jsonl"}\n]', 2, "name"),
    ('[\n  {"name": "bad_cfg", "trian": "tr.jsonl"}\n]', 2, "trian"),
    ('[\n  {"name": "bad_cfg",\n   "train": "tr.jsonl",}\n]', 3, None),
    ('{"name": "bad_cfg"}', 1, None),
])
def test_config_errors(tmp_path, entries, line, field):
  _write(tmp_path / "tr.jsonl", PLAIN)
  config = tmp_path / "datasets.json"
  config.write_text(entries)
  with pytest.raises(record.RecordError) as err:
    user.register_from_config(str(config))
  assert (err.value.path, err.value.line, err.value.field) == (str(config), line, field)


def test_register_dataset_argument_errors(tmp_path):
  with pytest.raises(ValueError, match="at least one"):
    dsbs.tasks.register_dataset("toy_none")
  with pytest.raises(FileNotFoundError):
    dsbs.tasks.register_dataset("toy_missing", train=str(tmp_path / "nope.jsonl"))
  with pytest.raises(ValueError, match="kind"):
    dsbs.tasks.register_dataset("toy_kind", train=str(tmp_path), kind="regression")

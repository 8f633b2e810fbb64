"""TFDS builders: build svamp from the released files, read it back through seqio with slicing."""
import json

import pytest

tfds = pytest.importorskip("tensorflow_datasets")
seqio = pytest.importorskip("seqio")

from dsbs.data import load_examples, tfds_builders  # pylint: disable=g-import-not-at-top


def test_svamp_round_trip_through_seqio(tmp_path, data_dir, caplog):
  out = tfds_builders.prepare("svamp", tfds_dir=str(tmp_path), data_dir=data_dir)
  assert out.startswith(str(tmp_path))
  builder = tfds.builder("dsbs_svamp", data_dir=str(tmp_path))
  assert str(builder.info.version) == "1.0.0"
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 720, "validation": 80, "test": 200}
  source = seqio.TfdsDataSource(tfds_name=tfds_builders.tfds_name("svamp"),
                                tfds_data_dir=str(tmp_path),
                                splits={"train": "train[:10%]", "test": "test"})
  rows = list(source.get_dataset("train", shuffle=False).as_numpy_iterator())
  assert len(rows) == 72
  assert set(rows[0]) == set(tfds_builders.TEXT_FIELDS)
  want = {ex.id: ex for ex in load_examples("svamp", "train", data_dir)}
  for row in rows:
    ex = want[row["id"].decode()]
    assert row["input"].decode() == ex.input and row["label"].decode() == ex.label
    assert row["teacher_label"].decode() == (ex.teacher_label or "")
    assert row["parse_status"].decode() == ex.parse_status
    assert json.loads(row["meta"].decode()) == ex.meta
  assert source.num_input_examples("test") == 200


def test_missing_splits_are_skipped_with_a_message(tmp_path, data_dir, caplog):
  # anli1 has no train file in the partial release: validation and test are built, train skipped.
  tfds_builders.prepare("anli1", tfds_dir=str(tmp_path), data_dir=data_dir)
  splits = tfds.builder("dsbs_anli1", data_dir=str(tmp_path)).info.splits
  assert sorted(splits.keys()) == ["test", "validation"]
  assert "skipping split 'train'" in caplog.text


def test_arith_builder(tmp_path):
  tfds_builders.prepare("arith", tfds_dir=str(tmp_path))
  ds = tfds.load("dsbs_arith", split="test[:5]", data_dir=str(tmp_path))
  got = [row["id"].decode() for row in tfds.as_numpy(ds)]
  assert len(got) == 5 and all(i.startswith("arith-test-") for i in got)
  info = tfds.builder("dsbs_arith", data_dir=str(tmp_path)).info
  assert info.splits["train"].num_examples == 5000

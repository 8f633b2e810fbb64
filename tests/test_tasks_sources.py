"""Record selection per variant and split, lazy sizes, sharding, and the TFDS alternative."""
import pytest
import seqio

import dsbs.data
import dsbs.tasks
from dsbs.data import record
from dsbs.tasks import registry
from dsbs.tasks import sources

OK = dict(teacher_label="t", rationale="because", parse_status=record.OK)
ROWS = [
    record.Example(id="1", input="a", label="g1", **OK),
    record.Example(id="2", input="b", label="g2", teacher_label="t2",
                   parse_status=record.UNMAPPED_LABEL),
    record.Example(id="3", input="c", label=None, **OK),
]


@pytest.mark.parametrize("variant,split,ids,labels,skipped", [
    ("label_gt", "train", ["1", "2"], ["g1", "g2"], {"no gold label": 1}),
    ("label_llm", "train", ["1", "3"], ["t", "t"], {"parse_status=unmapped_label": 1}),
    ("label_llm", "test", ["1", "2"], ["g1", "g2"], {"no gold label": 1}),
    ("rationale", "test", ["1", "3"], ["t", "t"], {"parse_status=unmapped_label": 1}),
    ("cot", "train", ["1", "3"], ["t", "t"], {"parse_status=unmapped_label": 1}),
    ("cot", "validation", ["1", "2"], ["g1", "g2"], {"no gold label": 1}),
])
def test_select(variant, split, ids, labels, skipped):
  cols, skips = sources.select(ROWS, variant, split)
  assert cols["id"] == ids and cols["label"] == labels and dict(skips) == skipped
  if variant == "cot" and split != "train":
    assert cols["rationale"] == ["because", ""]  # gold target, rationale only when OK


def test_lazy_and_sharded():
  calls = []

  def loader(split):
    calls.append(split)
    return [record.Example(id=str(i), input=f"x{i}", label="y") for i in range(10)]

  src = sources.RecordSource("lazy_toy", loader, "label_gt", ("train",))
  assert calls == []  # nothing read at construction
  assert src.num_input_examples("train") == 10 and calls == ["train"]
  shards = [
      [x.decode() for x in src.get_dataset("train", shuffle=True, seed=s,
                                           shard_info=seqio.ShardInfo(i, 3))
       .map(lambda e: e["id"]).as_numpy_iterator()]
      for i, s in ((0, 1), (1, 2), (2, 3))]  # different seeds per host: still disjoint
  assert sorted(sum(shards, [])) == sorted(str(i) for i in range(10))
  assert calls == ["train"]  # cached
  with pytest.raises(ValueError, match="no split"):
    src.num_input_examples("test")


def test_tfds_source_matches_records(data_dir, monkeypatch, tmp_path):
  # TensorFlow Datasets (seconds to import) only for this test
  from dsbs.data import tfds_builders  # pylint: disable=g-import-not-at-top

  monkeypatch.setenv("DSBS_DATA_DIR", data_dir)
  tfds_builders.prepare("svamp", tfds_dir=str(tmp_path), data_dir=data_dir)
  loader = sources.TfdsLoader("svamp", str(tmp_path))
  by_id = lambda xs: sorted(xs, key=lambda e: e.id)
  assert by_id(loader("test")) == by_id(dsbs.data.load_examples("svamp", "test"))
  registry.add_dataset(
      registry.DatasetDef("svamp_via_tfds", loader, ("train", "test"), "arithmetic"),
      replace=True, vocabs=("byte",), fractions=(10,), rates=())
  task = seqio.get_mixture_or_task("svamp_via_tfds_rationale_pct10_byte")
  assert task.num_input_examples("train") == (
      seqio.get_mixture_or_task("svamp_rationale_pct10_byte").num_input_examples("train"))
  with pytest.raises(ValueError, match="no prepared split 'validation'|has no prepared split"):
    sources.TfdsLoader("arith", str(tmp_path))("validation")


def test_source_env_selection(monkeypatch):
  monkeypatch.setenv("DSBS_SOURCE", "tfds")
  monkeypatch.setenv("DSBS_TFDS_DIR", "/some/dir")
  loader = dsbs.tasks._builtin_loader("cqa")
  assert isinstance(loader, sources.TfdsLoader) and loader.tfds_data_dir == "/some/dir"
  monkeypatch.setenv("DSBS_SOURCE", "hdf5")
  with pytest.raises(ValueError, match="DSBS_SOURCE"):
    dsbs.tasks._builtin_loader("cqa")

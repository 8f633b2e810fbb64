"""Registered names, examples from the released data, eval semantics, mixture rates, gin."""
import collections

import gin
import numpy as np
import pytest
import seqio

import dsbs.data
import dsbs.tasks
from dsbs.seqio_ext.feature_converters import DsbsEncDecFeatureConverter
from dsbs.tasks import registry

LENGTHS = {"inputs": 256, "targets": 128}


def _examples(name, split, n=None, **kwargs):
  ds = seqio.get_mixture_or_task(name).get_dataset(LENGTHS, split=split, shuffle=False, **kwargs)
  if n is not None:
    ds = ds.take(n)
  return list(ds.as_numpy_iterator())


def test_names_registered_without_reading_data():
  names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  for ds in ("anli1", "esnli", "cqa", "svamp", "arith"):
    for variant in ("label_gt", "label_llm", "rationale", "cot", "finetune", "distill"):
      assert f"{ds}_{variant}" in names and f"{ds}_{variant}_byte" in names
      assert f"{ds}_{variant}_pct0.5_byte" in names
    for mix in ("dsbs", "dsbs_llm"):
      assert f"{ds}_{mix}" in names and f"{ds}_{mix}_pct10_rate0.25_byte" in names
  assert (registry.mixture_name("anli1", "dsbs", 10, 0.25, "byte")
          == "anli1_dsbs_pct10_rate0.25_byte")


@pytest.mark.parametrize("variant,kind,prefix", [
    ("label_gt", 0, "predict: "), ("label_llm", 0, "predict: "), ("rationale", 1, "explain: "),
    ("cot", 2, ""), ("finetune", 2, ""), ("distill", 2, "")])
def test_arith_variants_features(variant, kind, prefix):
  ex = _examples(f"arith_{variant}_byte", "train", n=3)
  assert len(ex) == 3
  for e in ex:
    assert e["task_kind"] == kind and e["task_kind"].dtype == np.int32
    assert e["inputs_pretokenized"].decode().startswith(prefix)
    assert e["id"].decode().startswith("arith-train-")
    assert e["targets"][-1] == 1  # EOS
  if variant == "cot":
    assert " So the answer is " in ex[0]["targets_pretokenized"].decode()


def test_released_cqa_and_svamp(data_dir, monkeypatch):
  monkeypatch.setenv("DSBS_DATA_DIR", data_dir)
  test = dsbs.data.load_examples("cqa", "test")
  gold = {e.id: e.label for e in test}
  # Distillation students are scored on GOLD labels: label_llm's test targets are gold.
  got = _examples("cqa_label_llm_byte", "test")
  assert len(got) == len(test)
  assert all(e["targets_pretokenized"].decode() == gold[e["id"].decode()] for e in got)
  train = dsbs.data.load_examples("svamp", "train")
  ok = [e for e in train if e.parse_status == dsbs.data.record.OK]
  task = seqio.get_mixture_or_task("svamp_rationale_byte")
  assert task.num_input_examples("train") == len(ok) < len(train)
  assert seqio.get_mixture_or_task("svamp_label_gt_byte").num_input_examples("train") == len(train)
  first = _examples("svamp_distill_byte", "train", n=1)[0]
  by_id = {e.id: e for e in ok}
  assert first["targets_pretokenized"].decode() == by_id[first["id"].decode()].teacher_label


def test_released_nli_eval_splits(data_dir, monkeypatch):
  monkeypatch.setenv("DSBS_DATA_DIR", data_dir)
  for split in ("validation", "test"):
    ex = _examples("anli1_dsbs_byte", split, n=40)
    kinds = collections.Counter(int(e["task_kind"]) for e in ex)
    assert set(kinds) == {0, 1}
    labels = {e["targets"].tobytes() for e in ex if e["task_kind"] == 0}
    assert labels
  with pytest.raises(Exception, match="train"):  # anli1 train is not in the release copy
    _examples("anli1_label_gt_byte", "train", n=1)


def test_eval_metrics_only_on_label_tasks(data_dir, monkeypatch):
  monkeypatch.setenv("DSBS_DATA_DIR", data_dir)
  mix = seqio.get_mixture_or_task("svamp_dsbs_byte")
  with_metrics = [t.name for t in mix.tasks if t.metric_fns]
  assert with_metrics == ["svamp_label_gt_byte"]
  # A perfect CoT prediction and an equivalent equation both score 100 on SVAMP test.
  cot = seqio.get_mixture_or_task("svamp_cot_byte")
  ex = _examples("svamp_cot_byte", "test", n=20)
  targets = [cot.postprocess_fn(e["targets_pretokenized"].decode(), is_target=True) for e in ex]
  preds = [cot.postprocess_fn(e["targets_pretokenized"].decode()) for e in ex]
  assert cot.metric_fns[0](targets, preds) == {"accuracy": 100.0}
  rewritten = [cot.postprocess_fn("So the answer is " + t.replace(" ", "") + ".") for t in targets]
  assert cot.metric_fns[0](targets, rewritten) == {"accuracy": 100.0}
  assert cot.metric_fns[0](targets, ["So the answer is 1/0."] * 20) == {"accuracy": 0.0}


@pytest.mark.parametrize("name,rate", [("arith_dsbs_byte", 0.5), ("arith_dsbs_rate0.2_byte", 0.2),
                                       ("arith_dsbs_llm_rate0.75_byte", 0.75)])
def test_mixture_rates(name, rate):
  n = 1500
  ds = seqio.get_mixture_or_task(name).get_dataset(
      {"inputs": 64, "targets": 32}, split="train", shuffle=False, seed=3)
  kinds = [int(x) for x in ds.map(lambda e: e["task_kind"]).take(n).as_numpy_iterator()]
  share = kinds.count(0) / n
  assert set(kinds) == {0, 1}
  assert abs(share - rate) < 4 * np.sqrt(rate * (1 - rate) / n), share


def test_mixture_function_and_gin():
  assert dsbs.tasks.mixture("arith", vocab="byte") == "arith_dsbs_byte"
  assert dsbs.tasks.mixture("arith", "cot", fraction=5, vocab="byte") == "arith_cot_pct5_byte"
  name = dsbs.tasks.mixture("arith", "dsbs_llm", fraction=3, label_rate=0.35, vocab="byte")
  assert name == "arith_dsbs_llm_pct3_rate0.35_byte"
  mix = seqio.get_mixture_or_task(name)
  assert [(t.name, round(mix.get_rate(t), 6)) for t in mix.tasks] == [
      ("arith_label_llm_pct3_byte", 0.35), ("arith_rationale_pct3_byte", 0.65)]
  with pytest.raises(ValueError, match="label_rate"):
    dsbs.tasks.mixture("arith", "finetune", label_rate=0.3)
  with pytest.raises(ValueError, match="unknown dataset"):
    dsbs.tasks.mixture("nope")

  @gin.configurable
  def fake_train(mixture_or_task_name=None):
    return mixture_or_task_name

  try:
    gin.parse_config("""
        fake_train.mixture_or_task_name = @dsbs.tasks.mixture()
        dsbs.tasks.mixture.dataset = 'arith'
        dsbs.tasks.mixture.fraction = 10
        dsbs.tasks.mixture.label_rate = 0.25
        dsbs.tasks.mixture.vocab = 'byte'
    """)
    assert fake_train() == "arith_dsbs_pct10_rate0.25_byte"
    gin.parse_config("dsbs.tasks.mixture.label_rate = 0.4")  # a sweep's --gin. override
    assert fake_train() == "arith_dsbs_pct10_rate0.4_byte"
  finally:
    gin.clear_config()


def test_seqio_evaluator_scores_label_task_only(data_dir, monkeypatch):
  """The mixture runs through seqio.Evaluator with our feature converter end to end."""
  monkeypatch.setenv("DSBS_DATA_DIR", data_dir)
  evaluator = seqio.Evaluator(
      "svamp_dsbs_byte", DsbsEncDecFeatureConverter(pack=False), eval_split="test",
      sequence_length={"inputs": 256, "targets": 64}, num_examples=12,
      async_compute_metrics=False)
  assert [t.name for t in evaluator.eval_tasks] == ["svamp_label_gt_byte"]

  def perfect(ds):  # what a model that reproduces the targets would decode (padded, with EOS)
    return [(i, ex["decoder_target_tokens"]) for i, ex in ds.as_numpy_iterator()]

  def wrong_every_other(ds):
    bad = np.zeros(64, np.int32)
    bad[:14] = list(b"( 1.0 / 0.0 )") + [1]
    bad[:13] += 3  # ByteVocabulary ids are byte + 3
    return [(i, bad if i % 2 else ex["decoder_target_tokens"])
            for i, ex in ds.as_numpy_iterator()]

  for fn, expected in ((perfect, 100.0), (wrong_every_other, 50.0)):
    metrics, _ = evaluator.evaluate(compute_metrics=True, predict_fn=fn)
    assert metrics.result()["svamp_label_gt_byte"]["accuracy"] == expected

"""DsbsEncDecFeatureConverter: exact loss weights, packed and unpacked, and the paper's loss."""
import gin
import numpy as np
import pytest
import tensorflow as tf

from dsbs.seqio_ext import feature_converters as fc

# Four examples, two label (kind 0) and two rationale (kind 1), a 1:1 batch as in the paper.
# Every target token id is unique, so a token's loss can be looked up from its id.
EXAMPLES = [
    {"inputs": [7, 8, 5, 1], "targets": [11, 12, 1], "task_kind": 0},
    {"inputs": [8, 4, 9, 1], "targets": [21, 22, 23, 24, 25, 1], "task_kind": 1},
    {"inputs": [3, 1], "targets": [31, 1], "task_kind": 0},
    {"inputs": [6, 6, 1], "targets": [41, 42, 43, 44, 1], "task_kind": 1},
]
LENGTHS = {"inputs": 16, "targets": 20}


def _dataset(examples, with_kind=True):
  spec = {"inputs": tf.TensorSpec([None], tf.int32), "targets": tf.TensorSpec([None], tf.int32)}
  if with_kind:
    spec["task_kind"] = tf.TensorSpec([], tf.int32)

  def gen():
    for ex in examples:
      out = {"inputs": np.array(ex["inputs"], np.int32),
             "targets": np.array(ex["targets"], np.int32)}
      if with_kind:
        out["task_kind"] = np.int32(ex["task_kind"])
      yield out

  return tf.data.Dataset.from_generator(gen, output_signature=spec)


def _batch(converter, examples, lengths=LENGTHS, with_kind=True):
  rows = list(converter(_dataset(examples, with_kind), lengths).as_numpy_iterator())
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _token_loss(tokens):
  """A made-up per-token loss that depends only on the token id (0 for padding)."""
  return np.where(tokens > 0, 0.1 + (tokens % 7) * 0.37 + (tokens == 1) * 0.05, 0.0)


def _paper_loss(examples, alpha):
  """a * mean_label(mean_tok loss) + (1 - a) * mean_rationale(mean_tok loss), from scratch."""
  per_example = {0: [], 1: []}
  for ex in examples:
    per_example[ex["task_kind"]].append(_token_loss(np.array(ex["targets"])).mean())
  return alpha * np.mean(per_example[0]) + (1 - alpha) * np.mean(per_example[1])


_CACHE = {}


def _converted(pack, alpha=0.3, loss_mode="paper"):
  """Converted batch of EXAMPLES, built once per setting (TF packing graphs are slow to build)."""
  key = (pack, alpha, loss_mode)
  if key not in _CACHE:
    conv = fc.DsbsEncDecFeatureConverter(pack=pack, alpha=alpha, loss_mode=loss_mode)
    _CACHE[key] = _batch(conv, EXAMPLES)
  return _CACHE[key]


@pytest.mark.parametrize("pack,alpha", [(False, 0.3), (True, 0.3), (True, 0.5), (False, 0.9),
                                        (False, 1.0), (False, 0.0), (True, 1.0)])
def test_paper_mode_reproduces_paper_loss(pack, alpha):
  batch = _converted(pack, alpha)
  assert batch["decoder_loss_weights"].dtype == np.float32
  if pack:
    assert batch["decoder_target_tokens"].shape[0] < len(EXAMPLES)  # really packed
  loss_sum = np.sum(_token_loss(batch["decoder_target_tokens"]) * batch["decoder_loss_weights"])
  n = float(fc.loss_normalizer(batch, "paper"))
  assert n == len(EXAMPLES)
  np.testing.assert_allclose(loss_sum / n, _paper_loss(EXAMPLES, alpha), rtol=1e-6)


@pytest.mark.parametrize("pack", [False, True])
def test_weight_sum_is_example_count_in_a_balanced_batch(pack):
  """Why T5X's NUM_REAL_TARGET_TOKENS works for paper mode: sum(w) = sum_k c_k n_k = B."""
  for alpha in (0.3, 0.5):
    if (pack, alpha) == (False, 0.5):
      continue
    np.testing.assert_allclose(np.sum(_converted(pack, alpha)["decoder_loss_weights"]),
                               len(EXAMPLES), rtol=1e-6)


def test_unpacked_weights_exact():
  batch = _converted(False, 0.3)
  w = batch["decoder_loss_weights"]
  c = {0: 0.6, 1: 1.4}
  for row, ex in enumerate(EXAMPLES):
    n = len(ex["targets"])
    expected = np.zeros(LENGTHS["targets"], np.float32)
    expected[:n] = c[ex["task_kind"]] / n
    np.testing.assert_allclose(w[row], expected, rtol=1e-6)
  np.testing.assert_array_equal(batch["decoder_target_tokens"][0, :3], [11, 12, 1])


def test_packed_weights_exact_per_segment():
  batch = _converted(True, 0.3)
  c = {0: 0.6, 1: 1.4}
  by_first_token = {ex["targets"][0]: ex for ex in EXAMPLES}
  seen = 0
  for row in range(batch["decoder_target_tokens"].shape[0]):
    seg = batch["decoder_segment_ids"][row]
    for s in range(1, seg.max() + 1):
      idx = np.where(seg == s)[0]
      ex = by_first_token[batch["decoder_target_tokens"][row, idx[0]]]
      np.testing.assert_array_equal(batch["decoder_target_tokens"][row, idx], ex["targets"])
      np.testing.assert_allclose(batch["decoder_loss_weights"][row, idx],
                                 c[ex["task_kind"]] / len(ex["targets"]), rtol=1e-6)
      seen += 1
    np.testing.assert_array_equal(batch["decoder_loss_weights"][row][seg == 0], 0.0)
  assert seen == len(EXAMPLES)


def test_emit_task_kind_tags_tokens_without_changing_weights():
  conv = fc.DsbsEncDecFeatureConverter(pack=False, alpha=0.3, emit_task_kind=True)
  batch = _batch(conv, EXAMPLES)
  np.testing.assert_array_equal(batch["decoder_loss_weights"], _converted(False, 0.3)["decoder_loss_weights"])
  for row, ex in enumerate(EXAMPLES):
    n = len(ex["targets"])
    np.testing.assert_array_equal(batch[fc.TASK_KIND_FEATURE][row, :n], ex["task_kind"] + 1)
    np.testing.assert_array_equal(batch[fc.TASK_KIND_FEATURE][row, n:], 0)
  assert fc.TASK_KIND_FEATURE not in fc.DsbsEncDecFeatureConverter.MODEL_FEATURES  # T5X's set


def test_single_task_kind_is_per_example_mean():
  examples = [{**ex, "task_kind": 2} for ex in EXAMPLES]
  batch = _batch(fc.DsbsEncDecFeatureConverter(pack=False, alpha=0.1), examples)
  loss = np.sum(_token_loss(batch["decoder_target_tokens"]) * batch["decoder_loss_weights"])
  expected = np.mean([_token_loss(np.array(ex["targets"])).mean() for ex in examples])
  np.testing.assert_allclose(loss / float(fc.num_examples(batch)), expected, rtol=1e-6)


def test_missing_task_kind_counts_as_single_task():
  a = _batch(fc.DsbsEncDecFeatureConverter(pack=False), EXAMPLES, with_kind=False)
  for row, ex in enumerate(EXAMPLES):
    n = len(ex["targets"])
    np.testing.assert_allclose(a["decoder_loss_weights"][row, :n], 1.0 / n, rtol=1e-6)


def test_tokens_mode_is_plain_mask():
  batch = _converted(True, 0.3, "tokens")
  np.testing.assert_array_equal(batch["decoder_loss_weights"],
                                (batch["decoder_target_tokens"] > 0).astype(np.float32))
  assert float(fc.loss_normalizer(batch, "tokens")) == sum(len(e["targets"]) for e in EXAMPLES)


def test_bad_task_kind_fails_loudly():
  bad = [{**EXAMPLES[0], "task_kind": 5}]
  with pytest.raises(tf.errors.InvalidArgumentError, match="task_kind"):
    _batch(fc.DsbsEncDecFeatureConverter(pack=False), bad)


@pytest.mark.parametrize("kwargs", [{"alpha": 1.5}, {"alpha": -0.1}, {"loss_mode": "mean"}])
def test_bad_options(kwargs):
  with pytest.raises(ValueError):
    fc.DsbsEncDecFeatureConverter(pack=False, **kwargs)


def test_gin_configurable_as_t5x_uses_it():
  """T5X binds the class as `feature_converter_cls` and later calls it with pack=..."""

  @gin.configurable
  def fake_model(feature_converter_cls=None):
    return feature_converter_cls

  try:
    gin.parse_config("""
        fake_model.feature_converter_cls = @dsbs.seqio_ext.feature_converters.DsbsEncDecFeatureConverter
        dsbs.seqio_ext.feature_converters.DsbsEncDecFeatureConverter.alpha = 0.25
        DsbsEncDecFeatureConverter.loss_mode = 'paper'
    """)
    cls = fake_model()
    conv = cls(pack=True, use_custom_packing_ops=False)
    assert isinstance(conv, fc.DsbsEncDecFeatureConverter)
    assert conv.alpha == 0.25 and conv.pack and conv.loss_mode == "paper"
  finally:
    gin.clear_config()


def test_model_feature_lengths_unchanged():
  conv = fc.DsbsEncDecFeatureConverter(pack=True)
  lengths = conv.get_model_feature_lengths(LENGTHS)
  assert lengths["decoder_loss_weights"] == 20 and lengths["encoder_segment_ids"] == 16

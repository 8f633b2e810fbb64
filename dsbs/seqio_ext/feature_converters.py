"""The two-task loss of distilling step-by-step, carried in `decoder_loss_weights`.

The paper trains one model on two tasks with

    L = a * L_label + (1 - a) * L_rationale,

where L_label (L_rationale) is the mean over the label (rationale) examples of the batch of each
example's mean token cross-entropy, and a = 0.5. T5X and `dsbs.train` both compute

    loss = sum_tokens(token_loss * decoder_loss_weights) / loss_normalizing_factor,

so `DsbsEncDecFeatureConverter` writes the balance into the weights and the trainer divides by a
factor stated below. Every example carries `task_kind` (0 label `predict:`, 1 rationale
`explain:`, 2 single-task target: finetune / distill / cot).

loss_mode="paper" (default): every real target token of an example (a packed segment, when
packing) of kind k with n real target tokens gets weight c_k / n, where

    c_0 = 2 * alpha,  c_1 = 2 * (1 - alpha),  c_2 = 1.

Each example then contributes c_k times its mean token loss. Divide the batch sum by the NUMBER
OF EXAMPLES in the batch (`num_examples(batch)`; unpacked that is the batch size). In a batch
with as many label as rationale examples (the paper's paired batches; a 1:1 mixture gives this in
expectation) this is exactly a * L_label + (1 - a) * L_rationale, and for single-task batches it
is the mean per-example loss.
  - T5X, unpacked (`PACKING = False`): `loss_normalizing_factor = <batch size>` (a float), exact.
  - T5X, packed: T5X has no "number of segments" factor. `"NUM_REAL_TARGET_TOKENS"` divides by
    the sum of the weights, sum_k c_k * n_examples_k, which IS the number of examples when
    alpha = 0.5 (exact, packed or not) and is otherwise the number of examples up to the
    label/rationale imbalance of that batch (a self-normalised weighted mean).
  - Never `"AVERAGE_PER_SEQUENCE"`: it rescales each sequence's weights to sum to 1 and so erases
    alpha.
  - `dsbs.train`: divide by `loss_normalizer(batch, "paper")` (= `num_examples(batch)`).

loss_mode="tokens": weight 1 on every real target token (SeqIO's default). The task balance then
comes only from the mixture rate, and long rationales dominate the token sum, which is what
token-level multi-task training does. Divide by the number of real target tokens
(T5X `"NUM_REAL_TARGET_TOKENS"`; `loss_normalizer(batch, "tokens")`).

Works with and without packing: task kinds ride through SeqIO's packer as a per-token int32
feature, so each packed segment keeps its own kind and token count.

T5X: `models.EncoderDecoderModel.feature_converter_cls =
@dsbs.seqio_ext.feature_converters.DsbsEncDecFeatureConverter` and set
`DsbsEncDecFeatureConverter.alpha` / `.loss_mode` in gin; T5X calls it with `pack=...`.
"""
from __future__ import annotations

from typing import Any, Mapping

import gin
import seqio
import tensorflow as tf

from dsbs.losses import (LABEL, LOSS_MODES, PAPER_ALPHA, RATIONALE, SINGLE, kind_coefficients,
                         loss_normalizer, num_examples)

__all__ = ["DsbsEncDecFeatureConverter", "LABEL", "LOSS_MODES", "RATIONALE", "SINGLE",
           "TASK_KIND_FEATURE", "kind_coefficients", "loss_normalizer", "num_examples"]

_KIND_TOKENS = "dsbs_task_kind"  # per-token (kind + 1); 0 marks padding
TASK_KIND_FEATURE = "decoder_task_kind"  # the model feature emitted with emit_task_kind=True


@gin.configurable
class DsbsEncDecFeatureConverter(seqio.EncDecFeatureConverter):
  """EncDecFeatureConverter whose float32 `decoder_loss_weights` carry the two-task balance.

  Input examples need `inputs`, `targets` and (optionally) the int32 scalar `task_kind`;
  without `task_kind` every example counts as single-task (kind 2). With `emit_task_kind=True`
  it also outputs `decoder_task_kind`, per target token: 1 label, 2 rationale, 3 single-task,
  0 padding (the built-in runner logs per-task losses from it; T5X leaves it off).
  """

  MODEL_FEATURES = {
      **seqio.EncDecFeatureConverter.MODEL_FEATURES,
      "decoder_loss_weights": seqio.FeatureConverter.FeatureSpec(dtype=tf.float32),
  }

  def __init__(self, pack: bool = True, alpha: float = PAPER_ALPHA, loss_mode: str = "paper",
               emit_task_kind: bool = False, **kwargs: Any):
    if not 0.0 <= float(alpha) <= 1.0:
      raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if loss_mode not in LOSS_MODES:
      raise ValueError(f"loss_mode must be one of {LOSS_MODES}, got {loss_mode!r}")
    super().__init__(pack=pack, **kwargs)
    self._alpha = float(alpha)
    self._loss_mode = loss_mode
    self._emit_task_kind = bool(emit_task_kind)
    if self._emit_task_kind:  # an instance attribute: the class keeps T5X's feature set
      self.MODEL_FEATURES = {**self.MODEL_FEATURES,
                             TASK_KIND_FEATURE: seqio.FeatureConverter.FeatureSpec(tf.int32)}

  @property
  def alpha(self) -> float:
    return self._alpha

  @property
  def loss_mode(self) -> str:
    return self._loss_mode

  def _add_kind_tokens(self, ds: tf.data.Dataset) -> tf.data.Dataset:
    has_kind = "task_kind" in ds.element_spec

    def add(ex):
      if has_kind:
        kind = tf.cast(ex["task_kind"], tf.int32)
        valid = tf.logical_and(kind >= LABEL, kind <= SINGLE)
        check = tf.debugging.Assert(
            valid, ["task_kind must be 0 (label), 1 (rationale) or 2 (single), got", kind])
        with tf.control_dependencies([check]):
          kind = tf.identity(kind)
      else:
        kind = tf.constant(SINGLE, tf.int32)
      ex = dict(ex)
      ex[_KIND_TOKENS] = tf.fill(tf.shape(ex["targets"]), kind + 1)
      return ex

    return ds.map(add, num_parallel_calls=tf.data.AUTOTUNE)

  def _loss_weights(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
    kind_plus_one = features[_KIND_TOKENS]
    real = tf.cast(tf.logical_and(kind_plus_one > 0, features["targets"] != 0), tf.float32)
    if self._loss_mode == "tokens":
      return real
    coef = tf.gather(tf.constant(kind_coefficients(self._alpha), tf.float32),
                     tf.maximum(kind_plus_one - 1, 0))
    if self.pack:
      seg = features["targets_segment_ids"]
      counts = tf.math.unsorted_segment_sum(real, seg, num_segments=tf.shape(seg)[0] + 1)
      n_tokens = tf.gather(counts, seg)
    else:
      n_tokens = tf.reduce_sum(real)
    return real * coef / tf.maximum(n_tokens, 1.0)

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    ds = self._add_kind_tokens(ds)
    lengths = {**task_feature_lengths, _KIND_TOKENS: task_feature_lengths["targets"]}
    ds = self._pack_or_pad(ds, lengths)

    def convert(features):
      out = dict(self._convert_example(features))
      out["decoder_loss_weights"] = self._loss_weights(features)
      if self._emit_task_kind:
        out[TASK_KIND_FEATURE] = tf.cast(features[_KIND_TOKENS], tf.int32)
      return out

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
    if self._emit_task_kind:
      lengths[TASK_KIND_FEATURE] = task_feature_lengths["targets"]
    return lengths

"""The two-task loss arithmetic shared by the feature converter and the training step.

Plain JAX / NumPy, no SeqIO or TensorFlow: the training and evaluation steps (and the
benchmark) import it without the input pipeline's dependencies.
`dsbs.seqio_ext.feature_converters` puts the per-example weights into `decoder_loss_weights`
and re-exports these names; the loss is sum(token_loss * decoder_loss_weights) /
`loss_normalizer(batch, loss_mode)`.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

LOSS_MODES = ("paper", "tokens")
PAPER_ALPHA = 0.5  # the paper's a; the one default (experiment.gin reads it as a gin constant)
LABEL, RATIONALE, SINGLE = 0, 1, 2  # values of the `task_kind` feature


def kind_coefficients(alpha: float) -> tuple[float, float, float]:
  """Per-example loss multipliers (c_0, c_1, c_2) for label, rationale and single-task kinds."""
  return (2.0 * alpha, 2.0 * (1.0 - alpha), 1.0)


def num_examples(batch: Mapping[str, Any]) -> Any:
  """Number of examples (packed segments) with at least one target token in a batch.

  Works on numpy or jax arrays. Packed segment ids are 1..k within a row, so a row holds
  max(segment id) examples.
  """
  if "decoder_segment_ids" in batch:
    seg = jnp.asarray(batch["decoder_segment_ids"])
    return jnp.sum(jnp.max(seg, axis=-1)).astype(jnp.float32)
  # Rows with a real target token, whatever their weight: at alpha = 0 or 1 one task's rows
  # weigh 0 but still count, so the loss stays a * L_label + (1 - a) * L_rationale.
  targets = jnp.asarray(batch["decoder_target_tokens"])
  return jnp.sum(jnp.any(targets > 0, axis=-1)).astype(jnp.float32)


def loss_normalizer(batch: Mapping[str, Any], loss_mode: str = "paper") -> Any:
  """The factor to divide sum(token_loss * decoder_loss_weights) by, for `loss_mode`."""
  if loss_mode == "paper":
    return num_examples(batch)
  if loss_mode == "tokens":
    return jnp.sum(jnp.asarray(batch["decoder_loss_weights"])).astype(jnp.float32)
  raise ValueError(f"loss_mode must be one of {LOSS_MODES}, got {loss_mode!r}")

"""The analytic model of the benchmark: matmul FLOPs of a training step and the roofline floor
of a decoding call, from a T5Config's sizes."""
from __future__ import annotations

from typing import Any


def _weights(m: Any) -> dict[str, int]:
  """Matmul weight counts: an encoder layer, a decoder layer's per-step weights (self- and
  cross-attention queries/outputs, MLP), the cross-attention key/value kernels (used once per
  encoder token, not per step) and the logits."""
  hd = m.num_heads * m.head_dim
  ff = m.emb_dim * m.mlp_dim * (len(m.mlp_activations) + 1)
  return {"hd": hd, "enc_layer": 4 * m.emb_dim * hd + ff,
          "dec_layer_step": 6 * m.emb_dim * hd + ff, "cross_kv": 2 * m.emb_dim * hd,
          "logits": m.emb_dim * m.vocab_size}


def forward_flops(m: Any, batch: int, in_len: int, tgt_len: int) -> float:
  """Matmul FLOPs of one teacher-forced forward pass (2 per multiply-add; attention in full).

  Counts projections, attention scores and values, the feed-forward and the logits; causal
  attention is counted over the whole square, as it is computed.
  """
  w = _weights(m)
  enc_tok = 2 * w["enc_layer"] + 2 * 2 * in_len * w["hd"]
  dec_tok = 2 * w["dec_layer_step"] + 2 * 2 * (tgt_len + in_len) * w["hd"]
  return float(batch * (in_len * enc_tok * m.num_encoder_layers
                        + tgt_len * dec_tok * m.num_decoder_layers
                        + in_len * 2 * w["cross_kv"] * m.num_decoder_layers
                        + tgt_len * 2 * w["logits"]))


def train_flops(m: Any, batch: int, in_len: int, tgt_len: int) -> float:
  """Forward + backward (twice the forward) matmul FLOPs of one training step."""
  return 3.0 * forward_flops(m, batch, in_len, tgt_len)


def decode_floor_s(m: Any, batch: int, in_len: int, new_tokens: int, beams: int,
                   peak_flops: float, bytes_per_s: float) -> float:
  """Roofline floor, in seconds, of one decoding call: a lower bound on its time at `peak_flops`
  and `bytes_per_s`.

  The encoder pass and the cross-attention key/value projection, then one step per new token,
  each taking max(matmul FLOPs / peak, bytes / memory bandwidth). A step reads every decoder
  weight it uses in the compute dtype (the logits kernel in float32, as the model keeps it),
  the cross-attention keys/values once per input (beams share them) and the self-attention
  keys/values of the positions so far for each of the `batch * beams` sequences; the encoder
  pass reads its weights once. Activations, norms and softmaxes are left out (they only lower
  the floor), and so are beam search's top-k and reordering.
  """
  w = _weights(m)
  size = 2 if m.dtype in ("bfloat16", "float16") else 4
  rows = batch * beams
  enc_flops = batch * in_len * (m.num_encoder_layers * (2 * w["enc_layer"] + 4 * in_len * w["hd"])
                                + m.num_decoder_layers * 2 * w["cross_kv"])
  enc_bytes = size * (m.num_encoder_layers * w["enc_layer"] + m.num_decoder_layers * w["cross_kv"])
  total = max(enc_flops / peak_flops, enc_bytes / bytes_per_s)
  weight_bytes = size * m.num_decoder_layers * w["dec_layer_step"] + 4 * w["logits"]
  cross_bytes = size * m.num_decoder_layers * 2 * batch * in_len * w["hd"]
  for pos in range(1, new_tokens + 1):
    flops = rows * (m.num_decoder_layers * (2 * w["dec_layer_step"] + 4 * (in_len + pos) * w["hd"])
                    + 2 * w["logits"])
    self_bytes = size * m.num_decoder_layers * 2 * rows * pos * w["hd"]
    total += max(flops / peak_flops, (weight_bytes + cross_bytes + self_bytes) / bytes_per_s)
  return total

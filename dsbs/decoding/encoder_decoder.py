"""The decoders' view of a T5X-style encoder-decoder module: the parameters cast once, the
encodings computed once, the KV cache, and one decoder step.

Any Flax module with T5X's `encode(encoder_input_tokens, encoder_segment_ids, enable_dropout)`
and `decode(encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens, ...,
enable_dropout, decode, max_decode_length, decoder_mask=)` whose caches follow the layout of
`dsbs.model.layers.MultiHeadDotProductAttention` fits; `compute_params` knows dsbs's network.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from dsbs.model import network
from dsbs.model.config import T5Config

Array = jax.Array


def compute_params(params: Any, config: T5Config) -> Any:
  """`params` with every floating leaf that the network only reads in `config.dtype` already
  cast to it; the rest (`network.float32_params`: the float32 logits weights) as they are.

  The network computes the same results from either tree, bit for bit: each layer casts its
  parameters to `config.dtype` before using them. The decoders cast once before their loop
  because XLA leaves those casts inside it: with float32 parameters and bfloat16 compute, each
  step would read every weight in float32 (twice the bytes) and convert it again. A no-op when
  the parameters are already in the compute dtype. Boxed or unboxed trees alike.
  """
  dtype = jnp.dtype(config.dtype)
  keep = set(network.float32_params(config))

  def cast(path, x):
    names = tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey))
    if names in keep or not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == dtype:
      return x
    return x.astype(dtype)

  return jax.tree_util.tree_map_with_path(cast, params)


class EncoderDecoder:
  """One batch of inputs, encoded: `init_cache` and `step` (a `search.StepFn`) for the loops.

  The encodings and the encoder-decoder keys/values stay once per input; a decoder batch of
  g sequences per input (input-major) queries them together.
  """

  def __init__(self, model: nn.Module, params: Any, encoder_input_tokens: Array,
               encoder_segment_ids: Array | None = None):
    self.model = model
    self.params = compute_params(params, model.config)  # steps read weights in compute dtype
    self.encoder_input_tokens = encoder_input_tokens
    self.encoded = model.apply({"params": self.params}, encoder_input_tokens,
                               encoder_segment_ids, enable_dropout=False, method="encode")

  def init_cache(self, rows: int, length: int) -> Any:
    """The decoding cache ('cache' collection) of `rows` sequences for `length` steps.

    Self-attention keys/values start at zero, one row per sequence; the encoder-decoder
    keys/values are projected from the encodings here, once, instead of at every step.
    """
    dec = jnp.ones((rows, 1), jnp.int32)
    _, variables = self.model.apply(
        {"params": self.params}, self.encoded, self.encoder_input_tokens, dec, dec, decode=True,
        enable_dropout=False, max_decode_length=length, mutable=["cache"], method="decode")
    return variables["cache"]

  def step(self, tokens: Array, cache: Any, cache_len: int,
           mask: Array | None = None) -> tuple[Array, Any]:
    """tokens [n] -> float32 log-probs [n, vocab] and the updated cache."""
    logits, variables = self.model.apply(
        {"params": self.params, "cache": cache}, self.encoded, self.encoder_input_tokens,
        tokens[:, None], tokens[:, None], enable_dropout=False, decode=True,
        max_decode_length=cache_len, decoder_mask=mask, mutable=["cache"], method="decode")
    return jax.nn.log_softmax(logits[:, 0].astype(jnp.float32)), variables["cache"]

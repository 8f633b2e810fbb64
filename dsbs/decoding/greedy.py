"""Greedy (argmax) decoding."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from dsbs.decoding import caches
from dsbs.decoding.encoder_decoder import EncoderDecoder
from dsbs.decoding.search import DecodeResult, StepFn, phased_loop

Array = jax.Array


def greedy_decode(model: nn.Module, params: Any, encoder_input_tokens: Array,
                  max_decode_len: int, eos_id: int = 1, decoder_start_id: int = 0,
                  encoder_segment_ids: Array | None = None,
                  cache_phases: int | None = None) -> DecodeResult:
  """Argmax decoding. scores: sum of log-probs of the emitted tokens (EOS included).

  `cache_phases`: see `caches.cache_lengths`; the result does not depend on it.
  """
  batch = encoder_input_tokens.shape[0]
  lengths = caches.cache_lengths(max_decode_len, cache_phases)
  model_fns = EncoderDecoder(model, params, encoder_input_tokens, encoder_segment_ids)
  cache = model_fns.init_cache(batch, lengths[0])
  return greedy_search(model_fns.step, cache, batch, max_decode_len, lengths, eos_id,
                       decoder_start_id)


def greedy_search(step: StepFn, cache: Any, batch: int, max_decode_len: int,
                  lengths: list[int], eos_id: int, decoder_start_id: int) -> DecodeResult:
  """The argmax loop on `step` from `cache` (sized for lengths[0]), one phase per length."""
  state = (jnp.array(0, jnp.int32), jnp.full((batch,), decoder_start_id, jnp.int32),
           jnp.zeros((batch, max_decode_len), jnp.int32), jnp.zeros((batch,), jnp.float32),
           jnp.zeros((batch,), bool), cache)

  def cond(state, cache_len):
    i, _, _, _, done, _ = state
    return jnp.logical_and(i < cache_len, jnp.logical_not(jnp.all(done)))

  def body(state, cache_len):
    i, cur, out, scores, done, cache = state
    logp, cache = step(cur, cache, cache_len, None)
    nxt = jnp.argmax(logp, axis=-1).astype(jnp.int32)
    tok_logp = jnp.take_along_axis(logp, nxt[:, None], axis=-1)[:, 0]
    nxt = jnp.where(done, 0, nxt)
    scores = scores + jnp.where(done, 0.0, tok_logp)
    out = lax.dynamic_update_slice(out, nxt[:, None], (0, i))
    done = jnp.logical_or(done, nxt == eos_id)
    return i + 1, nxt, out, scores, done, cache

  def grow(state, cache_len):
    return state[:-1] + (caches.extend_cache(state[-1], cache_len),)

  _, _, out, scores, _, _ = phased_loop(cond, body, state, lengths, grow)
  return DecodeResult(out, scores)

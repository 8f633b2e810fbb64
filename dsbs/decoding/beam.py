"""Beam search with length normalisation, on slot-addressed caches.

Each input keeps k cache rows ("slots") that are never reordered: every beam writes its new
keys/values into its own slot at the current position, and a table `slots` [inputs, k, length]
records, for each live beam and past position, which slot holds that position's entries. Each
step reads all k slots of its input through a mask built from the table; reordering beams
permutes the table, not the caches. The k slots of an input are one cache row holding k
sequences (`caches.group_sequences`), so the beams of an input attend in one matmul.
"""
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
NEG_INF = -1.0e7  # finite "minus infinity" keeps arithmetic NaN-free


def brevity_penalty(alpha: float, length: Array) -> Array:
  """((5 + length) / 6) ** alpha (1 when alpha == 0)."""
  return jnp.power((5.0 + length.astype(jnp.float32)) / 6.0, alpha)


def beam_search(model: nn.Module, params: Any, encoder_input_tokens: Array,
                max_decode_len: int, num_beams: int = 4, alpha: float = 0.6, eos_id: int = 1,
                decoder_start_id: int = 0, encoder_segment_ids: Array | None = None,
                cache_phases: int | None = None) -> DecodeResult:
  """Beam search with length normalisation `alpha`; returns all beams, best first.

  Each step expands every live beam, keeps the 2k best continuations, moves those ending in EOS
  to the finished pool (top k by normalised score) and the k best others stay live. Stops when
  the best live beam, even at the longest length, cannot beat the worst of k finished ones.
  Beams still live at `max_decode_len` compete with finished ones for the k outputs.
  `cache_phases`: see `caches.cache_lengths`; the result does not depend on it.
  """
  batch, k = encoder_input_tokens.shape[0], num_beams
  lengths = caches.cache_lengths(max_decode_len, cache_phases)
  model_fns = EncoderDecoder(model, params, encoder_input_tokens, encoder_segment_ids)
  cache = caches.group_sequences(model_fns.init_cache(batch * k, lengths[0]), k)
  return beam_search_loop(model_fns.step, cache, batch, k, max_decode_len, lengths, alpha,
                          eos_id, decoder_start_id)


def _write_own_slots(slots: Array, cur: Array) -> tuple[Array, Array]:
  """Each live beam writes position `cur` into its own slot: the updated table and the step's
  self-attention mask [inputs, 1, k beams, length * k slots], position-major like the caches."""
  inputs, k, length = slots.shape
  own = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32)[None, :, None], (inputs, k, 1))
  slots = lax.dynamic_update_slice(slots, own, (0, 0, cur))
  visible = slots[:, :, :, None] == jnp.arange(k, dtype=jnp.int32)
  visible = jnp.logical_and(visible, (jnp.arange(length) <= cur)[:, None])
  return slots, visible.reshape(inputs, 1, k, length * k)


def beam_search_loop(step: StepFn, cache: Any, batch: int, k: int, max_decode_len: int,
                     lengths: list[int], alpha: float, eos_id: int,
                     decoder_start_id: int) -> DecodeResult:
  """The beam loop on `step` from `cache` (k sequences per row when k > 1, sized for
  lengths[0]), one phase per length."""
  length = max_decode_len
  live_seqs = jnp.zeros((batch, k, length), jnp.int32)
  live_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch, 1))
  fin_seqs = jnp.zeros((batch, k, length), jnp.int32)
  fin_scores = jnp.full((batch, k), NEG_INF, jnp.float32)
  fin_flags = jnp.zeros((batch, k), bool)
  slots = jnp.zeros((batch, k, lengths[0]), jnp.int32)
  max_bp = brevity_penalty(alpha, jnp.array(length))

  def cond(state, cache_len):
    i, _, live_logp, _, fin_scores, fin_flags, _, _ = state
    best_possible = live_logp[:, 0] / max_bp
    worst_finished = jnp.where(jnp.all(fin_flags, axis=1), jnp.min(fin_scores, axis=1), NEG_INF)
    can_improve = jnp.any(best_possible > worst_finished)
    return jnp.logical_and(i < cache_len, can_improve)

  def body(state, cache_len):
    i, live_seqs, live_logp, fin_seqs, fin_scores, fin_flags, slots, cache = state
    prev = jnp.where(i == 0, decoder_start_id, lax.dynamic_index_in_dim(
        live_seqs, jnp.maximum(i - 1, 0), axis=2, keepdims=False))
    mask = None  # one beam: its own cache row, no slots
    if k > 1:
      slots, mask = _write_own_slots(slots, i)
    logp, cache = step(prev.reshape(-1).astype(jnp.int32), cache, cache_len, mask)
    vocab = logp.shape[-1]
    cand = live_logp[:, :, None] + logp.reshape(batch, k, vocab)
    top_logp, top_idx = lax.top_k(cand.reshape(batch, k * vocab), 2 * k)
    top_beam, top_tok = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    top_seqs = jnp.take_along_axis(live_seqs, top_beam[:, :, None], axis=1)
    top_seqs = lax.dynamic_update_slice(top_seqs, top_tok[:, :, None], (0, 0, i))
    is_eos = top_tok == eos_id
    # An EOS continuation finishes only if it ranks among the k best of this step (as in
    # HuggingFace's beam search): with k = 1 this makes beam search exactly greedy. Candidates
    # extending a dead (NEG_INF) beam are not real.
    finishes = is_eos & (top_logp > NEG_INF / 2) & (jnp.arange(2 * k) < k)[None, :]

    # finished pool: old finished + newly finished, keep the k best
    new_fin = jnp.where(finishes, top_logp / brevity_penalty(alpha, i + 1), NEG_INF)
    all_scores = jnp.concatenate([fin_scores, new_fin], axis=1)
    all_seqs = jnp.concatenate([fin_seqs, top_seqs], axis=1)
    all_flags = jnp.concatenate([fin_flags, finishes], axis=1)
    fin_scores, keep = lax.top_k(all_scores, k)
    fin_seqs = jnp.take_along_axis(all_seqs, keep[:, :, None], axis=1)
    fin_flags = jnp.take_along_axis(all_flags, keep, axis=1)

    # live beams: the k best continuations that did not end
    live_cand = jnp.where(is_eos, NEG_INF, top_logp)
    live_logp, keep = lax.top_k(live_cand, k)
    live_seqs = jnp.take_along_axis(top_seqs, keep[:, :, None], axis=1)
    if k > 1:  # beam i continues beam parent[:, i]: it reads its history through their slots
      parent = jnp.take_along_axis(top_beam, keep, axis=1)
      slots = jnp.take_along_axis(slots, parent[:, :, None], axis=1)
    return i + 1, live_seqs, live_logp, fin_seqs, fin_scores, fin_flags, slots, cache

  def grow(state, cache_len):
    *rest, slots, cache = state
    slots = jnp.pad(slots, [(0, 0), (0, 0), (0, cache_len - slots.shape[-1])])
    return (*rest, slots, caches.extend_cache(cache, cache_len, groups=k))

  state = (jnp.array(0, jnp.int32), live_seqs, live_logp, fin_seqs, fin_scores, fin_flags, slots,
           cache)
  steps, live_seqs, live_logp, fin_seqs, fin_scores, _, _, _ = phased_loop(cond, body, state,
                                                                           lengths, grow)
  # Live beams (no EOS yet) compete with the finished ones at the end; after an early stop none
  # of them can win, so this only matters when max_decode_len was reached.
  all_scores = jnp.concatenate([fin_scores, live_logp / brevity_penalty(alpha, steps)], axis=1)
  all_seqs = jnp.concatenate([fin_seqs, live_seqs], axis=1)
  scores, keep = lax.top_k(all_scores, k)
  return DecodeResult(jnp.take_along_axis(all_seqs, keep[:, :, None], axis=1), scores)

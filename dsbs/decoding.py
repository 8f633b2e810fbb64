"""Batched autoregressive decoding with the KV cache: greedy and beam search.

Both run one `lax.while_loop` over at most `max_decode_len` steps and stop early once every
sequence is finished (greedy: all emitted EOS; beam: no live beam can beat the k-th finished
one). They take the `Transformer` module and its params, encode once, then feed one token per
step through `Transformer.decode(..., decode=True)`. Both are jit-compatible: close over the
module and the static sizes and compile with `jit` (jax.jit plus this module's XLA options):

    decode = decoding.jit(functools.partial(greedy_decode, model, max_decode_len=64))
    result = decode(params, encoder_input_tokens)

Outputs exclude the decoder start token; positions after EOS hold 0 (padding).
Beam scores use Google's length normalisation (Wu et al., 2016; T5X): sum(log p) / ((5 + len)
/ 6) ** alpha, with alpha = 0 giving plain sequence log-probabilities.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from dsbs.model.t5 import Transformer, compute_params, extend_cache

Array = jax.Array
NEG_INF = -1.0e7  # finite "minus infinity" keeps arithmetic NaN-free


@dataclasses.dataclass(frozen=True)
class DecodeResult:
  """tokens: [batch, len] (greedy) or [batch, beams, len] best-first (beam); scores alike."""
  tokens: Array
  scores: Array


jax.tree_util.register_dataclass(DecodeResult, data_fields=["tokens", "scores"], meta_fields=[])


# XLA:CPU: hand only the matmuls to the YNNPACK library, as whole dots, and let XLA's own
# emitters run the small reductions and elementwise ops of a decoding step. As library fusions
# those ran on the shared thread pool and waited on its workers at every step (measured on
# bench_small: a 12K-element attention softmax took 170-260 us in a library fusion, 15-20 us
# emitted by XLA). Training steps are faster with the defaults, so this is for decoding only.
_CPU_DECODE_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.lru_cache(maxsize=None)
def compiler_options(backend: str | None = None) -> tuple[tuple[str, str], ...]:
  """The XLA options `jit` compiles decoders with on `backend` (default: JAX's default).

  Empty off CPU, and on an XLA whose CPU compiler does not know the option (checked once by
  compiling a trivial function with it)."""
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return ()
  try:
    jax.jit(lambda x: x + 1, compiler_options=_CPU_DECODE_OPTIONS).lower(
        jnp.zeros((), jnp.float32)).compile()
  except Exception:  # pylint: disable=broad-except  (an XLA without the option)
    return ()
  return tuple(sorted(_CPU_DECODE_OPTIONS.items()))


def jit(fn: Callable[..., Any], **jit_kwargs: Any) -> Callable[..., Any]:
  """`jax.jit(fn)` with the decoders' XLA options (see `compiler_options`)."""
  return jax.jit(fn, compiler_options=dict(compiler_options()), **jit_kwargs)


def brevity_penalty(alpha: float, length: Array) -> Array:
  """((5 + length) / 6) ** alpha (1 when alpha == 0)."""
  return jnp.power((5.0 + length.astype(jnp.float32)) / 6.0, alpha)


def cache_lengths(max_decode_len: int, cache_phases: int | None = None) -> list[int]:
  """The self-attention cache lengths a decoder runs its phases with, the last one
  `max_decode_len`.

  A step attends over its whole cache, written or not, so a cache sized for the last step
  makes every early step read (and mask) positions that do not exist yet. The decoders
  therefore run `cache_phases` loops, each over the steps that fit a cache of the next length,
  and grow the caches between them (`dsbs.model.t5.extend_cache`): with 4 phases the steps
  read 5/8 of the full-length traffic on average, at the price of compiling the step 4 times.
  None picks one phase per 16 positions, at most 4. Measured on bench_small (64 steps; beam
  search's self-attention caches hold 12.6 MB per layer at full length): a beam-search call took
  2.00 s best / 2.38 s median with full-length caches and 1.81 / 2.04 s with 4 phases
  (alternating processes on a shared host).
  """
  if cache_phases is None:
    cache_phases = min(4, max(1, max_decode_len // 16))
  if cache_phases < 1:
    raise ValueError(f"cache_phases must be >= 1, got {cache_phases}")
  phases = min(cache_phases, max_decode_len)
  return sorted({-(-max_decode_len * (p + 1) // phases) for p in range(phases)})


def _encode(model: Transformer, params: Any, encoder_input_tokens: Array,
            encoder_segment_ids: Array | None) -> Array:
  return model.apply({"params": params}, encoder_input_tokens, encoder_segment_ids,
                     enable_dropout=False, method=Transformer.encode)


def init_cache(model: Transformer, params: Any, encoded: Array, encoder_input_tokens: Array,
               max_decode_len: int, num_beams: int = 1) -> Any:
  """The decoding cache ('cache' collection) for `max_decode_len` steps of this batch.

  Self-attention keys/values start at zero, one row per decoded sequence (inputs x
  `num_beams`, input-major); encoder-decoder keys/values are projected from `encoded` here,
  once, instead of at every step, and kept once per input: the beams of an input share them.
  With `num_beams` > 1 the self-attention caches are slot-addressed: the decoder's
  'beam_slots' table [inputs, num_beams, max_len] says which of an input's `num_beams` cache
  rows holds each beam's past positions, and `beam_search` reorders beams by permuting that
  table (`_reorder_beams`), never the caches.
  """
  inputs = encoder_input_tokens.shape[0]
  dec = jnp.ones((inputs * num_beams, 1), jnp.int32)
  variables = {"params": params}
  if num_beams > 1:
    variables["cache"] = {"decoder": {
        "beam_slots": jnp.zeros((inputs, num_beams, max_decode_len), jnp.int32)}}
  _, variables = model.apply(variables, encoded, encoder_input_tokens, dec, dec,
                             decode=True, enable_dropout=False, max_decode_length=max_decode_len,
                             mutable=["cache"], method=Transformer.decode)
  return variables["cache"]


def _step(model: Transformer, params: Any, cache: Any, encoded: Array, encoder_tokens: Array,
          tokens: Array, max_decode_len: int) -> tuple[Array, Any]:
  """One decoder step: tokens [n] -> float32 log-probs [n, vocab] and the updated cache."""
  logits, variables = model.apply(
      {"params": params, "cache": cache}, encoded, encoder_tokens, tokens[:, None],
      tokens[:, None], enable_dropout=False, decode=True, max_decode_length=max_decode_len,
      mutable=["cache"], method=Transformer.decode)
  return jax.nn.log_softmax(logits[:, 0].astype(jnp.float32)), variables["cache"]


def greedy_decode(model: Transformer, params: Any, encoder_input_tokens: Array,
                  max_decode_len: int, eos_id: int = 1, decoder_start_id: int = 0,
                  encoder_segment_ids: Array | None = None,
                  cache_phases: int | None = None) -> DecodeResult:
  """Argmax decoding. scores: sum of log-probs of the emitted tokens (EOS included).

  `cache_phases`: see `cache_lengths`; the result does not depend on it.
  """
  batch = encoder_input_tokens.shape[0]
  lengths = cache_lengths(max_decode_len, cache_phases)
  params = compute_params(params, model.config)  # steps read weights in the compute dtype
  encoded = _encode(model, params, encoder_input_tokens, encoder_segment_ids)
  cache = init_cache(model, params, encoded, encoder_input_tokens, lengths[0])
  state = (jnp.array(0, jnp.int32), jnp.full((batch,), decoder_start_id, jnp.int32),
           jnp.zeros((batch, max_decode_len), jnp.int32), jnp.zeros((batch,), jnp.float32),
           jnp.zeros((batch,), bool), cache)

  def cond(state, cache_len):
    i, _, _, _, done, _ = state
    return jnp.logical_and(i < cache_len, jnp.logical_not(jnp.all(done)))

  def body(state, cache_len):
    i, cur, out, scores, done, cache = state
    logp, cache = _step(model, params, cache, encoded, encoder_input_tokens, cur, cache_len)
    nxt = jnp.argmax(logp, axis=-1).astype(jnp.int32)
    tok_logp = jnp.take_along_axis(logp, nxt[:, None], axis=-1)[:, 0]
    nxt = jnp.where(done, 0, nxt)
    scores = scores + jnp.where(done, 0.0, tok_logp)
    out = lax.dynamic_update_slice(out, nxt[:, None], (0, i))
    done = jnp.logical_or(done, nxt == eos_id)
    return i + 1, nxt, out, scores, done, cache

  _, _, out, scores, _, _ = _phased_loop(cond, body, state, lengths)
  return DecodeResult(out, scores)


def _phased_loop(cond: Callable[..., Array], body: Callable[..., Any], state: tuple[Any, ...],
                 lengths: list[int]) -> tuple[Any, ...]:
  """`lax.while_loop(cond, body)` once per cache length (passed as `cache_len`), growing the
  cache, the last entry of `state`, between them."""
  for p, cache_len in enumerate(lengths):
    if p:
      state = state[:-1] + (extend_cache(state[-1], cache_len),)
    state = lax.while_loop(functools.partial(cond, cache_len=cache_len),
                           functools.partial(body, cache_len=cache_len), state)
  return state


def _reorder_beams(cache: Any, parent: Array) -> Any:
  """Beam i of each input continues beam parent[:, i]: permute the slot table, not the caches.

  Keys/values stay where they were written; the new beam i reads its history through the
  slots its parent used (see `init_cache`).
  """
  slots = cache["decoder"]["beam_slots"]
  slots = jnp.take_along_axis(slots, parent[:, :, None], axis=1)
  return dict(cache, decoder=dict(cache["decoder"], beam_slots=slots))


def beam_search(model: Transformer, params: Any, encoder_input_tokens: Array,
                max_decode_len: int, num_beams: int = 4, alpha: float = 0.6, eos_id: int = 1,
                decoder_start_id: int = 0, encoder_segment_ids: Array | None = None,
                cache_phases: int | None = None) -> DecodeResult:
  """Beam search with length normalisation `alpha`; returns all beams, best first.

  Each step expands every live beam, keeps the 2k best continuations, moves those ending in EOS
  to the finished pool (top k by normalised score) and the k best others stay live. Stops when
  the best live beam, even at the longest length, cannot beat the worst of k finished ones.
  Beams still live at `max_decode_len` compete with finished ones for the k outputs.
  `cache_phases`: see `cache_lengths`; the result does not depend on it.
  """
  batch, k = encoder_input_tokens.shape[0], num_beams
  length = max_decode_len
  lengths = cache_lengths(max_decode_len, cache_phases)
  params = compute_params(params, model.config)
  encoded = _encode(model, params, encoder_input_tokens, encoder_segment_ids)
  # Encodings and encoder-decoder keys/values stay once per input; the k beams of an input
  # query them together (measured on bench_small: k times less cross-attention traffic and
  # cache-creation work than repeating the encodings per beam).
  cache = init_cache(model, params, encoded, encoder_input_tokens, lengths[0], num_beams=k)

  live_seqs = jnp.zeros((batch, k, length), jnp.int32)
  live_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch, 1))
  fin_seqs = jnp.zeros((batch, k, length), jnp.int32)
  fin_scores = jnp.full((batch, k), NEG_INF, jnp.float32)
  fin_flags = jnp.zeros((batch, k), bool)
  max_bp = brevity_penalty(alpha, jnp.array(length))

  def cond(state, cache_len):
    i, _, live_logp, _, fin_scores, fin_flags, _ = state
    best_possible = live_logp[:, 0] / max_bp
    worst_finished = jnp.where(jnp.all(fin_flags, axis=1), jnp.min(fin_scores, axis=1), NEG_INF)
    can_improve = jnp.any(best_possible > worst_finished)
    return jnp.logical_and(i < cache_len, can_improve)

  def body(state, cache_len):
    i, live_seqs, live_logp, fin_seqs, fin_scores, fin_flags, cache = state
    prev = jnp.where(i == 0, decoder_start_id,
                     lax.dynamic_index_in_dim(live_seqs, jnp.maximum(i - 1, 0), axis=2, keepdims=False))
    logp, cache = _step(model, params, cache, encoded, encoder_input_tokens,
                        prev.reshape(-1).astype(jnp.int32), cache_len)
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
    parent = jnp.take_along_axis(top_beam, keep, axis=1)
    if k > 1:  # with one beam the parent is always itself
      cache = _reorder_beams(cache, parent)
    return i + 1, live_seqs, live_logp, fin_seqs, fin_scores, fin_flags, cache

  state = (jnp.array(0, jnp.int32), live_seqs, live_logp, fin_seqs, fin_scores, fin_flags, cache)
  steps, live_seqs, live_logp, fin_seqs, fin_scores, _, _ = _phased_loop(cond, body, state, lengths)
  # Live beams (no EOS yet) compete with the finished ones at the end; after an early stop none
  # of them can win, so this only matters when max_decode_len was reached.
  all_scores = jnp.concatenate([fin_scores, live_logp / brevity_penalty(alpha, steps)], axis=1)
  all_seqs = jnp.concatenate([fin_seqs, live_seqs], axis=1)
  scores, keep = lax.top_k(all_scores, k)
  return DecodeResult(jnp.take_along_axis(all_seqs, keep[:, :, None], axis=1), scores)

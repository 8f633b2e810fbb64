"""Batched autoregressive decoding with KV caches: greedy and beam search.

Both run `lax.while_loop`s over at most `max_decode_len` steps and stop early once every
sequence is finished (greedy: all emitted EOS; beam: no live beam can beat the k-th finished
one). They take the `Transformer` module and its params, encode once, then feed one token per
step through `Transformer.decode(..., decode=True)`. Both are jit-compatible: close over the
module and the static sizes and compile with `jit` (jax.jit plus the decoders' XLA options):

    decode = decoding.jit(functools.partial(greedy_decode, model, max_decode_len=64))
    result = decode(params, encoder_input_tokens)

Outputs exclude the decoder start token; positions after EOS hold 0 (padding).
Beam scores use Google's length normalisation (Wu et al., 2016; T5X): sum(log p) / ((5 + len)
/ 6) ** alpha, with alpha = 0 giving plain sequence log-probabilities.

Modules: `search` (the result type and the loop over cache phases), `greedy` and `beam` (the
searches, written against a step function: model-agnostic), `caches` (the KV-cache layout
operations: phase lengths, growth, grouping several sequences per cache row),
`encoder_decoder` (the step function of a T5X-style encoder-decoder module), `xla_options`.
Why the decoders are built this way, with measurements: docs/performance_notes.md.
"""
from dsbs.decoding.beam import beam_search, brevity_penalty
from dsbs.decoding.caches import cache_lengths
from dsbs.decoding.greedy import greedy_decode
from dsbs.decoding.search import DecodeResult
from dsbs.decoding.xla_options import compiler_options, jit

__all__ = ["beam_search", "brevity_penalty", "cache_lengths", "greedy_decode", "DecodeResult",
           "compiler_options", "jit"]

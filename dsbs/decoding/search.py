"""What the greedy and beam searches share: the result type, the step function they are written
against, and the loop over cache phases."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
from jax import lax

Array = jax.Array

# step(tokens [n], cache, cache_len, self-attention mask or None) -> (float32 log-probs
# [n, vocab], updated cache): one decoder step of n sequences on caches sized for cache_len
# positions (see dsbs.decoding.encoder_decoder for the one of a T5X-style encoder-decoder).
StepFn = Callable[[Array, Any, int, Array | None], tuple[Array, Any]]


@dataclasses.dataclass(frozen=True)
class DecodeResult:
  """tokens: [batch, len] (greedy) or [batch, beams, len] best-first (beam); scores alike."""
  tokens: Array
  scores: Array


jax.tree_util.register_dataclass(DecodeResult, data_fields=["tokens", "scores"], meta_fields=[])


def phased_loop(cond: Callable[..., Array], body: Callable[..., Any], state: tuple[Any, ...],
                lengths: list[int],
                grow: Callable[[tuple[Any, ...], int], tuple[Any, ...]]) -> tuple[Any, ...]:
  """`lax.while_loop(cond, body)` once per cache length (passed to both as `cache_len`), with
  `grow(state, cache_len)` between the loops (see `caches.cache_lengths`)."""
  for p, cache_len in enumerate(lengths):
    if p:
      state = grow(state, cache_len)
    state = lax.while_loop(functools.partial(cond, cache_len=cache_len),
                           functools.partial(body, cache_len=cache_len), state)
  return state

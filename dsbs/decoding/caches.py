"""Operations on the KV caches of decoding, by the layout contract of
`dsbs.model.layers.MultiHeadDotProductAttention`: self-attention keys `cached_key` [..., rows,
heads, head_dim, columns] and values `cached_value` [..., rows, heads, columns, head_dim] (the
leading axes, if any, are a layer scan's); every other cache entry is left as it is. A row
holding g sequences keeps position p of its j-th sequence in column p * g + j.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

_LENGTH_AXIS = {"cached_key": -1, "cached_value": -2}


def cache_lengths(max_decode_len: int, cache_phases: int | None = None) -> list[int]:
  """The self-attention cache lengths a decoder runs its phases with, the last one
  `max_decode_len`.

  A step attends over its whole cache, written or not, so a cache sized for the last step
  makes every early step read (and mask) positions that do not exist yet. The decoders
  therefore run `cache_phases` loops, each over the steps that fit a cache of the next length,
  and grow the caches between them (`extend_cache`): with 4 phases the steps read 5/8 of the
  full-length traffic on average, at the price of compiling the step 4 times. None picks one
  phase per 16 positions, at most 4.
  """
  if cache_phases is None:
    cache_phases = min(4, max(1, max_decode_len // 16))
  if cache_phases < 1:
    raise ValueError(f"cache_phases must be >= 1, got {cache_phases}")
  phases = min(cache_phases, max_decode_len)
  return sorted({-(-max_decode_len * (p + 1) // phases) for p in range(phases)})


def _name(path: tuple[Any, ...]) -> str | None:
  return getattr(path[-1], "key", None)


def group_sequences(cache: Any, groups: int) -> Any:
  """`cache` with each `groups` consecutive rows (sequences) of its self-attention keys and
  values folded into one row, interleaved position-major: [rows * g, ..., length] entries
  become [rows, ..., length * g]. The sequences of a row can then share one matmul per step
  and be reordered by masks alone (see dsbs.decoding.beam)."""
  if groups == 1:
    return cache

  def regroup(path, x):
    name = _name(path)
    if name not in _LENGTH_AXIS:
      return x
    *lead, rows, heads, a, b = x.shape
    if rows % groups:
      raise ValueError(f"group_sequences: {rows} rows of {name} are not a multiple of {groups}")
    x = x.reshape(*lead, rows // groups, groups, heads, a, b)
    if name == "cached_key":  # [.., r, g, h, d, L] -> [.., r, h, d, L, g]
      x = jnp.moveaxis(x, -4, -1)
      return x.reshape(*lead, rows // groups, heads, a, b * groups)
    x = jnp.moveaxis(x, -4, -2)  # [.., r, g, h, L, d] -> [.., r, h, L, g, d]
    return x.reshape(*lead, rows // groups, heads, a * groups, b)

  return jax.tree_util.tree_map_with_path(regroup, cache)


def extend_cache(cache: Any, length: int, groups: int = 1) -> Any:
  """`cache` with room for `length` self-attention positions (`groups` sequences per row).

  Pads every layer's self-attention keys/values with unwritten positions at the end; what was
  written stays where it is, and every other entry (the encoder-decoder keys/values, step
  counters) is shared as it is. Works on scanned-layer caches too (a leading layer axis).
  """
  def pad(path, x):
    name = _name(path)
    axis = _LENGTH_AXIS.get(name)
    if axis is None:
      return x
    have = x.shape[axis] // groups
    if length < have:
      raise ValueError(f"extend_cache: cannot grow a {have}-position cache entry {name} to "
                       f"{length} positions")
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, (length - have) * groups)
    return jnp.pad(x, widths)

  return jax.tree_util.tree_map_with_path(pad, cache)

"""Flax linen T5 encoder-decoder whose parameter tree and logical axes match T5X's T5 1.1 network.

Parameter names and logical axis names are those of `t5x/examples/t5/network.py`, so a T5X
checkpoint's `target` tree loads as it is, and partitioning rules written for T5X apply
unchanged (see dsbs/model/partitioning.py). Numerics follow the T5 papers and HuggingFace's
`T5ForConditionalGeneration`: no 1/sqrt(head_dim) scaling at run time (it lives in the query
initialiser), RMS layer norm without bias, bucketed relative position biases shared by all
layers of a stack, tied logits scaled by emb_dim**-0.5 for the original T5.

Parameters are float32 and boxed with logical axis names (`nn.get_partition_spec` reads them);
computation runs in `config.dtype`; logits are float32.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

from dsbs.model.config import T5Config

Array = jax.Array
Initializer = Callable[..., Array]

NEG_INF = -1e10  # large negative bias for masked attention logits (exp underflows to 0 in f32)

default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def _constrain(x: Array, axes: tuple[str, ...]) -> Array:
  """Shards an activation by logical names; a no-op outside a mesh with logical rules."""
  return nn.with_logical_constraint(x, axes)


def _act(name: str) -> Callable[[Array], Array]:
  return {
      "relu": nn.relu,
      "gelu": functools.partial(nn.gelu, approximate=True),
      "gelu_exact": functools.partial(nn.gelu, approximate=False),
      "silu": nn.silu,
      "linear": lambda x: x,
  }[name]


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


class DenseGeneral(nn.Module):
  """Dense layer over several input and output axes, with a flattened 2-D kernel as in T5X.

  The stored kernel is (prod(input axes), prod(features)); e.g. attention query kernels are
  (embed, heads*head_dim) with logical axes ('embed', 'joined_kv').
  """
  features: int | tuple[int, ...]
  kernel_axes: tuple[str, str]
  axis: int | tuple[int, ...] = -1
  dtype: Any = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    axis = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
    axis = tuple(a % inputs.ndim for a in axis)
    in_shape = tuple(inputs.shape[a] for a in axis)
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
        (int(np.prod(in_shape)), int(np.prod(features))), jnp.float32)
    kernel = jnp.asarray(kernel, self.dtype).reshape(in_shape + features)
    inputs = jnp.asarray(inputs, self.dtype)
    contract = (axis, tuple(range(len(axis))))
    return lax.dot_general(inputs, kernel, (contract, ((), ())))


class LayerNorm(nn.Module):
  """T5 layer norm: RMS scaling only (no mean subtraction, no bias), statistics in float32."""
  epsilon: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), jnp.float32)
    x32 = jnp.asarray(x, jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = jnp.asarray(x32 * lax.rsqrt(var + self.epsilon), self.dtype)
    return y * jnp.asarray(scale, self.dtype)


class Embed(nn.Module):
  """Token embedding table ('vocab', 'embed'), also used as the tied output head."""
  num_embeddings: int
  features: int
  dtype: Any = jnp.float32

  def setup(self):
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0),
                                                  ("vocab", "embed")),
        (self.num_embeddings, self.features), jnp.float32)

  def __call__(self, tokens: Array) -> Array:
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"Embed expects integer token ids, got {tokens.dtype}")
    return jnp.take(jnp.asarray(self.embedding, self.dtype), tokens, axis=0)

  def attend(self, query: Array) -> Array:
    """Logits against the embedding table, in float32."""
    return jnp.dot(jnp.asarray(query, jnp.float32), jnp.asarray(self.embedding, jnp.float32).T)


def relative_position_buckets(query_len: int, key_len: int, bidirectional: bool,
                              num_buckets: int, max_distance: int) -> np.ndarray:
  """T5's bucketed relative positions, [query_len, key_len] int32, computed on the host.

  Exact for |distance| < num_buckets/2 (per direction), logarithmic up to max_distance. The
  float32 arithmetic mirrors HuggingFace's so that bucket boundaries agree bit for bit.
  """
  q = np.arange(query_len, dtype=np.int64)[:, None]
  k = np.arange(key_len, dtype=np.int64)[None, :]
  rel = k - q  # memory position - query position
  buckets = np.zeros_like(rel)
  if bidirectional:
    num_buckets //= 2
    buckets += (rel > 0).astype(np.int64) * num_buckets
    rel = np.abs(rel)
  else:
    rel = -np.minimum(rel, 0)
  max_exact = num_buckets // 2
  is_small = rel < max_exact
  with np.errstate(divide="ignore"):
    large = (np.log(rel.astype(np.float32) / np.float32(max_exact))
             / np.float32(math.log(max_distance / max_exact))
             * np.float32(num_buckets - max_exact))
  large = np.where(is_small, 0, large).astype(np.int64) + max_exact
  large = np.minimum(large, num_buckets - 1)
  buckets += np.where(is_small, rel, large)
  return buckets.astype(np.int32)


class RelativePositionBiases(nn.Module):
  """Per-head learned biases over relative-position buckets: rel_embedding ('heads', 'relpos_buckets')."""
  num_buckets: int
  max_distance: int
  num_heads: int
  dtype: Any = jnp.float32
  embedding_init: Initializer = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")

  @nn.compact
  def __call__(self, query_len: int, key_len: int, bidirectional: bool = True,
               query_rows: Array | None = None) -> Array:
    """Returns [1, heads, query_len, key_len] biases, or only the rows `query_rows` [n]."""
    table = self.param(
        "rel_embedding",
        nn.with_logical_partitioning(self.embedding_init, ("heads", "relpos_buckets")),
        (self.num_heads, self.num_buckets), jnp.float32)
    buckets = jnp.asarray(relative_position_buckets(query_len, key_len, bidirectional,
                                                    self.num_buckets, self.max_distance))
    if query_rows is not None:
      buckets = jnp.take(buckets, query_rows, axis=0)
    values = jnp.take(jnp.asarray(table, self.dtype), buckets, axis=1)
    return values[None]


class MultiHeadDotProductAttention(nn.Module):
  """T5 attention: no logit scaling at run time; optional KV cache for incremental decoding."""
  num_heads: int
  head_dim: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0
  float32_logits: bool = True
  kernel_init: Initializer = default_kernel_init
  # > 1: decoding self-attention for beam search with this many beams per input, on
  # slot-addressed caches (see `_beam_slot_attention`)
  beams: int = 1

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, mask: Array | None = None,
               bias: Array | None = None, *, decode: bool = False, cache_kv: bool = False,
               deterministic: bool = True) -> Array:
    """decode: self-attention over a KV cache, one query position per call. cache_kv:
    encoder-decoder attention while decoding: keys/values of the (fixed) encoder outputs are
    projected once, when the cache is created, and reused at every step. The query batch may
    be a multiple g of the encoder batch (beam search: g beams per input, input-major): the
    g queries of an input then attend to its one copy of the keys/values together."""
    depth_scaling = jnp.sqrt(self.head_dim).astype(jnp.float32)
    query_init = lambda *args: self.kernel_init(*args) / depth_scaling  # pylint: disable=unnecessary-lambda-assignment
    proj = functools.partial(DenseGeneral, features=(self.num_heads, self.head_dim), axis=-1,
                             kernel_axes=("embed", "joined_kv"), dtype=self.dtype)
    query = proj(kernel_init=query_init, name="query")(inputs_q)
    query = _constrain(query, ("batch", "length", "heads", "kv"))
    kv_axes = ("batch", "length", "heads", "kv")
    # Decoding caches hold keys [batch, heads, head_dim, length] and values [batch, heads,
    # length, head_dim]: the operand layouts the per-step attention dots read, so no step
    # transposes a cache (measured on XLA:CPU: length-major caches cost 4 transposes per layer
    # per step, ~40% of a bench_small decode; keys with head_dim minor made the per-step logits
    # dot 1.7x slower than keys with length minor).
    k_spec = v_spec = "bkhd"
    if cache_kv and self.has_variable("cache", "cross_key"):
      key = self.get_variable("cache", "cross_key")
      value = self.get_variable("cache", "cross_value")
      k_spec, v_spec = "bhdk", "bhkd"
    else:
      key = _constrain(proj(kernel_init=self.kernel_init, name="key")(inputs_kv), kv_axes)
      value = _constrain(proj(kernel_init=self.kernel_init, name="value")(inputs_kv), kv_axes)
      if cache_kv:
        self.put_variable("cache", "cross_key", key.transpose(0, 2, 3, 1))
        self.put_variable("cache", "cross_value", value.transpose(0, 2, 1, 3))

    if decode and self.beams > 1:
      return self._out(self._beam_slot_attention(query, key, value, mask, bias), inputs_q)
    if decode:
      # The first call (no cache yet) sizes the caches, keys [batch, heads, head_dim, max_len]
      # and values [batch, heads, max_len, head_dim], with max_len from the bias table (the
      # decoder builds it for max_decode_length); later calls write one position at a time.
      is_initialized = self.has_variable("cache", "cached_key")
      max_len = bias.shape[-1] if bias is not None else key.shape[1]
      batch, _, heads, head_dim = key.shape
      cached_key = self.variable("cache", "cached_key", jnp.zeros,
                                 (batch, heads, head_dim, max_len), key.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros,
                                   (batch, heads, max_len, head_dim), value.dtype)
      cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
      if is_initialized:
        max_len = cached_value.value.shape[2]
        if query.shape[1] != 1:
          raise ValueError(f"decode=True expects one new token per step, got {query.shape[1]}")
        cache_batch, cache_heads, _, cache_head_dim = cached_value.value.shape
        if (cache_batch, cache_heads, cache_head_dim) != (batch, heads, head_dim):
          raise ValueError(f"KV cache shape {cached_value.value.shape} does not fit step "
                           f"{key.shape}")
        cur = cache_index.value
        key = lax.dynamic_update_slice(cached_key.value, key.transpose(0, 2, 3, 1), (0, 0, 0, cur))
        value = lax.dynamic_update_slice(cached_value.value, value.transpose(0, 2, 1, 3),
                                         (0, 0, cur, 0))
        cached_key.value, cached_value.value = key, value
        cache_index.value = cur + 1
        k_spec, v_spec = "bhdk", "bhkd"
        step_mask = (jnp.arange(max_len) <= cur)[None, None, None, :]
        step_mask = jnp.broadcast_to(step_mask, (batch, 1, 1, max_len))
        mask = step_mask if mask is None else jnp.logical_and(mask, step_mask)
        if bias is not None and bias.shape[-2] > 1:  # a full table: take the current row
          bias = lax.dynamic_slice_in_dim(bias, cur, 1, axis=-2)
      elif bias is not None:  # sizing call: outputs are discarded, keep shapes consistent
        bias = bias[:, :, :query.shape[1], :key.shape[1]]

    if self.float32_logits:
      query, key = query.astype(jnp.float32), key.astype(jnp.float32)
    query_batch, query_len = query.shape[0], query.shape[1]
    groups = query_batch // key.shape[0]
    if groups * key.shape[0] != query_batch:
      raise ValueError(f"query batch {query_batch} is not a multiple of the key batch "
                       f"{key.shape[0]}")
    if groups > 1:  # [inputs * g, q, h, d] -> [inputs, g * q, h, d]: one matmul per input
      query = query.reshape((key.shape[0], groups * query_len) + query.shape[2:])
    logits = jnp.einsum(f"bqhd,{k_spec}->bhqk", query, key)
    if bias is not None:
      logits = logits + bias.astype(logits.dtype)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.asarray(NEG_INF, logits.dtype))
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    if not deterministic and self.dropout_rate > 0.0:
      weights = nn.Dropout(rate=self.dropout_rate)(weights, deterministic=False)
    if groups > 1:  # heads-major result, then [inputs, h, g * q, d] -> [inputs * g, q, h, d]
      out = jnp.einsum(f"bhqk,{v_spec}->bhqd", weights, value.astype(self.dtype))
      out = out.transpose(0, 2, 1, 3).reshape(query_batch, query_len, self.num_heads, -1)
    else:
      out = jnp.einsum(f"bhqk,{v_spec}->bqhd", weights, value.astype(self.dtype))
    return self._out(out, inputs_q)

  def _out(self, out: Array, inputs_q: Array) -> Array:
    out = _constrain(out, ("batch", "length", "heads", "kv"))
    return DenseGeneral(features=inputs_q.shape[-1], axis=(-2, -1),
                        kernel_axes=("joined_kv", "embed"), kernel_init=self.kernel_init,
                        dtype=self.dtype, name="out")(out)

  def _beam_slot_attention(self, query: Array, key: Array, value: Array, mask: Array | None,
                           bias: Array | None) -> Array:  # mask: None only when sizing
    """Beam-search self-attention on a slot-addressed cache; [inputs * k, 1, heads, kv] out.

    Each input has k cache rows ("slots") that are never reordered: every beam writes its new
    key/value into its own slot at the current position, and which slot holds a beam's earlier
    positions is in `mask`, [inputs, 1, k beams, max_len * k] (built by the decoder from its
    `beam_slots` table, position-major), so a beam attends over all k slots of its input with
    the other beams' entries masked out. Reordering beams then permutes that small table
    instead of copying every layer's cache (measured on bench_small, k=4: the copies were ~1/4
    of a beam-search call). Keys are kept [inputs, heads, head_dim, max_len * k] and values
    [inputs, heads, max_len * k, head_dim], the operand layouts XLA:CPU's dots read directly
    (other layouts made it copy the whole cache at every step).
    """
    k = self.beams
    rows, _, heads, head_dim = key.shape
    inputs = rows // k
    if inputs * k != rows:
      raise ValueError(f"decoder batch {rows} is not a multiple of beams={k}")
    is_initialized = self.has_variable("cache", "cached_key")
    max_len = bias.shape[-1] if bias is not None else key.shape[1]
    cached_key = self.variable("cache", "cached_key", jnp.zeros,
                               (inputs, heads, head_dim, max_len * k), key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros,
                                 (inputs, heads, max_len * k, head_dim), value.dtype)
    cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not is_initialized:  # sizing call: outputs are discarded
      return jnp.zeros_like(query)
    if query.shape[1] != 1:
      raise ValueError(f"decode=True expects one new token per step, got {query.shape[1]}")
    if mask is None:  # without it a beam would read the other beams' slots and unfilled ones
      raise ValueError("beam-slot attention needs the decoder's slot mask")
    if cached_key.value.shape != (inputs, heads, head_dim, max_len * k):
      raise ValueError(f"beam cache shape {cached_key.value.shape} does not fit step {key.shape}")
    cur = cache_index.value
    new_k = key.reshape(inputs, k, heads, head_dim).transpose(0, 2, 3, 1)  # [g, h, d, k]
    new_v = value.reshape(inputs, k, heads, head_dim).transpose(0, 2, 1, 3)  # [g, h, k, d]
    cached_key.value = lax.dynamic_update_slice(cached_key.value, new_k.astype(key.dtype),
                                                (0, 0, 0, cur * k))
    cached_value.value = lax.dynamic_update_slice(cached_value.value, new_v.astype(value.dtype),
                                                  (0, 0, cur * k, 0))
    cache_index.value = cur + 1
    keys, values = cached_key.value, cached_value.value
    query = query.reshape(inputs, k, heads, head_dim).transpose(0, 2, 1, 3)  # [g, h, q, d]
    if self.float32_logits:
      query, keys = query.astype(jnp.float32), keys.astype(jnp.float32)
    logits = jnp.einsum("ghqd,ghdn->ghqn", query, keys)  # n = position * k + slot
    if bias is not None:
      if bias.shape[-2] > 1:  # a full table: take the current row
        bias = lax.dynamic_slice_in_dim(bias, cur, 1, axis=-2)
      logits = logits + jnp.repeat(bias.astype(logits.dtype), k, axis=-1)
    logits = jnp.where(mask, logits, jnp.asarray(NEG_INF, logits.dtype))
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    out = jnp.einsum("ghqn,ghnd->ghqd", weights, values.astype(self.dtype))
    return out.transpose(0, 2, 1, 3).reshape(rows, 1, heads, head_dim)


class MlpBlock(nn.Module):
  """Feed-forward block; gated when several activations are given (wi_0 * wi_1 -> wo).

  T5 1.1's gated GELU without active dropout runs through `gated_gelu_mlp`, whose hand-written
  backward pass keeps XLA:CPU from materialising transposed activation gradients (measured:
  the autodiff version spent ~14% of a bench_small step in those copies).
  """
  intermediate_dim: int
  activations: Sequence[str] = ("relu",)
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, inputs: Array, deterministic: bool = True) -> Array:
    if (tuple(self.activations) == ("gelu", "linear")
        and (deterministic or self.dropout_rate == 0.0)):
      kernels = [
          _Kernel(shape, axes, self.kernel_init, name=n)()
          for n, axes, shape in (
              ("wi_0", ("embed", "mlp"), (inputs.shape[-1], self.intermediate_dim)),
              ("wi_1", ("embed", "mlp"), (inputs.shape[-1], self.intermediate_dim)),
              ("wo", ("mlp", "embed"), (self.intermediate_dim, inputs.shape[-1])))]
      return gated_gelu_mlp(jnp.asarray(inputs, self.dtype),
                            *[jnp.asarray(k, self.dtype) for k in kernels])
    hidden = None
    for idx, act in enumerate(self.activations):
      name = "wi" if len(self.activations) == 1 else f"wi_{idx}"
      h = DenseGeneral(self.intermediate_dim, kernel_axes=("embed", "mlp"), dtype=self.dtype,
                       kernel_init=self.kernel_init, name=name)(inputs)
      h = _act(act)(h)
      hidden = h if hidden is None else hidden * h
    hidden = nn.Dropout(rate=self.dropout_rate, broadcast_dims=(-2,))(
        hidden, deterministic=deterministic)
    hidden = _constrain(hidden, ("batch", "length", "mlp"))
    return DenseGeneral(inputs.shape[-1], kernel_axes=("mlp", "embed"), dtype=self.dtype,
                        kernel_init=self.kernel_init, name="wo")(hidden)


class _Kernel(nn.Module):
  """One float32 `kernel` parameter under its own scope: DenseGeneral's parameter path."""
  shape: tuple[int, ...]
  axes: tuple[str, str]
  init: Initializer

  @nn.compact
  def __call__(self) -> Array:
    return self.param("kernel", nn.with_logical_partitioning(self.init, self.axes), self.shape,
                      jnp.float32)


_GELU_C = math.sqrt(2.0 / math.pi)


def _gelu_and_grad(x: Array) -> tuple[Array, Array]:
  """tanh-approximated GELU and its derivative, from one tanh."""
  inner = _GELU_C * (x + 0.044715 * x * x * x)
  t = jnp.tanh(inner)
  gelu = 0.5 * x * (1.0 + t)
  grad = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * x * x)
  return gelu, grad


@jax.custom_vjp
def gated_gelu_mlp(x: Array, wi_0: Array, wi_1: Array, wo: Array) -> Array:
  """(gelu(x @ wi_0) * (x @ wi_1)) @ wo over the last axis of x; hand-written backward."""
  return _gated_fwd(x, wi_0, wi_1, wo)[0]


def _gated_fwd(x, wi_0, wi_1, wo):
  x2 = x.reshape(-1, x.shape[-1])
  h0, h1 = x2 @ wi_0, x2 @ wi_1
  act = nn.gelu(h0, approximate=True)
  y = (act * h1) @ wo
  return y.reshape(x.shape[:-1] + (wo.shape[-1],)), (x2, h0, h1, wi_0, wi_1, wo)


def _gated_bwd(res, dy):
  x2, h0, h1, wi_0, wi_1, wo = res
  dy2 = dy.reshape(-1, dy.shape[-1])
  act, dact = _gelu_and_grad(h0)
  dh = dy2 @ wo.T
  dh1 = dh * act
  dh0 = dh * h1 * dact
  dx = dh0 @ wi_0.T + dh1 @ wi_1.T
  # Weight gradients as (d_hidden^T @ x)^T: the [tokens, mlp] gradients are read in their
  # natural layout; only the small [mlp, embed] results are transposed.
  contract = (((0,), (0,)), ((), ()))
  dwo = lax.dot_general(act * h1, dy2, contract)
  dwi_0 = lax.dot_general(dh0, x2, contract).T
  dwi_1 = lax.dot_general(dh1, x2, contract).T
  return dx.reshape(dy.shape[:-1] + (x2.shape[-1],)), dwi_0, dwi_1, dwo


gated_gelu_mlp.defvjp(_gated_fwd, _gated_bwd)


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------


def make_attention_mask(query_valid: Array, key_valid: Array,
                        query_segments: Array | None = None,
                        key_segments: Array | None = None) -> Array:
  """[batch, 1, q, k] boolean mask: both positions real and (when packed) in the same segment."""
  mask = jnp.logical_and(query_valid[:, :, None], key_valid[:, None, :])
  if query_segments is not None:
    mask = jnp.logical_and(mask, query_segments[:, :, None] == key_segments[:, None, :])
  return mask[:, None]


def additive_mask(mask: Array, bias: Array | None = None, dtype: Any = jnp.float32) -> Array:
  """`bias` where `mask` holds and NEG_INF elsewhere: a boolean mask folded into the additive
  attention bias once per stack, so that each layer adds one array to its logits instead of
  adding the bias and then selecting (forward and backward; measured on bench_small)."""
  base = jnp.zeros((), dtype) if bias is None else bias.astype(dtype)
  return jnp.where(mask, base, jnp.asarray(NEG_INF, dtype))


def make_decoder_mask(decoder_target_tokens: Array, segment_ids: Array | None = None) -> Array:
  """Causal self-attention mask over non-padding decoder positions (packing aware)."""
  valid = decoder_target_tokens > 0
  mask = make_attention_mask(valid, valid, segment_ids, segment_ids)
  length = decoder_target_tokens.shape[-1]
  causal = jnp.tril(jnp.ones((length, length), bool))
  return jnp.logical_and(mask, causal[None, None])


# ---------------------------------------------------------------------------------------------
# Encoder and decoder stacks
# ---------------------------------------------------------------------------------------------


def _remat(layer_cls: type[nn.Module], policy: str | None) -> type[nn.Module]:
  if policy in (None, "none"):
    return layer_cls
  jax_policy = {
      "full": None,
      "minimal": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
      "dots_saveable": jax.checkpoint_policies.dots_saveable,
  }[policy]
  return nn.remat(layer_cls, policy=jax_policy, prevent_cse=False)


class EncoderLayer(nn.Module):
  """Pre-norm self-attention + MLP block with residuals."""
  config: T5Config
  deterministic: bool = True
  scanned: bool = False  # under nn.scan: return (carry, None)

  @nn.compact
  def __call__(self, inputs: Array, mask: Array | None, bias: Array) -> Array | tuple[Array, None]:
    cfg, det = self.config, self.deterministic
    dtype = jnp.dtype(cfg.dtype)
    drop = functools.partial(nn.Dropout, rate=cfg.dropout_rate, broadcast_dims=(-2,))
    x = LayerNorm(cfg.layer_norm_epsilon, dtype, name="pre_attention_layer_norm")(inputs)
    x = MultiHeadDotProductAttention(cfg.num_heads, cfg.head_dim, dtype, cfg.dropout_rate,
                                     cfg.float32_attention_logits, name="attention")(
                                         x, x, mask, bias, deterministic=det)
    x = drop()(x, deterministic=det) + inputs
    x = _constrain(x, ("batch", "length", "embed"))
    y = LayerNorm(cfg.layer_norm_epsilon, dtype, name="pre_mlp_layer_norm")(x)
    y = MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dropout_rate, dtype, name="mlp")(y, det)
    y = drop()(y, deterministic=det) + x
    y = _constrain(y, ("batch", "length", "embed"))
    return (y, None) if self.scanned else y


class DecoderLayer(nn.Module):
  """Pre-norm causal self-attention, encoder-decoder attention and MLP, with residuals."""
  config: T5Config
  deterministic: bool = True
  decode: bool = False
  scanned: bool = False  # under nn.scan: return (carry, None)
  beams: int = 1  # > 1 only with decode: beam search on slot-addressed self-attention caches

  @nn.compact
  def __call__(self, inputs: Array, encoded: Array, self_mask: Array | None,
               cross_mask: Array | None, bias: Array,
               cross_bias: Array | None = None) -> Array | tuple[Array, None]:
    cfg, det = self.config, self.deterministic
    dtype = jnp.dtype(cfg.dtype)
    drop = functools.partial(nn.Dropout, rate=cfg.dropout_rate, broadcast_dims=(-2,))
    attn = functools.partial(MultiHeadDotProductAttention, cfg.num_heads, cfg.head_dim, dtype,
                             cfg.dropout_rate, cfg.float32_attention_logits)
    x = LayerNorm(cfg.layer_norm_epsilon, dtype, name="pre_self_attention_layer_norm")(inputs)
    x = attn(beams=self.beams, name="self_attention")(
        x, x, self_mask, bias, decode=self.decode, deterministic=det)
    x = drop()(x, deterministic=det) + inputs
    x = _constrain(x, ("batch", "length", "embed"))
    y = LayerNorm(cfg.layer_norm_epsilon, dtype, name="pre_cross_attention_layer_norm")(x)
    y = attn(name="encoder_decoder_attention")(y, encoded, cross_mask, cross_bias,
                                               cache_kv=self.decode, deterministic=det)
    y = drop()(y, deterministic=det) + x
    y = _constrain(y, ("batch", "length", "embed"))
    z = LayerNorm(cfg.layer_norm_epsilon, dtype, name="pre_mlp_layer_norm")(y)
    z = MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dropout_rate, dtype, name="mlp")(z, det)
    z = drop()(z, deterministic=det) + y
    z = _constrain(z, ("batch", "length", "embed"))
    return (z, None) if self.scanned else z


def _scanned(cls: type[nn.Module], policy: str | None, num_layers: int,
             num_broadcast: int) -> type[nn.Module]:
  """Stacks `num_layers` copies of `cls` along a leading 'layers' parameter axis (as T5X's
  scalable_t5: params `encoder/layers/attention/query/kernel` of shape [layers, ...])."""
  return nn.scan(_remat(cls, policy), variable_axes={"params": 0, "cache": 0},
                 split_rngs={"params": True, "dropout": True},
                 in_axes=(nn.broadcast,) * num_broadcast, length=num_layers,
                 metadata_params={nn.PARTITION_NAME: "layers"})


class Encoder(nn.Module):
  """Token embedding (shared) -> layers_0..N-1 -> encoder_norm."""
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, tokens: Array, mask: Array, deterministic: bool = True) -> Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    relpos = RelativePositionBiases(cfg.relative_attention_num_buckets,
                                    cfg.relative_attention_max_distance, cfg.num_heads, dtype,
                                    name="relpos_bias")
    length = tokens.shape[-1]
    bias = additive_mask(mask, relpos(length, length, True), dtype)
    mask = None  # folded into the bias
    x = self.shared_embedding(tokens.astype(jnp.int32))
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
    x = _constrain(x.astype(dtype), ("batch", "length", "embed"))
    if cfg.scan_layers:
      stack = _scanned(EncoderLayer, cfg.remat_policy, cfg.num_encoder_layers, 2)
      x, _ = stack(cfg, deterministic, scanned=True, name="layers")(x, mask, bias)
    else:
      layer_cls = _remat(EncoderLayer, cfg.remat_policy)
      for i in range(cfg.num_encoder_layers):
        x = layer_cls(cfg, deterministic, name=f"layers_{i}")(x, mask, bias)
    x = LayerNorm(cfg.layer_norm_epsilon, dtype, name="encoder_norm")(x)
    return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)


class Decoder(nn.Module):
  """Token embedding (shared) -> layers_0..N-1 -> decoder_norm -> logits (float32)."""
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, encoded: Array, tokens: Array, self_mask: Array | None,
               cross_mask: Array | None, deterministic: bool = True, decode: bool = False,
               max_decode_length: int | None = None) -> Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    relpos = RelativePositionBiases(cfg.relative_attention_num_buckets,
                                    cfg.relative_attention_max_distance, cfg.num_heads, dtype,
                                    name="relpos_bias")
    length = max_decode_length if (decode and max_decode_length) else tokens.shape[-1]
    # beam search's caches are slot-addressed (dsbs.decoding.init_cache puts the table in)
    beams = (self.get_variable("cache", "beam_slots").shape[1]
             if decode and self.has_variable("cache", "beam_slots") else 1)
    if decode and self.has_variable("cache", "position"):
      # one step on the cache: only the bias row of the current position
      position = self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
      bias = relpos(length, length, False, query_rows=position.value[None])
      if beams > 1:
        self_mask = self._beam_slot_mask(position.value, length)
      position.value = position.value + 1
    else:
      if decode:  # sizing call: create the step counter
        self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
      bias = relpos(length, length, False)
    cross_bias = None
    if not decode:  # fold the masks into additive biases once for all layers
      bias = bias if self_mask is None else additive_mask(self_mask, bias, dtype)
      cross_bias = None if cross_mask is None else additive_mask(cross_mask, None, dtype)
      self_mask = cross_mask = None
    y = self.shared_embedding(tokens.astype(jnp.int32))
    y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
    y = _constrain(y.astype(dtype), ("batch", "length", "embed"))
    if cfg.scan_layers:
      stack = _scanned(DecoderLayer, cfg.remat_policy, cfg.num_decoder_layers, 5)
      y, _ = stack(cfg, deterministic, decode, scanned=True, beams=beams, name="layers")(
          y, encoded, self_mask, cross_mask, bias, cross_bias)
    else:
      layer_cls = _remat(DecoderLayer, cfg.remat_policy)
      for i in range(cfg.num_decoder_layers):
        y = layer_cls(cfg, deterministic, decode, beams=beams, name=f"layers_{i}")(
            y, encoded, self_mask, cross_mask, bias, cross_bias)
    y = LayerNorm(cfg.layer_norm_epsilon, dtype, name="decoder_norm")(y)
    y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
    if cfg.logits_via_embedding:
      logits = self.shared_embedding.attend(y) / jnp.sqrt(jnp.float32(y.shape[-1]))
    else:
      logits = DenseGeneral(cfg.vocab_size, kernel_axes=("embed", "vocab"), dtype=jnp.float32,
                            name="logits_dense")(y)
    return _constrain(logits, ("batch", "length", "vocab"))

  def _beam_slot_mask(self, cur: Array, length: int) -> Array:
    """Self-attention mask of a beam-search step on slot-addressed caches.

    'beam_slots' [inputs, k, length] says, for each live beam and past position, which of its
    input's k cache slots holds that position's keys/values (the beam search permutes it as
    beams are reordered); this step's entries are written by each beam into its own slot.
    Returns [inputs, 1, k beams, length * k slots], position-major like the caches.
    """
    slots = self.get_variable("cache", "beam_slots")
    inputs, k, _ = slots.shape
    own = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32)[None, :, None], (inputs, k, 1))
    slots = lax.dynamic_update_slice(slots, own, (0, 0, cur))
    self.put_variable("cache", "beam_slots", slots)
    visible = slots[:, :, :, None] == jnp.arange(k, dtype=jnp.int32)
    visible = jnp.logical_and(visible, (jnp.arange(length) <= cur)[:, None])
    return visible.reshape(inputs, 1, k, length * k)


class Transformer(nn.Module):
  """The T5 encoder-decoder. `__call__`, `encode`, `decode` have T5X's signatures.

  Token id 0 is padding: masks come from `tokens > 0` and, when packing, from segment ids.
  `encoder_positions` / `decoder_positions` are accepted for T5X compatibility; T5's relative
  position biases depend only on offsets, so packed segments need no explicit positions.
  """
  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, dtype=jnp.dtype(cfg.dtype))
    self.encoder = Encoder(cfg, self.token_embedder)
    self.decoder = Decoder(cfg, self.token_embedder)

  def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Array | None = None,
             enable_dropout: bool = True) -> Array:
    """[batch, in_len] token ids -> [batch, in_len, emb_dim] encodings."""
    valid = encoder_input_tokens > 0
    mask = make_attention_mask(valid, valid, encoder_segment_ids, encoder_segment_ids)
    return self.encoder(encoder_input_tokens, mask, deterministic=not enable_dropout)

  def decode(self, encoded: Array, encoder_input_tokens: Array, decoder_input_tokens: Array,
             decoder_target_tokens: Array, encoder_segment_ids: Array | None = None,
             decoder_segment_ids: Array | None = None, decoder_positions: Array | None = None,
             enable_dropout: bool = True, decode: bool = False,
             max_decode_length: int | None = None) -> Array:
    """Decoder logits [batch, len, vocab] in float32; with decode=True, one step on the cache.

    The first decode=True call (no 'cache' yet, any decoder length, `max_decode_length` set)
    creates the cache and projects the encoder-decoder keys/values of `encoded` into it once;
    pass the real encodings there (dsbs.decoding.init_cache does), not placeholders.
    """
    del decoder_positions  # relative position biases need none
    enc_valid = encoder_input_tokens > 0
    if decode:
      self_mask = None  # the KV cache masks positions beyond the current step
      # [inputs, 1, 1, in_len]: also right when the decoder batch holds g beams per input
      cross_mask = enc_valid[:, None, None, :]
    else:
      self_mask = make_decoder_mask(decoder_target_tokens, decoder_segment_ids)
      cross_mask = make_attention_mask(decoder_target_tokens > 0, enc_valid,
                                       decoder_segment_ids, encoder_segment_ids)
    return self.decoder(encoded, decoder_input_tokens, self_mask, cross_mask,
                        deterministic=not enable_dropout, decode=decode,
                        max_decode_length=max_decode_length)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array, encoder_segment_ids: Array | None = None,
               decoder_segment_ids: Array | None = None, encoder_positions: Array | None = None,
               decoder_positions: Array | None = None, *, enable_dropout: bool = True,
               decode: bool = False, max_decode_length: int | None = None) -> Array:
    """Teacher-forced logits [batch, target_len, vocab], float32."""
    del encoder_positions
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids, enable_dropout)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                       encoder_segment_ids, decoder_segment_ids, decoder_positions,
                       enable_dropout=enable_dropout, decode=decode,
                       max_decode_length=max_decode_length)


def init_params(config: T5Config, rng: Array, input_len: int = 8, target_len: int = 8,
                batch: int = 1) -> Any:
  """Initialises the boxed ('params' collection) parameters; wrap in jax.eval_shape for shapes."""
  model = Transformer(config)
  enc = jnp.ones((batch, input_len), jnp.int32)
  dec = jnp.ones((batch, target_len), jnp.int32)
  return model.init({"params": rng}, enc, dec, dec, enable_dropout=False)["params"]


# Parameters some use reads in float32 (the logits): kept as stored by `compute_params`.
_FLOAT32_USES = (("decoder", "logits_dense", "kernel"),)
_TIED_FLOAT32_USES = (("token_embedder", "embedding"),)  # Embed.attend, tied logits


def compute_params(params: Any, config: T5Config) -> Any:
  """`params` with every floating leaf that the network only reads in `config.dtype` already
  cast to it; the rest (the float32 logits kernel, or a tied embedding) as they are.

  The network computes the same results from either tree, bit for bit: each layer casts its
  parameters to `config.dtype` before using them. The decoders cast once before their loop
  because XLA leaves those casts inside it: with float32 parameters and bfloat16 compute, each
  step would read every weight in float32 (twice the bytes) and convert it again. A no-op when
  the parameters are already in the compute dtype. Boxed or unboxed trees alike.
  """
  dtype = jnp.dtype(config.dtype)
  keep = set(_FLOAT32_USES) | (set(_TIED_FLOAT32_USES) if config.logits_via_embedding else set())

  def cast(path, x):
    names = tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey))
    if names in keep or not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == dtype:
      return x
    return x.astype(dtype)

  return jax.tree_util.tree_map_with_path(cast, params)


def extend_cache(cache: Any, length: int) -> Any:
  """The decoding cache of `Transformer.decode` with room for `length` self-attention positions.

  Pads every layer's self-attention keys/values (and beam search's 'beam_slots' table) with
  unwritten positions at the end; what was written stays where it is, and the encoder-decoder
  keys/values are shared as they are. The decoders let the caches grow this way in a few
  steps, so that the early steps of a long decode read short caches (see
  `dsbs.decoding.cache_lengths`). Works on scanned-layer caches too (a leading layer axis).
  """
  dec = cache["decoder"]
  beams = dec["beam_slots"].shape[1] if "beam_slots" in dec else 1

  def pad(path, x):
    name = getattr(path[-1], "key", None)
    axis = {"cached_key": -1, "cached_value": -2, "beam_slots": -1}.get(name)
    if axis is None:
      return x
    per_position = 1 if name == "beam_slots" else beams
    have = x.shape[axis] // per_position
    if length < have:
      raise ValueError(f"extend_cache: cannot grow a {have}-position cache entry {name} to "
                       f"{length} positions")
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, (length - have) * per_position)
    return jnp.pad(x, widths)

  return jax.tree_util.tree_map_with_path(pad, cache)


def shift_right(targets: Array, bos_id: int = 0) -> Array:
  """Decoder inputs from targets: prepend `bos_id` (T5 uses pad = 0) and drop the last token."""
  shifted = jnp.pad(targets, [(0, 0)] * (targets.ndim - 1) + [(1, 0)], constant_values=bos_id)
  return shifted[..., :-1]

"""The T5 layers, in T5X's shape: dense, layer norm, embeddings, relative position biases,
attention, the feed-forward block and the attention masks.

Parameter names and logical axis names are those of `t5x/examples/t5/layers.py`, so a T5X
checkpoint's `target` tree loads as it is and partitioning rules written for T5X apply unchanged
(see dsbs/model/partitioning.py). Numerics follow the T5 papers and HuggingFace's
`T5ForConditionalGeneration`: no 1/sqrt(head_dim) scaling at run time (it lives in the query
initialiser), RMS layer norm without bias, bucketed relative position biases.

Parameters are float32 and boxed with logical axis names (`nn.get_partition_spec` reads them);
computation runs in the layer's `dtype`. Why some layouts and the feed-forward backward pass
are written as they are: docs/performance_notes.md.
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

Array = jax.Array
Initializer = Callable[..., Array]

NEG_INF = -1e10  # large negative bias for masked attention logits (exp underflows to 0 in f32)

default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def constrain(x: Array, axes: tuple[str, ...], rules: Any = None) -> Array:
  """Shards an activation by logical names; a no-op outside a mesh with logical rules."""
  return nn.with_logical_constraint(x, axes, rules=rules)


# ---------------------------------------------------------------------------------------------
# Dense, layer norm, embeddings
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


# ---------------------------------------------------------------------------------------------
# Relative position biases and masks
# ---------------------------------------------------------------------------------------------


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
  """Per-head learned biases over relative-position buckets: rel_embedding ('heads',
  'relpos_buckets')."""
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


def make_attention_mask(query_valid: Array, key_valid: Array,
                        query_segments: Array | None = None,
                        key_segments: Array | None = None) -> Array:
  """[batch, 1, q, k] boolean mask: both positions real and (when packed) in the same segment."""
  mask = jnp.logical_and(query_valid[:, :, None], key_valid[:, None, :])
  if query_segments is not None:
    mask = jnp.logical_and(mask, query_segments[:, :, None] == key_segments[:, None, :])
  return mask[:, None]


def make_decoder_mask(decoder_target_tokens: Array, segment_ids: Array | None = None) -> Array:
  """Causal self-attention mask over non-padding decoder positions (packing aware)."""
  valid = decoder_target_tokens > 0
  mask = make_attention_mask(valid, valid, segment_ids, segment_ids)
  length = decoder_target_tokens.shape[-1]
  causal = jnp.tril(jnp.ones((length, length), bool))
  return jnp.logical_and(mask, causal[None, None])


def additive_mask(mask: Array, bias: Array | None = None, dtype: Any = jnp.float32) -> Array:
  """`bias` where `mask` holds and NEG_INF elsewhere: a boolean mask folded into the additive
  attention bias once per stack, so that each layer adds one array to its logits instead of
  adding the bias and then selecting."""
  base = jnp.zeros((), dtype) if bias is None else bias.astype(dtype)
  return jnp.where(mask, base, jnp.asarray(NEG_INF, dtype))


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------

# Array layouts of keys and values for the attention dots: [batch, length, heads, head_dim]
# as projected; [batch, heads, head_dim, length] keys and [batch, heads, length, head_dim]
# values as cached for decoding (the operand layouts the per-step dots read).
_PROJECTED, _CACHED_KEY, _CACHED_VALUE = "bkhd", "bhdk", "bhkd"


class MultiHeadDotProductAttention(nn.Module):
  """T5 attention: no logit scaling at run time; `decode=True` runs one step on a KV cache.

  The query batch may be a multiple g of the key batch: the g queries of a key row (e.g. the
  beams of one input) then attend to its keys and values together, in one matmul.

  Decoding cache ('cache' collection), the contract the decoders in dsbs.decoding rely on:
  `cached_key` [rows, heads, head_dim, columns], `cached_value` [rows, heads, columns,
  head_dim] and `cache_index` (the number of steps taken). The first decode=True call sizes
  it for the decoder batch and the bias table's length; later calls write one position per
  sequence. A cache row may hold g sequences (the decoder batch is g times the cache rows; the
  decoders regroup the cache so): position p of the row's j-th sequence lives in column
  p * g + j. A step's `mask` [rows, 1, g, columns] says which columns each sequence reads;
  without one, each reads its own positions so far.
  """
  num_heads: int
  head_dim: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0
  float32_logits: bool = True
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, mask: Array | None = None,
               bias: Array | None = None, *, decode: bool = False,
               deterministic: bool = True) -> Array:
    query = self._project("query", inputs_q)
    if decode:
      key, value, mask, bias, layouts = self._decode_keys_values(query, inputs_kv, mask, bias)
    else:
      key, value = self._project("key", inputs_kv), self._project("value", inputs_kv)
      layouts = (_PROJECTED, _PROJECTED)
    out = self._attend(query, key, value, mask, bias, layouts, deterministic)
    out = constrain(out, ("batch", "length", "heads", "kv"))
    return DenseGeneral(features=inputs_q.shape[-1], axis=(-2, -1),
                        kernel_axes=("joined_kv", "embed"), kernel_init=self.kernel_init,
                        dtype=self.dtype, name="out")(out)

  def _project(self, name: str, inputs: Array) -> Array:
    """[batch, length, heads, head_dim]; the query kernel carries T5's 1/sqrt(head_dim)."""
    if name == "query":
      depth_scaling = jnp.sqrt(self.head_dim).astype(jnp.float32)

      def init(*args):
        return self.kernel_init(*args) / depth_scaling
    else:
      init = self.kernel_init
    out = DenseGeneral(features=(self.num_heads, self.head_dim), axis=-1,
                       kernel_axes=("embed", "joined_kv"), dtype=self.dtype, kernel_init=init,
                       name=name)(inputs)
    return constrain(out, ("batch", "length", "heads", "kv"))

  def _decode_keys_values(self, query: Array, inputs_kv: Array, mask: Array | None,
                          bias: Array | None) -> tuple[Array, Array, Any, Any, tuple[str, str]]:
    """Self-attention on the KV cache: writes this step's keys/values, returns the whole cache
    with the step's mask and bias (see the class docstring)."""
    key, value = self._project("key", inputs_kv), self._project("value", inputs_kv)
    is_initialized = self.has_variable("cache", "cached_key")
    batch, _, heads, head_dim = key.shape
    max_len = bias.shape[-1] if bias is not None else key.shape[1]
    cached_key = self.variable("cache", "cached_key", jnp.zeros,
                               (batch, heads, head_dim, max_len), key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros,
                                 (batch, heads, max_len, head_dim), value.dtype)
    cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not is_initialized:  # sizing call: its outputs are discarded, keep shapes consistent
      if bias is not None:
        bias = bias[:, :, :query.shape[1], :key.shape[1]]
      return key, value, mask, bias, (_PROJECTED, _PROJECTED)

    rows, _, columns, _ = cached_value.value.shape
    groups = batch // rows
    if groups * rows != batch or columns % groups or (heads, head_dim) != (
        cached_value.value.shape[1], cached_value.value.shape[3]):
      raise ValueError(f"KV cache {cached_value.value.shape} does not fit step {key.shape}")
    if query.shape[1] != 1:
      raise ValueError(f"decode=True expects one new token per step, got {query.shape[1]}")
    cur = cache_index.value
    new_key = key.reshape(rows, groups, heads, head_dim).transpose(0, 2, 3, 1)
    new_value = value.reshape(rows, groups, heads, head_dim).transpose(0, 2, 1, 3)
    cached_key.value = lax.dynamic_update_slice(cached_key.value, new_key, (0, 0, 0, cur * groups))
    cached_value.value = lax.dynamic_update_slice(cached_value.value, new_value,
                                                  (0, 0, cur * groups, 0))
    cache_index.value = cur + 1
    if mask is None:  # each sequence reads its own positions up to this one
      column = jnp.arange(columns)
      visible = jnp.logical_and(column // groups <= cur,
                                column % groups == jnp.arange(groups)[:, None])
      mask = jnp.broadcast_to(visible[None, None], (rows, 1, groups, columns))
    if bias is not None:
      if bias.shape[-2] > 1:  # a full table: take the current row
        bias = lax.dynamic_slice_in_dim(bias, cur, 1, axis=-2)
      if groups > 1:  # one bias per position, for each of its g columns
        bias = jnp.repeat(bias, groups, axis=-1)
    return cached_key.value, cached_value.value, mask, bias, (_CACHED_KEY, _CACHED_VALUE)

  def _attend(self, query: Array, key: Array, value: Array, mask: Array | None,
              bias: Array | None, layouts: tuple[str, str], deterministic: bool) -> Array:
    """softmax(q k + bias, masked) v -> [query batch, q, heads, head_dim]."""
    k_spec, v_spec = layouts
    if self.float32_logits:
      query, key = query.astype(jnp.float32), key.astype(jnp.float32)
    query_batch, query_len = query.shape[0], query.shape[1]
    groups = query_batch // key.shape[0]
    if groups * key.shape[0] != query_batch:
      raise ValueError(f"query batch {query_batch} is not a multiple of the key batch "
                       f"{key.shape[0]}")
    if groups > 1:  # [rows * g, q, h, d] -> [rows, g * q, h, d]: one matmul per key row
      query = query.reshape((key.shape[0], groups * query_len) + query.shape[2:])
    logits = jnp.einsum(f"bqhd,{k_spec}->bhqk", query, key)
    if bias is not None:
      logits = logits + bias.astype(logits.dtype)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.asarray(NEG_INF, logits.dtype))
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    if not deterministic and self.dropout_rate > 0.0:
      weights = nn.Dropout(rate=self.dropout_rate)(weights, deterministic=False)
    value = value.astype(self.dtype)
    if groups == 1:
      return jnp.einsum(f"bhqk,{v_spec}->bqhd", weights, value)
    out = jnp.einsum(f"bhqk,{v_spec}->bhqd", weights, value)  # heads-major, then regroup
    return out.transpose(0, 2, 1, 3).reshape(query_batch, query_len, self.num_heads, -1)


class EncoderDecoderAttention(MultiHeadDotProductAttention):
  """Attention from the decoder to the encoder outputs. With `decode=True` the keys and values
  of the (fixed) encoder outputs are projected once, on the first call, and read from the
  cache ('cross_key' [rows, heads, head_dim, length], 'cross_value' [rows, heads, length,
  head_dim]) at every later step."""

  def _decode_keys_values(self, query: Array, inputs_kv: Array, mask: Array | None,
                          bias: Array | None) -> tuple[Array, Array, Any, Any, tuple[str, str]]:
    del query
    if self.has_variable("cache", "cross_key"):
      key, value = self.get_variable("cache", "cross_key"), self.get_variable("cache",
                                                                               "cross_value")
      return key, value, mask, bias, (_CACHED_KEY, _CACHED_VALUE)
    key, value = self._project("key", inputs_kv), self._project("value", inputs_kv)
    self.put_variable("cache", "cross_key", key.transpose(0, 2, 3, 1))
    self.put_variable("cache", "cross_value", value.transpose(0, 2, 1, 3))
    return key, value, mask, bias, (_PROJECTED, _PROJECTED)


# ---------------------------------------------------------------------------------------------
# Feed-forward block
# ---------------------------------------------------------------------------------------------

_GELU_C = math.sqrt(2.0 / math.pi)


def _gelu_tanh_and_grad(x: Array) -> tuple[Array, Array]:
  """tanh-approximated GELU and its derivative, from one tanh."""
  inner = _GELU_C * (x + 0.044715 * x * x * x)
  t = jnp.tanh(inner)
  gelu = 0.5 * x * (1.0 + t)
  grad = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * x * x)
  return gelu, grad


def _gelu_exact_and_grad(x: Array) -> tuple[Array, Array]:
  cdf = 0.5 * (1.0 + lax.erf(x / np.sqrt(2.0).astype(x.dtype)))
  return x * cdf, cdf + x * jnp.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi).astype(x.dtype)


def _silu_and_grad(x: Array) -> tuple[Array, Array]:
  s = jax.nn.sigmoid(x)
  return x * s, s * (1.0 + x * (1.0 - s))


# name -> (activation as the forward pass computes it, (activation, derivative) for backward)
ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Callable[[Array], tuple[Array, Array]]]] = {
    "relu": (nn.relu, lambda x: (nn.relu(x), (x > 0).astype(x.dtype))),
    "gelu": (functools.partial(nn.gelu, approximate=True), _gelu_tanh_and_grad),
    "gelu_exact": (functools.partial(nn.gelu, approximate=False), _gelu_exact_and_grad),
    "silu": (nn.silu, _silu_and_grad),
    "linear": (lambda x: x, None),
}

_HIDDEN_AXES = ("batch", "length", "mlp")


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def mlp(activations: tuple[str, ...], keep_prob: float, rules: Any, x: Array,
        wi: tuple[Array, ...], wo: Array, keep: Array | None) -> Array:
  """prod_i act_i(x @ wi[i]), dropped out by `keep`, then @ wo, over the last axis of x.

  `keep`: None, or the boolean dropout mask broadcastable to the hidden activations [..., mlp]
  (kept values are divided by `keep_prob`). The hidden activations are sharded as
  ('batch', 'length', 'mlp') under `rules`. The backward pass is written by hand: it keeps only
  the pre-activations (less memory than autodiff) and forms the weight gradients from the
  [tokens, mlp] activation gradients in their natural layout (docs/performance_notes.md).
  """
  return _mlp_fwd(activations, keep_prob, rules, x, wi, wo, keep)[0]


def _dropout_and_constrain(hidden: Array, lead: tuple[int, ...], keep: Array | None,
                           keep_prob: float, rules: Any) -> Array:
  """[tokens, mlp] -> dropout and sharding constraint on [*lead, mlp] -> [tokens, mlp]."""
  hidden = hidden.reshape(lead + hidden.shape[-1:])
  if keep is not None:
    hidden = lax.select(jnp.broadcast_to(keep, hidden.shape), hidden / keep_prob,
                        jnp.zeros_like(hidden))
  if len(lead) == 2:
    hidden = constrain(hidden, _HIDDEN_AXES, rules)
  return hidden.reshape(-1, hidden.shape[-1])


def _mlp_fwd(activations, keep_prob, rules, x, wi, wo, keep):
  x2 = x.reshape(-1, x.shape[-1])
  pre = [x2 @ w for w in wi]
  hidden = None
  for name, h in zip(activations, pre):
    h = ACTIVATIONS[name][0](h)
    hidden = h if hidden is None else hidden * h
  hidden = _dropout_and_constrain(hidden, x.shape[:-1], keep, keep_prob, rules)
  y = hidden @ wo
  return y.reshape(x.shape[:-1] + (wo.shape[-1],)), (x2, pre, wi, wo, keep)


def _mlp_bwd(activations, keep_prob, rules, res, dy):
  x2, pre, wi, wo, keep = res
  lead = dy.shape[:-1]
  dy2 = dy.reshape(-1, dy.shape[-1])
  acts, grads = [], []
  for name, h in zip(activations, pre):
    act_and_grad = ACTIVATIONS[name][1]
    act, grad = (h, None) if act_and_grad is None else act_and_grad(h)
    acts.append(act)
    grads.append(grad)
  hidden = None
  for act in acts:
    hidden = act if hidden is None else hidden * act
  hidden = _dropout_and_constrain(hidden, lead, keep, keep_prob, rules)
  dhidden = _dropout_and_constrain(dy2 @ wo.T, lead, keep, keep_prob, rules)
  # Weight gradients as (d_hidden^T @ x)^T: the [tokens, mlp] gradients are read in their
  # natural layout; only the small [mlp, embed] results are transposed.
  contract = (((0,), (0,)), ((), ()))
  dwo = lax.dot_general(hidden, dy2, contract)
  dx, dwi = None, []
  for i, w in enumerate(wi):
    dh = dhidden
    for j, act in enumerate(acts):
      if j != i:
        dh = dh * act
    if grads[i] is not None:
      dh = dh * grads[i]
    dwi.append(lax.dot_general(dh, x2, contract).T)
    dx = dh @ w.T if dx is None else dx + dh @ w.T
  dkeep = None if keep is None else np.zeros(keep.shape, jax.dtypes.float0)
  return dx.reshape(lead + (x2.shape[-1],)), tuple(dwi), dwo, dkeep


mlp.defvjp(_mlp_fwd, _mlp_bwd)


class _Kernel(nn.Module):
  """One float32 `kernel` parameter under its own scope: DenseGeneral's parameter path."""
  shape: tuple[int, ...]
  axes: tuple[str, str]
  init: Initializer

  @nn.compact
  def __call__(self) -> Array:
    return self.param("kernel", nn.with_logical_partitioning(self.init, self.axes), self.shape,
                      jnp.float32)


class MlpBlock(nn.Module):
  """Feed-forward block: prod_i act_i(x @ wi_i) -> dropout -> wo (T5 1.1's gated GELU is
  ('gelu', 'linear'); one activation names its kernel `wi`). Dropout keeps one mask per
  sequence position-wise broadcast, as T5X's."""
  intermediate_dim: int
  activations: Sequence[str] = ("relu",)
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, inputs: Array, deterministic: bool = True) -> Array:
    embed, activations = inputs.shape[-1], tuple(self.activations)
    names = ["wi"] if len(activations) == 1 else [f"wi_{i}" for i in range(len(activations))]
    wi = tuple(jnp.asarray(_Kernel((embed, self.intermediate_dim), ("embed", "mlp"),
                                   self.kernel_init, name=n)(), self.dtype) for n in names)
    wo = _Kernel((self.intermediate_dim, embed), ("mlp", "embed"), self.kernel_init, name="wo")()
    keep, keep_prob = None, 1.0 - self.dropout_rate
    if not deterministic and self.dropout_rate > 0.0:
      # one draw per (sequence, mlp unit), shared along the length axis (broadcast_dims=(-2,))
      shape = inputs.shape[:-2] + (1, self.intermediate_dim)
      keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, shape)
    rules = tuple(tuple(rule) for rule in nn.get_logical_axis_rules())  # static: hashable
    return mlp(activations, keep_prob, rules,
               jnp.asarray(inputs, self.dtype), wi, jnp.asarray(wo, self.dtype), keep)

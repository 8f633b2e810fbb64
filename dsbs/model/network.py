"""The T5 encoder-decoder, in the shape of T5X's `t5x/examples/t5/network.py`: encoder and
decoder layers, the two stacks and the `Transformer` with T5X's `encode` / `decode` / `__call__`.

Relative position biases are shared by all layers of a stack; the tied logits of the original
T5 are scaled by emb_dim**-0.5; logits are float32. `scan_layers` stacks the layers' parameters
along a leading 'layers' axis (as T5X's scalable_t5), `remat_policy` rematerialises them.

What a decoder needs from the network: `Transformer.encode`, `Transformer.decode(...,
decode=True)` (one step on the KV cache of dsbs/model/layers.py) and `float32_params`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from dsbs.model.config import T5Config
from dsbs.model.layers import (DenseGeneral, Embed, EncoderDecoderAttention, LayerNorm, MlpBlock,
                               MultiHeadDotProductAttention, RelativePositionBiases,
                               additive_mask, constrain, make_attention_mask, make_decoder_mask)

Array = jax.Array


def _remat(layer_cls: type[nn.Module], policy: str | None) -> type[nn.Module]:
  if policy in (None, "none"):
    return layer_cls
  jax_policy = {
      "full": None,
      "minimal": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
      "dots_saveable": jax.checkpoint_policies.dots_saveable,
  }[policy]
  return nn.remat(layer_cls, policy=jax_policy, prevent_cse=False)


def _scanned(cls: type[nn.Module], policy: str | None, num_layers: int,
             num_broadcast: int) -> type[nn.Module]:
  """Stacks `num_layers` copies of `cls` along a leading 'layers' parameter axis (as T5X's
  scalable_t5: params `encoder/layers/attention/query/kernel` of shape [layers, ...])."""
  return nn.scan(_remat(cls, policy), variable_axes={"params": 0, "cache": 0},
                 split_rngs={"params": True, "dropout": True},
                 in_axes=(nn.broadcast,) * num_broadcast, length=num_layers,
                 metadata_params={nn.PARTITION_NAME: "layers"})


def _dropout(cfg: T5Config) -> nn.Dropout:
  return nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))


def _residual(cfg: T5Config, deterministic: bool, y: Array, inputs: Array) -> Array:
  """dropout(y) + inputs, sharded as ('batch', 'length', 'embed')."""
  return constrain(_dropout(cfg)(y, deterministic=deterministic) + inputs,
                   ("batch", "length", "embed"))


def _mlp_sublayer(cfg: T5Config, deterministic: bool, inputs: Array) -> Array:
  """Pre-norm feed-forward block with its residual (the last sublayer of every layer)."""
  dtype = jnp.dtype(cfg.dtype)
  y = LayerNorm(cfg.layer_norm_epsilon, dtype, name="pre_mlp_layer_norm")(inputs)
  y = MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dropout_rate, dtype, name="mlp")(
      y, deterministic)
  return _residual(cfg, deterministic, y, inputs)


def _attention_args(cfg: T5Config) -> tuple[Any, ...]:
  return (cfg.num_heads, cfg.head_dim, jnp.dtype(cfg.dtype), cfg.dropout_rate,
          cfg.float32_attention_logits)


class EncoderLayer(nn.Module):
  """Pre-norm self-attention + MLP block with residuals."""
  config: T5Config
  deterministic: bool = True
  scanned: bool = False  # under nn.scan: return (carry, None)

  @nn.compact
  def __call__(self, inputs: Array, mask: Array | None, bias: Array) -> Array | tuple[Array, None]:
    cfg, det = self.config, self.deterministic
    x = LayerNorm(cfg.layer_norm_epsilon, jnp.dtype(cfg.dtype), name="pre_attention_layer_norm")(
        inputs)
    x = MultiHeadDotProductAttention(*_attention_args(cfg), name="attention")(
        x, x, mask, bias, deterministic=det)
    y = _mlp_sublayer(cfg, det, _residual(cfg, det, x, inputs))
    return (y, None) if self.scanned else y


class DecoderLayer(nn.Module):
  """Pre-norm causal self-attention, encoder-decoder attention and MLP, with residuals."""
  config: T5Config
  deterministic: bool = True
  decode: bool = False
  scanned: bool = False  # under nn.scan: return (carry, None)

  @nn.compact
  def __call__(self, inputs: Array, encoded: Array, self_mask: Array | None,
               cross_mask: Array | None, bias: Array,
               cross_bias: Array | None = None) -> Array | tuple[Array, None]:
    cfg, det = self.config, self.deterministic
    dtype = jnp.dtype(cfg.dtype)
    x = LayerNorm(cfg.layer_norm_epsilon, dtype, name="pre_self_attention_layer_norm")(inputs)
    x = MultiHeadDotProductAttention(*_attention_args(cfg), name="self_attention")(
        x, x, self_mask, bias, decode=self.decode, deterministic=det)
    x = _residual(cfg, det, x, inputs)
    y = LayerNorm(cfg.layer_norm_epsilon, dtype, name="pre_cross_attention_layer_norm")(x)
    y = EncoderDecoderAttention(*_attention_args(cfg), name="encoder_decoder_attention")(
        y, encoded, cross_mask, cross_bias, decode=self.decode, deterministic=det)
    z = _mlp_sublayer(cfg, det, _residual(cfg, det, y, x))
    return (z, None) if self.scanned else z


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
    x = _dropout(cfg)(x, deterministic=deterministic)
    x = constrain(x.astype(dtype), ("batch", "length", "embed"))
    if cfg.scan_layers:
      stack = _scanned(EncoderLayer, cfg.remat_policy, cfg.num_encoder_layers, 2)
      x, _ = stack(cfg, deterministic, scanned=True, name="layers")(x, mask, bias)
    else:
      layer_cls = _remat(EncoderLayer, cfg.remat_policy)
      for i in range(cfg.num_encoder_layers):
        x = layer_cls(cfg, deterministic, name=f"layers_{i}")(x, mask, bias)
    x = LayerNorm(cfg.layer_norm_epsilon, dtype, name="encoder_norm")(x)
    return _dropout(cfg)(x, deterministic=deterministic)


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
    if decode and self.has_variable("cache", "position"):
      # one step on the cache: only the bias row of the current position
      position = self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
      bias = relpos(length, length, False, query_rows=position.value[None])
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
    y = _dropout(cfg)(y, deterministic=deterministic)
    y = constrain(y.astype(dtype), ("batch", "length", "embed"))
    if cfg.scan_layers:
      stack = _scanned(DecoderLayer, cfg.remat_policy, cfg.num_decoder_layers, 5)
      y, _ = stack(cfg, deterministic, decode, scanned=True, name="layers")(
          y, encoded, self_mask, cross_mask, bias, cross_bias)
    else:
      layer_cls = _remat(DecoderLayer, cfg.remat_policy)
      for i in range(cfg.num_decoder_layers):
        y = layer_cls(cfg, deterministic, decode, name=f"layers_{i}")(
            y, encoded, self_mask, cross_mask, bias, cross_bias)
    y = LayerNorm(cfg.layer_norm_epsilon, dtype, name="decoder_norm")(y)
    y = _dropout(cfg)(y, deterministic=deterministic)
    if cfg.logits_via_embedding:
      logits = self.shared_embedding.attend(y) / jnp.sqrt(jnp.float32(y.shape[-1]))
    else:
      logits = DenseGeneral(cfg.vocab_size, kernel_axes=("embed", "vocab"), dtype=jnp.float32,
                            name="logits_dense")(y)
    return constrain(logits, ("batch", "length", "vocab"))


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
             max_decode_length: int | None = None, *,
             decoder_mask: Array | None = None) -> Array:
    """Decoder logits [batch, len, vocab] in float32; with decode=True, one step on the cache.

    The first decode=True call (no 'cache' yet, any decoder length, `max_decode_length` set)
    creates the cache and projects the encoder-decoder keys/values of `encoded` into it once;
    pass the real encodings there, not placeholders. The decoder batch may be a multiple of
    the encoder batch (several sequences per input, input-major: they share its encodings).
    `decoder_mask` (decode=True only): which self-attention cache columns each sequence reads
    (see layers.MultiHeadDotProductAttention); None: its own positions so far.
    """
    del decoder_positions  # relative position biases need none
    enc_valid = encoder_input_tokens > 0
    if decode:
      self_mask = decoder_mask
      # [inputs, 1, 1, in_len]: also right when the decoder batch holds g sequences per input
      cross_mask = enc_valid[:, None, None, :]
    elif decoder_mask is not None:
      raise ValueError("decoder_mask is for decode=True steps; teacher-forced masks come from "
                       "decoder_target_tokens and decoder_segment_ids")
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


def float32_params(config: T5Config) -> tuple[tuple[str, ...], ...]:
  """Paths of the parameters the network reads in float32 (the logits weights: the head, or
  the embedding when tied); it reads every other floating parameter in `config.dtype`."""
  if config.logits_via_embedding:
    return (("token_embedder", "embedding"),)
  return (("decoder", "logits_dense", "kernel"),)


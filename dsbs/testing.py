"""Tiny models and fakes for tests (importable by every engineer's tests).

`tiny_config()` is a ~230K-parameter T5 1.1; `tiny_params()` initialises it; `make_hf_t5()`
writes a random HuggingFace T5 (via transformers' PyTorch classes, imported lazily) that the
parity tests load into our tree.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from flax import linen as nn

from dsbs.model.config import T5Config, get_config
from dsbs.model.network import Transformer, init_params


def tiny_config(**overrides: Any) -> T5Config:
  """The `test_tiny` registered config (float32) with overrides."""
  return get_config("test_tiny", **overrides)


def tiny_params(config: T5Config | None = None, seed: int = 0) -> Any:
  """Unboxed random parameters of `config` (default `tiny_config()`)."""
  init = jax.jit(init_params, static_argnums=0)  # one compile, not op-by-op dispatch
  return nn.unbox(init(config or tiny_config(), jax.random.PRNGKey(seed)))


def random_batch(config: T5Config, batch: int = 3, input_len: int = 12, target_len: int = 7,
                 seed: int = 0) -> dict[str, np.ndarray]:
  """Random token batch with right padding of different lengths (pad = 0, EOS = 1)."""
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, config.vocab_size, (batch, input_len))
  tgt = rng.integers(2, config.vocab_size, (batch, target_len))
  for b in range(batch):
    n_in = input_len - (b * 3) % max(input_len // 2, 1)
    n_tg = target_len - b % max(target_len // 2, 1)
    enc[b, n_in - 1], enc[b, n_in:] = 1, 0
    tgt[b, n_tg - 1], tgt[b, n_tg:] = 1, 0
  dec_in = np.concatenate([np.zeros((batch, 1), tgt.dtype), tgt[:, :-1]], axis=1)
  return {"encoder_input_tokens": enc.astype(np.int32), "decoder_input_tokens": dec_in.astype(np.int32),
          "decoder_target_tokens": tgt.astype(np.int32)}


def make_hf_t5(out_dir: str, variant: str = "t5_1_1", seed: int = 0, vocab_size: int = 96,
               d_model: int = 32, num_heads: int = 4, d_kv: int = 8, d_ff: int = 48,
               num_layers: int = 2, num_decoder_layers: int = 3) -> str:
  """Saves a random transformers T5ForConditionalGeneration to `out_dir`; returns it.

  variant 't5_1_1': gated-GELU, untied output head (lm_head given its own random weights:
  transformers 5 ties T5's head whatever the config says, so it is untied by hand);
  variant 't5': ReLU, head tied to the embedding and scaled by d_model**-0.5.
  """
  # PyTorch and transformers are optional (the `hf` extra) and heavy: the parity tests only
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  if variant not in ("t5_1_1", "t5"):
    raise ValueError(f"variant must be 't5_1_1' or 't5', got {variant!r}")
  untied = variant == "t5_1_1"
  torch.manual_seed(seed)
  cfg = transformers.T5Config(
      vocab_size=vocab_size, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=num_layers,
      num_decoder_layers=num_decoder_layers, num_heads=num_heads,
      relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
      feed_forward_proj="gated-gelu" if untied else "relu", tie_word_embeddings=not untied,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  model = transformers.T5ForConditionalGeneration(cfg).eval()
  with torch.no_grad():  # default init is tiny for some tensors: make every weight matter
    for p in model.parameters():
      p.normal_(0.0, 0.3)
    if untied:
      model.lm_head.weight = torch.nn.Parameter(torch.randn(vocab_size, d_model) * 0.3)
      model.config.tie_word_embeddings = False
  os.makedirs(out_dir, exist_ok=True)
  model.save_pretrained(out_dir, safe_serialization=True)
  return out_dir


def forward_fn(config: T5Config, enable_dropout: bool = False):
  """A jitted teacher-forced forward pass `(params, batch, rngs=None) -> float32 logits`.

  One compile per config instead of op-by-op dispatch: un-jitted linen applies are slow.
  """
  model = Transformer(config)

  @jax.jit
  def fwd(params, batch, rngs=None):
    return model.apply({"params": params}, **batch, enable_dropout=enable_dropout, rngs=rngs)

  return fwd

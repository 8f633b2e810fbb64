"""What every engine runs: the model config of a benchmark setting and its synthetic batches."""
from __future__ import annotations

from typing import Any

import numpy as np

from dsbs import model as model_lib
from dsbs.bench.configs import BenchConfig


def model_config(bc: BenchConfig) -> model_lib.T5Config:
  return model_lib.get_config(bc.model, dtype=bc.dtype, dropout_rate=0.0)


def synthetic_batch(bc: BenchConfig, vocab: int, seed: int = 0) -> dict[str, Any]:
  """A training batch with every position a real token (no padding), loss weight 1 each."""
  rng = np.random.default_rng(seed)
  inputs = rng.integers(2, vocab, (bc.batch, bc.input_len), dtype=np.int32)
  targets = rng.integers(2, vocab, (bc.batch, bc.target_len), dtype=np.int32)
  dec_in = np.concatenate([np.zeros((bc.batch, 1), np.int32), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": inputs, "decoder_input_tokens": dec_in,
          "decoder_target_tokens": targets,
          "decoder_loss_weights": np.ones((bc.batch, bc.target_len), np.float32)}


def decode_inputs(bc: BenchConfig, vocab: int) -> np.ndarray:
  """[decode_batch, decode_input_len] random token ids (no padding) to decode from."""
  rng = np.random.default_rng(1)
  return rng.integers(2, vocab, (bc.decode_batch, bc.decode_input_len), dtype=np.int32)

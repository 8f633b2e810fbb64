"""The benchmark settings: a model, its training batch and its decoding workload."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  """One benchmark setting: the model, the training batch and the decoding workload."""
  model: str  # a dsbs.model registered config
  batch: int
  input_len: int
  target_len: int
  dtype: str  # compute dtype
  decode_batch: int
  decode_input_len: int
  decode_new_tokens: int
  num_beams: int = 4
  train_steps: int = 10  # timed steps (after one compile step)
  decode_reps: int = 3
  rounds: int = 2  # alternations dsbs <-> peers
  input_task: str | None = "arith_dsbs_byte"  # SeqIO task for the input-pipeline rate
  input_batches: int = 50


CONFIGS: dict[str, BenchConfig] = {
    # Seconds on CPU: the benchmark's own test.
    "test_tiny": BenchConfig("test_tiny", batch=4, input_len=16, target_len=8, dtype="float32",
                             decode_batch=2, decode_input_len=16, decode_new_tokens=8,
                             num_beams=2, train_steps=3, decode_reps=2, rounds=1,
                             input_task=None),
    # The CPU reference: T5 1.1, byte vocabulary, t5-small width.
    # Three decodes per engine per round: a shared host's noise moves single calls by 20-30%.
    "bench_small": BenchConfig("bench_small", batch=16, input_len=128, target_len=64,
                               dtype="float32", decode_batch=16, decode_input_len=128,
                               decode_new_tokens=64, train_steps=8, decode_reps=6),
    # Accelerators (bf16 compute, float32 parameters); decoding at batch 1 shows the
    # memory-bandwidth bound.
    "t5_1_1_base": BenchConfig("t5_1_1_base", batch=64, input_len=512, target_len=128,
                               dtype="bfloat16", decode_batch=1, decode_input_len=512,
                               decode_new_tokens=128, train_steps=20, decode_reps=5),
    "t5_1_1_large": BenchConfig("t5_1_1_large", batch=32, input_len=512, target_len=128,
                                dtype="bfloat16", decode_batch=1, decode_input_len=512,
                                decode_new_tokens=128, train_steps=20, decode_reps=5),
}

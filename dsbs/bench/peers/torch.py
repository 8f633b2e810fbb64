"""The PyTorch peer: transformers' T5ForConditionalGeneration with the same shapes, its
Adafactor and `generate`, in the benchmark's process (imported only when asked for)."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
import torch
import transformers
from transformers.optimization import Adafactor

from dsbs.bench import workload
from dsbs.bench.configs import BenchConfig
from dsbs.bench.peers import PeerUnavailable


def torch_device(torch_module: Any) -> str:
  """The PyTorch device on the hardware JAX uses: 'cpu' on CPU, 'cuda' on a GPU; a peer on
  other hardware (a CPU-only torch beside a GPU, or a TPU) would not be a side-by-side run."""
  backend = jax.default_backend()
  if backend == "cpu":
    return "cpu"
  if backend == "gpu" and torch_module.cuda.is_available():
    return "cuda"
  raise PeerUnavailable(f"PyTorch {torch_module.__version__} cannot run on this {backend} "
                        f"(cuda available: {torch_module.cuda.is_available()})")


class Peer:
  """transformers' T5ForConditionalGeneration with the same shapes; its Adafactor and generate."""

  def __init__(self, bc: BenchConfig):
    m = workload.model_config(bc)
    torch.manual_seed(0)
    hf_cfg = transformers.T5Config(
        vocab_size=m.vocab_size, d_model=m.emb_dim, d_kv=m.head_dim, d_ff=m.mlp_dim,
        num_layers=m.num_encoder_layers, num_decoder_layers=m.num_decoder_layers,
        num_heads=m.num_heads, relative_attention_num_buckets=m.relative_attention_num_buckets,
        relative_attention_max_distance=m.relative_attention_max_distance, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[bc.dtype]
    self.device = torch_device(torch)
    model = transformers.T5ForConditionalGeneration(hf_cfg)
    # transformers 5 ties T5's head whatever the config says; T5 1.1 has its own.
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    model.config.tie_word_embeddings = False
    self.model = model.to(self.device, dtype)
    self.opt = Adafactor(self.model.parameters(), lr=1e-3, scale_parameter=False,
                         relative_step=False, warmup_init=False)
    b = workload.synthetic_batch(bc, m.vocab_size)
    self.inputs = self._tensor(b["encoder_input_tokens"])
    self.labels = self._tensor(b["decoder_target_tokens"])
    self.dec_inputs = self._tensor(workload.decode_inputs(bc, m.vocab_size))
    self.bc = bc
    self.version = f"torch {torch.__version__}, transformers {transformers.__version__}"
    self.step()  # warm-up, as dsbs's objects compile and run once before timing
    self.run_greedy()
    self.run_beam()

  def _tensor(self, ids: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(ids.astype(np.int64)).to(self.device)

  def _sync(self) -> None:
    if self.device == "cuda":
      torch.cuda.synchronize()

  def step(self) -> None:
    self.model.train()
    loss = self.model(input_ids=self.inputs, labels=self.labels).loss
    loss.backward()
    self.opt.step()
    self.opt.zero_grad(set_to_none=True)
    self._sync()

  def _generate(self, beams: int) -> None:
    self.model.eval()
    with torch.inference_mode():
      out = self.model.generate(self.dec_inputs, max_new_tokens=self.bc.decode_new_tokens,
                                min_new_tokens=self.bc.decode_new_tokens, num_beams=beams,
                                do_sample=False, early_stopping=False)
    self._sync()
    if out.shape[1] != self.bc.decode_new_tokens + 1:  # + the decoder start token
      raise RuntimeError(f"torch generate returned {out.shape[1] - 1} new tokens, expected "
                         f"{self.bc.decode_new_tokens}")

  def run_greedy(self) -> None:
    self._generate(1)

  def run_beam(self) -> None:
    self._generate(self.bc.num_beams)

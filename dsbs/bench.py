r"""Throughput benchmark of the dsbs student: training step, decoding, input pipeline, MFU.

  python -m dsbs.bench --config=bench_small [--json | --markdown] [--peers=torch,t5x]
      [--host_devices=2]

Measures, on the real `dsbs.train.make_train_step` and `dsbs.decoding` functions: training
step time (median over steps after compile), tokens/s and sequences/s, analytic model FLOPs per
step and the utilisation against the device's peak (CPU: a measured float32 matmul peak; GPU /
TPU: the datasheet bf16 peak), the compiled step's memory, input-pipeline throughput, and
greedy and beam decoding throughput (new tokens/s, every sequence decodes exactly
`decode_new_tokens` tokens), each engine's decoding also as a fraction of its roofline floor
(`decode_floor_s`: the peak above and the memory bandwidth, measured on CPU, datasheet HBM on
accelerators).

Peers run the same config in the same process (or, for T5X, a side interpreter, after the
others), alternating with dsbs so that a shared machine's drift hits both, each engine's turn
opening with one untimed step; every engine trains and decodes once before it is timed. The
processes run with `dsbs.hostmem.tune_malloc()`, which the in-process PyTorch peer shares and
the T5X interpreter sets too (`DSBS_MALLOC=system` measures all with glibc's defaults). `torch`
is transformers' PyTorch T5 (its Adafactor, `generate`); `t5x` is T5X's own T5 1.1 network,
model loss, Adafactor and decoding. A peer that cannot be imported is reported unavailable,
never estimated. `--host_devices=N` (CPU only) splits the host into N XLA devices and runs the
step data-parallel over them; it must be decided before jax is imported, so it is a flag of
this entry point.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence


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
    # Seconds on CPU: the bench's own test.
    "tiny": BenchConfig("tiny", batch=4, input_len=16, target_len=8, dtype="float32",
                        decode_batch=2, decode_input_len=16, decode_new_tokens=8, num_beams=2,
                        train_steps=3, decode_reps=2, rounds=1, input_task=None),
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

# Datasheet dense bf16 peaks (FLOP/s) by device_kind substring; first match wins.
_PEAKS = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12),
          ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
          ("TPU v4", 275e12), ("TPU v3", 123e12))
# HBM bandwidth (bytes/s) of one device, for the decoding floor.
_BANDWIDTH = (("H200", 4.8e12), ("H100", 3.35e12), ("A100", 2.0e12), ("TPU v6", 1.64e12),
              ("TPU v5p", 2.76e12), ("TPU v5 lite", 0.82e12), ("TPU v5e", 0.82e12),
              ("TPU v4", 1.2e12))


# ---------------------------------------------------------------------------------------------
# Analytic FLOPs
# ---------------------------------------------------------------------------------------------


def _weights(m: Any) -> dict[str, int]:
  """Matmul weight counts: an encoder layer, a decoder layer's per-step weights (self- and
  cross-attention queries/outputs, MLP), the cross-attention key/value kernels (used once per
  encoder token, not per step) and the logits."""
  hd = m.num_heads * m.head_dim
  ff = m.emb_dim * m.mlp_dim * (len(m.mlp_activations) + 1)
  return {"hd": hd, "enc_layer": 4 * m.emb_dim * hd + ff,
          "dec_layer_step": 6 * m.emb_dim * hd + ff, "cross_kv": 2 * m.emb_dim * hd,
          "logits": m.emb_dim * m.vocab_size}


def forward_flops(m: Any, batch: int, in_len: int, tgt_len: int) -> float:
  """Matmul FLOPs of one teacher-forced forward pass (2 per multiply-add; attention in full).

  Counts projections, attention scores and values, the feed-forward and the logits; causal
  attention is counted over the whole square, as it is computed.
  """
  w = _weights(m)
  enc_tok = 2 * w["enc_layer"] + 2 * 2 * in_len * w["hd"]
  dec_tok = 2 * w["dec_layer_step"] + 2 * 2 * (tgt_len + in_len) * w["hd"]
  return float(batch * (in_len * enc_tok * m.num_encoder_layers
                        + tgt_len * dec_tok * m.num_decoder_layers
                        + in_len * 2 * w["cross_kv"] * m.num_decoder_layers
                        + tgt_len * 2 * w["logits"]))


def train_flops(m: Any, batch: int, in_len: int, tgt_len: int) -> float:
  """Forward + backward (twice the forward) matmul FLOPs of one training step."""
  return 3.0 * forward_flops(m, batch, in_len, tgt_len)


def decode_floor_s(m: Any, batch: int, in_len: int, new_tokens: int, beams: int,
                   peak_flops: float, bytes_per_s: float) -> float:
  """Roofline floor, in seconds, of one decoding call: a lower bound on its time at `peak_flops`
  and `bytes_per_s`.

  The encoder pass and the cross-attention key/value projection, then one step per new token,
  each taking max(matmul FLOPs / peak, bytes / memory bandwidth). A step reads every decoder
  weight it uses in the compute dtype (the logits kernel in float32, as the model keeps it),
  the cross-attention keys/values once per input (beams share them) and the self-attention
  keys/values of the positions so far for each of the `batch * beams` sequences; the encoder
  pass reads its weights once. Activations, norms and softmaxes are left out (they only lower
  the floor), and so are beam search's top-k and reordering.
  """
  w = _weights(m)
  size = 2 if m.dtype in ("bfloat16", "float16") else 4
  rows = batch * beams
  enc_flops = batch * in_len * (m.num_encoder_layers * (2 * w["enc_layer"] + 4 * in_len * w["hd"])
                                + m.num_decoder_layers * 2 * w["cross_kv"])
  enc_bytes = size * (m.num_encoder_layers * w["enc_layer"] + m.num_decoder_layers * w["cross_kv"])
  total = max(enc_flops / peak_flops, enc_bytes / bytes_per_s)
  weight_bytes = size * m.num_decoder_layers * w["dec_layer_step"] + 4 * w["logits"]
  cross_bytes = size * m.num_decoder_layers * 2 * batch * in_len * w["hd"]
  for pos in range(1, new_tokens + 1):
    flops = rows * (m.num_decoder_layers * (2 * w["dec_layer_step"] + 4 * (in_len + pos) * w["hd"])
                    + 2 * w["logits"])
    self_bytes = size * m.num_decoder_layers * 2 * rows * pos * w["hd"]
    total += max(flops / peak_flops, (weight_bytes + cross_bytes + self_bytes) / bytes_per_s)
  return total


# ---------------------------------------------------------------------------------------------
# Device facts
# ---------------------------------------------------------------------------------------------


def median_time(fn: Callable[[], Any], reps: int) -> float:
  """Median wall seconds of `reps` calls of `fn` (also used by the T5X peer script)."""
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def measured_matmul_peak(n: int = 2048, reps: int = 5) -> dict[str, float]:
  """float32 matmul FLOP/s on this host, best of `reps`, by XLA, NumPy's BLAS and PyTorch.

  The best repetition, not the median: on a shared host it is the closest to the hardware.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  a = np.random.default_rng(0).standard_normal((n, n), np.float32)
  dot = jax.jit(jnp.dot)
  x = jax.device_put(a, jax.devices()[0])
  dot(x, x).block_until_ready()
  xla = 2 * n**3 / _min_time(lambda: dot(x, x).block_until_ready(), reps)
  np.dot(a, a)
  out = {"xla": xla, "numpy": 2 * n**3 / _min_time(lambda: np.dot(a, a), reps)}
  try:  # PyTorch's CPU GEMM (oneDNN / MKL) is the fastest on some hosts; the peak is the best
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return out
  t = torch.from_numpy(a)
  torch.mm(t, t)
  out["torch"] = 2 * n**3 / _min_time(lambda: torch.mm(t, t), reps)
  # One thread times the cores: on a host shared with other jobs a one-thread GEMM still gets
  # a whole core, where a many-thread one waits on its slowest thread.
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    out["torch_1thread_x_cores"] = (2 * n**3 / _min_time(lambda: torch.mm(t, t), reps)
                                    * (os.cpu_count() or 1))
  finally:
    torch.set_num_threads(threads)
  return out


def measured_memory_bandwidth(mib: int = 512, reps: int = 10) -> float:
  """Bytes/s at which XLA reads a `mib` MiB float32 buffer (a sum; the buffer is many times a
  CPU's last-level cache), best of `reps`: the host's streaming-read bandwidth."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = jnp.ones((mib * 2**18,), jnp.float32)
  total = jax.jit(jnp.sum)
  total(x).block_until_ready()
  return x.nbytes / _min_time(lambda: total(x).block_until_ready(), reps)


def _min_time(fn: Callable[[], Any], reps: int) -> float:
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times)


def _lookup(table: Sequence[tuple[str, float]], kind: str) -> float | None:
  for key, value in table:
    if key.lower() in kind.lower():
      return value
  return None


def device_facts() -> dict[str, Any]:
  """The backend, device kind, count and peak FLOP/s used for MFU (with its source)."""
  import jax  # pylint: disable=g-import-not-at-top
  dev = jax.devices()[0]
  facts = {"backend": jax.default_backend(), "device_kind": dev.device_kind,
           "devices": jax.device_count(), "host": platform.node(), "cpu": _cpu_name(),
           "cpu_count": os.cpu_count(), "jax": jax.__version__}
  if facts["backend"] == "cpu":
    peaks = measured_matmul_peak()
    facts.update(peak_flops=max(peaks.values()), peak_source="measured f32 matmul, best of "
                 + "/".join(sorted(peaks)), **{f"peak_flops_{k}": v for k, v in peaks.items()},
                 memory_bytes_per_s=measured_memory_bandwidth(),
                 memory_source="measured XLA streaming read")
  else:
    peak = _lookup(_PEAKS, dev.device_kind)
    bandwidth = _lookup(_BANDWIDTH, dev.device_kind)
    facts.update(peak_flops=None if peak is None else peak * jax.device_count(),
                 peak_source="datasheet bf16 dense" if peak else "unknown device kind",
                 memory_bytes_per_s=bandwidth,
                 memory_source="datasheet HBM" if bandwidth else "unknown device kind")
  return facts


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _log(msg: str) -> None:
  print(f"[dsbs.bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _fmt_list(xs: Sequence[float]) -> str:
  return "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"


def _peak_rss_bytes() -> int:
  import resource  # pylint: disable=g-import-not-at-top
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------------------------------------
# dsbs
# ---------------------------------------------------------------------------------------------


def model_config(bc: BenchConfig) -> Any:
  from dsbs import model as model_lib  # pylint: disable=g-import-not-at-top
  return model_lib.get_config(bc.model, dtype=bc.dtype, dropout_rate=0.0)


def synthetic_batch(bc: BenchConfig, vocab: int, seed: int = 0) -> dict[str, Any]:
  """A training batch with every position a real token (no padding), loss weight 1 each."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  inputs = rng.integers(2, vocab, (bc.batch, bc.input_len), dtype=np.int32)
  targets = rng.integers(2, vocab, (bc.batch, bc.target_len), dtype=np.int32)
  dec_in = np.concatenate([np.zeros((bc.batch, 1), np.int32), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": inputs, "decoder_input_tokens": dec_in,
          "decoder_target_tokens": targets,
          "decoder_loss_weights": np.ones((bc.batch, bc.target_len), np.float32)}


class DsbsTrain:
  """The real dsbs train step on a ('data', 'model') mesh over all devices."""

  def __init__(self, bc: BenchConfig):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from flax import linen as nn  # pylint: disable=g-import-not-at-top
    from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
    from dsbs import optim, train  # pylint: disable=g-import-not-at-top
    from dsbs import model as model_lib  # pylint: disable=g-import-not-at-top
    from dsbs.model import partitioning  # pylint: disable=g-import-not-at-top

    self.cfg = model_config(bc)
    mesh = partitioning.make_mesh(data=-1, model=1)
    rules = partitioning.logical_axis_rules()
    model = model_lib.Transformer(self.cfg)
    tx, schedule = optim.make_optimizer(optim.OptimizerConfig(), 10**6, 1e-3)
    boxed = jax.eval_shape(lambda r: model_lib.init_params(self.cfg, r, 8, 8), jax.random.key(0))
    p_shard = partitioning.param_shardings(boxed, mesh, rules)
    replicated = NamedSharding(mesh, P())
    params = jax.jit(lambda r: nn.unbox(model_lib.init_params(self.cfg, r, 8, 8)),
                     out_shardings=p_shard)(jax.random.key(0))
    opt_state = jax.jit(tx.init, out_shardings=replicated)(params)  # data parallel: whole copies
    self.state = train.TrainState(step=jax.device_put(jnp.asarray(0, jnp.int32), replicated),
                                  params=params, opt_state=opt_state)
    tcfg = train.TrainConfig(z_loss=1e-4)
    self.step_fn = train.make_train_step(model, tx, schedule, tcfg, "tokens", rules)
    batch = synthetic_batch(bc, self.cfg.vocab_size)
    self.batch = {k: jax.device_put(v, partitioning.data_sharding(mesh, v.ndim))
                  for k, v in batch.items()}
    self.rng = jax.random.key(1)
    self.mesh = mesh
    t0 = time.perf_counter()
    lowered = self.step_fn.lower(self.state, self.batch, self.rng)
    self.compiled = lowered.compile()
    self.compile_s = time.perf_counter() - t0
    self.step()  # warm-up run

  def step(self) -> None:
    self.state, metrics = self.compiled(self.state, self.batch, self.rng)
    metrics["loss"].block_until_ready()

  def memory(self) -> dict[str, Any]:
    out = {}
    try:
      ma = self.compiled.memory_analysis()
      out["step_temp_bytes"] = int(ma.temp_size_in_bytes)
      out["step_argument_bytes"] = int(ma.argument_size_in_bytes)
    except Exception:  # pylint: disable=broad-except  (backends without the analysis)
      pass
    import jax  # pylint: disable=g-import-not-at-top
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      out["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
    return out

  def xla_flops(self) -> float | None:
    try:
      ca = self.compiled.cost_analysis()
      ca = ca[0] if isinstance(ca, (list, tuple)) else ca
      return float(ca["flops"])
    except Exception:  # pylint: disable=broad-except
      return None


class DsbsDecode:
  """Jitted greedy and beam decoding of random inputs, exactly `decode_new_tokens` each."""

  def __init__(self, bc: BenchConfig, params: Any = None):
    import functools  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from flax import linen as nn  # pylint: disable=g-import-not-at-top
    from dsbs import decoding  # pylint: disable=g-import-not-at-top
    from dsbs import model as model_lib  # pylint: disable=g-import-not-at-top

    cfg = model_config(bc)
    model = model_lib.Transformer(cfg)
    if params is None:
      params = jax.jit(lambda r: nn.unbox(model_lib.init_params(cfg, r, 8, 8)))(jax.random.key(0))
    dev = jax.devices()[0]
    self.params = jax.device_put(params, dev)
    rng = np.random.default_rng(1)
    self.inputs = jax.device_put(
        rng.integers(2, cfg.vocab_size, (bc.decode_batch, bc.decode_input_len), dtype=np.int32),
        dev)
    # eos_id=-1 never matches: every sequence decodes all new tokens (min = max new tokens).
    self.greedy = decoding.jit(functools.partial(decoding.greedy_decode, model,
                                                 max_decode_len=bc.decode_new_tokens, eos_id=-1))
    self.beam = decoding.jit(functools.partial(decoding.beam_search, model,
                                               max_decode_len=bc.decode_new_tokens,
                                               num_beams=bc.num_beams, eos_id=-1))
    self.greedy(self.params, self.inputs).tokens.block_until_ready()
    self.beam(self.params, self.inputs).tokens.block_until_ready()

  def run_greedy(self) -> None:
    self.greedy(self.params, self.inputs).tokens.block_until_ready()

  def run_beam(self) -> None:
    self.beam(self.params, self.inputs).tokens.block_until_ready()


def input_pipeline_rate(bc: BenchConfig) -> dict[str, Any]:
  """Examples/s of the real SeqIO training pipeline (task -> converter -> batches)."""
  if not bc.input_task:
    return {"input_examples_per_s": None, "input_note": "not measured for this config"}
  try:  # the rest of the benchmark runs without the input pipeline's SeqIO and TensorFlow
    import seqio  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    return {"input_examples_per_s": None, "input_note": f"not measured: {e}"}
  from dsbs import input_pipeline  # pylint: disable=g-import-not-at-top
  import dsbs.tasks  # pylint: disable=g-import-not-at-top,unused-import  (registers tasks)
  conv = input_pipeline.loss_weighting_converter(False, 0.5, "tokens")
  cfg = input_pipeline.InputConfig(bc.input_task, {"inputs": bc.input_len,
                                                   "targets": bc.target_len}, bc.batch, conv)
  it = input_pipeline.train_batches(cfg)
  next(it)  # pipeline construction and first fill
  t0 = time.perf_counter()
  for _ in range(bc.input_batches):
    next(it)
  dt = time.perf_counter() - t0
  return {"input_examples_per_s": bc.batch * bc.input_batches / dt, "input_task": bc.input_task}


# ---------------------------------------------------------------------------------------------
# PyTorch peer (transformers)
# ---------------------------------------------------------------------------------------------


class PeerUnavailable(Exception):
  """A peer that cannot run on the hardware dsbs runs on."""


def torch_device(torch: Any) -> str:
  """The PyTorch device on the hardware JAX uses: 'cpu' on CPU, 'cuda' on a GPU; a peer on
  other hardware (a CPU-only torch beside a GPU, or a TPU) would not be a side-by-side run."""
  import jax  # pylint: disable=g-import-not-at-top
  backend = jax.default_backend()
  if backend == "cpu":
    return "cpu"
  if backend == "gpu" and torch.cuda.is_available():
    return "cuda"
  raise PeerUnavailable(f"PyTorch {torch.__version__} cannot run on this {backend} "
                        f"(cuda available: {torch.cuda.is_available()})")


class TorchPeer:
  """transformers' T5ForConditionalGeneration with the same shapes; its Adafactor and generate."""

  def __init__(self, bc: BenchConfig):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    from transformers.optimization import Adafactor  # pylint: disable=g-import-not-at-top

    m = model_config(bc)
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
    b = synthetic_batch(bc, m.vocab_size)
    self.inputs = torch.from_numpy(b["encoder_input_tokens"].astype(np.int64)).to(self.device)
    self.labels = torch.from_numpy(b["decoder_target_tokens"].astype(np.int64)).to(self.device)
    rng = np.random.default_rng(1)
    self.dec_inputs = torch.from_numpy(rng.integers(
        2, m.vocab_size, (bc.decode_batch, bc.decode_input_len)).astype(np.int64)).to(self.device)
    self.bc = bc
    self.torch = torch
    self.version = f"torch {torch.__version__}, transformers {transformers.__version__}"
    self.step()  # warm-up, as dsbs's objects compile and run once before timing
    self.run_greedy()
    self.run_beam()

  def _sync(self) -> None:
    if self.device == "cuda":
      self.torch.cuda.synchronize()

  def step(self) -> None:
    self.model.train()
    loss = self.model(input_ids=self.inputs, labels=self.labels).loss
    loss.backward()
    self.opt.step()
    self.opt.zero_grad(set_to_none=True)
    self._sync()

  def _generate(self, beams: int) -> None:
    self.model.eval()
    with self.torch.inference_mode():
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


# ---------------------------------------------------------------------------------------------
# T5X peer (side interpreter)
# ---------------------------------------------------------------------------------------------

T5X_PYTHON = os.environ.get("DSBS_T5X_PYTHON", "/work/t5x_venv/bin/python")


def t5x_python() -> str | None:
  """An interpreter that can import t5x: this one, else $DSBS_T5X_PYTHON; None if neither."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec("t5x") is not None:
    return sys.executable
  if os.path.exists(T5X_PYTHON):
    ok = subprocess.run([T5X_PYTHON, "-c", "import t5x.models, t5x.adafactor"],
                        capture_output=True, check=False).returncode == 0
    return T5X_PYTHON if ok else None
  return None


def run_t5x_peer(bc: BenchConfig) -> dict[str, Any]:
  """Runs dsbs/bench_t5x.py in an interpreter with T5X; its JSON line is the result."""
  import subprocess  # pylint: disable=g-import-not-at-top
  python = t5x_python()
  if python is None:
    return {"available": False, "reason": f"t5x importable neither here nor in {T5X_PYTHON}"}
  script = os.path.join(os.path.dirname(__file__), "bench_t5x.py")
  proc = subprocess.run([python, script, json.dumps(dataclasses.asdict(bc)),
                         json.dumps(dataclasses.asdict(model_config(bc)))],
                        capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    return {"available": False, "reason": f"T5X peer failed: {proc.stderr.strip()[-800:]}"}
  return dict(json.loads(proc.stdout.strip().splitlines()[-1]), available=True)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run(bc: BenchConfig, peers: Sequence[str] = (), name: str = "") -> dict[str, Any]:
  """Measures dsbs (and `peers`) on `bc`; returns the flat result dict (see module doc)."""
  facts = device_facts()
  m = model_config(bc)
  flops = train_flops(m, bc.batch, bc.input_len, bc.target_len)
  tokens = bc.batch * (bc.input_len + bc.target_len)
  out: dict[str, Any] = {"config": name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         **facts, "model_flops_per_step": flops, "tokens_per_step": tokens}

  _log(f"{facts['device_kind']} x{facts['devices']}, peak {facts.get('peak_flops') or 0:.3g} "
       "FLOP/s; compiling dsbs")
  dsbs_train = DsbsTrain(bc)
  _log(f"dsbs train step compiled in {dsbs_train.compile_s:.1f} s; compiling decoders")
  dsbs_dec = DsbsDecode(bc)
  peer_objs: dict[str, Any] = {}
  for p in peers:
    if p == "torch":
      try:
        peer_objs["torch"] = TorchPeer(bc)
      except ImportError as e:
        out["torch"] = {"available": False, "reason": f"not importable: {e}"}
      except PeerUnavailable as e:
        out["torch"] = {"available": False, "reason": str(e)}
  times: dict[str, dict[str, list[float]]] = {k: {"train": [], "greedy": [], "beam": []}
                                              for k in ["dsbs", *peer_objs]}
  runners = {"dsbs": (dsbs_train, dsbs_dec), **{k: (v, v) for k, v in peer_objs.items()}}
  steps_per_round = max(1, bc.train_steps // bc.rounds)
  for _ in range(bc.rounds):  # alternate so that machine drift hits every engine alike
    for key, (tr, dec) in runners.items():
      # One untimed step first: the engine before it left the host's heap and caches in its
      # own shape (measured: dsbs's first step after the PyTorch peer ran 1.3-1.8x slower).
      tr.step()
      for _ in range(steps_per_round):
        times[key]["train"].append(median_time(tr.step, 1))
      for _ in range(max(1, bc.decode_reps // bc.rounds)):
        times[key]["greedy"].append(median_time(dec.run_greedy, 1))
        times[key]["beam"].append(median_time(dec.run_beam, 1))
      _log(f"{key}: train steps {_fmt_list(times[key]['train'])} s, greedy "
           f"{_fmt_list(times[key]['greedy'])} s, beam {_fmt_list(times[key]['beam'])} s")

  new_tokens = bc.decode_batch * bc.decode_new_tokens
  for key, t in times.items():
    step_s = statistics.median(t["train"])
    res = {"train_step_s": step_s, "train_step_min_s": min(t["train"]), "train_tokens_per_s": tokens / step_s,
           "train_sequences_per_s": bc.batch / step_s,
           "mfu": flops / step_s / facts["peak_flops"] if facts.get("peak_flops") else None,
           "decode_tokens_per_s": new_tokens / statistics.median(t["greedy"]),
           "beam_decode_tokens_per_s": new_tokens / statistics.median(t["beam"]),
           "train_step_samples_s": t["train"]}
    if key == "dsbs":
      out.update(res, compile_s=dsbs_train.compile_s, xla_flops_per_step=dsbs_train.xla_flops(),
                 host_peak_rss_bytes=_peak_rss_bytes(), **dsbs_train.memory())
    else:
      out[key] = dict(res, available=True, version=peer_objs[key].version)
  if facts.get("peak_flops") and facts.get("memory_bytes_per_s"):
    # decoding runs on one device (the CPU peak is already the host's, whatever --host_devices)
    peak = facts["peak_flops"] / (1 if facts["backend"] == "cpu" else facts["devices"])
    for kind, beams in (("decode", 1), ("beam_decode", bc.num_beams)):
      floor = decode_floor_s(m, bc.decode_batch, bc.decode_input_len, bc.decode_new_tokens,
                             beams, peak, facts["memory_bytes_per_s"])
      out[f"{kind}_floor_tokens_per_s"] = new_tokens / floor
  if "t5x" in peers:
    _log("running the T5X peer")
    out["t5x"] = run_t5x_peer(bc)
    if out["t5x"].get("available") and facts.get("peak_flops"):
      out["t5x"]["mfu"] = flops / out["t5x"]["train_step_s"] / facts["peak_flops"]
  for key in ("torch", "t5x"):
    peer = out.get(key)
    if peer and peer.get("available"):
      out[f"train_speedup_vs_{key}"] = peer["train_step_s"] / out["train_step_s"]
      if peer.get("train_step_min_s"):  # best step each: the least disturbed by a shared host
        out[f"train_best_speedup_vs_{key}"] = peer["train_step_min_s"] / out["train_step_min_s"]
      if peer.get("decode_tokens_per_s"):
        out[f"decode_speedup_vs_{key}"] = out["decode_tokens_per_s"] / peer["decode_tokens_per_s"]
        out[f"beam_speedup_vs_{key}"] = (out["beam_decode_tokens_per_s"]
                                         / peer["beam_decode_tokens_per_s"])
  for engine in [out] + [out[k] for k in ("torch", "t5x") if out.get(k, {}).get("available")]:
    for kind in ("decode", "beam_decode"):
      if out.get(f"{kind}_floor_tokens_per_s") and engine.get(f"{kind}_tokens_per_s"):
        engine[f"{kind}_floor_fraction"] = (engine[f"{kind}_tokens_per_s"]
                                            / out[f"{kind}_floor_tokens_per_s"])
  out.update(input_pipeline_rate(bc))
  return out


def markdown(r: dict[str, Any]) -> str:
  """The README table: one row per engine, ratios against dsbs."""
  def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)

  lines = [f"`python -m dsbs.bench --config={r['config']}` on {r['date']}, {r['device_kind']} x"
           f"{r['devices']} ({r['cpu']}, {r['cpu_count']} cores), jax {r['jax']}; peak "
           f"{fmt(r.get('peak_flops') and r['peak_flops'] / 1e9, '.1f')} GFLOP/s "
           f"({r.get('peak_source')}).", "",
           "| engine | train step (s), median | best | train tokens/s | MFU | greedy new tokens/s "
           "| beam new tokens/s |", "|---|---|---|---|---|---|---|"]
  def decode_cell(v, kind):
    frac = v.get(f"{kind}_floor_fraction")
    if not frac:
      return fmt(v.get(f"{kind}_tokens_per_s"), ".0f")
    return f"{v[f'{kind}_tokens_per_s']:.0f} ({100 * frac:.{0 if frac >= 0.01 else 2}f}%)"

  rows = [("dsbs", r)] + [(k, r[k]) for k in ("torch", "t5x") if r.get(k, {}).get("available")]
  for name, v in rows:
    lines.append(f"| {name} | {v['train_step_s']:.3f} | {fmt(v.get('train_step_min_s'), '.3f')} | "
                 f"{v['train_tokens_per_s']:.0f} | "
                 f"{fmt(v.get('mfu') and 100 * v['mfu'], '.1f')}% | "
                 f"{decode_cell(v, 'decode')} | {decode_cell(v, 'beam_decode')} |")
  if r.get("decode_floor_tokens_per_s"):
    lines += ["", f"Decoding floor (the roofline at that peak and "
              f"{r['memory_bytes_per_s'] / 1e9:.1f} GB/s, {r.get('memory_source')}): greedy "
              f"{r['decode_floor_tokens_per_s']:.0f}, beam "
              f"{r['beam_decode_floor_tokens_per_s']:.0f} new tokens/s; the percentages in "
              "brackets are of that floor."]
  ratios = [f"{k.replace('_', ' ')}: {r[k]:.2f}x" for k in sorted(r) if "speedup_vs_" in k]
  if ratios:
    lines += ["", "dsbs speed-up (higher is better): " + "; ".join(ratios) + "."]
  for k in ("torch", "t5x"):
    if k in r and not r[k].get("available"):
      lines.append(f"{k}: unavailable ({r[k].get('reason')}).")
  return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m dsbs.bench", description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="bench_small", choices=sorted(CONFIGS))
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("--markdown", action="store_true", help="print the README table")
  parser.add_argument("--peers", default="", help="comma list of torch,t5x")
  parser.add_argument("--host_devices", type=int, default=None,
                      help="CPU: split the host into N XLA devices, data-parallel step")
  parser.add_argument("--train_steps", type=int, default=None)
  parser.add_argument("--json_out", default=None, help="also write the full JSON result here")
  args = parser.parse_args(argv)
  bad = set(filter(None, args.peers.split(","))) - {"torch", "t5x"}
  if bad:
    parser.error(f"unknown peers {sorted(bad)}; choose from torch, t5x")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  from dsbs import hostmem  # pylint: disable=g-import-not-at-top
  malloc = hostmem.tune_malloc()  # before jax starts its threads; peers share it
  if args.host_devices:
    if "jax" in sys.modules:
      raise RuntimeError("--host_devices must be set before jax is imported")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                               f"device_count={args.host_devices}").strip()
  bc = CONFIGS[args.config]
  if args.train_steps:
    bc = dataclasses.replace(bc, train_steps=args.train_steps)
  result = run(bc, [p for p in args.peers.split(",") if p], name=args.config)
  result["host_malloc"] = malloc
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(result, f, indent=1)
  if args.json:
    print(json.dumps(result))
  elif args.markdown:
    print(markdown(result))
  else:
    print(markdown(result))
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (dict, list))},
                     indent=1))
  return result


if __name__ == "__main__":
  main()

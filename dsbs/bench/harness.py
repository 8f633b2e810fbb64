"""The dsbs engines of the benchmark (the runner's real train step and state, the decoders) and
the run that alternates them with their peers."""
from __future__ import annotations

import functools
import importlib
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

from dsbs import decoding, input_pipeline, optim, train, train_state
from dsbs.bench import hardware, roofline, workload
from dsbs.bench.configs import BenchConfig
from dsbs.bench.peers import PeerUnavailable, t5x as t5x_peer
from dsbs.bench.timing import median_time
from dsbs.model import network, partitioning


def log(msg: str) -> None:
  print(f"[dsbs.bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _fmt_list(xs: Sequence[float]) -> str:
  return "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"


class DsbsTrain:
  """The runner's train step on its own train state (dsbs.train_state: shapes, shardings,
  init) on a ('data', 'model') mesh over all devices."""

  def __init__(self, bc: BenchConfig):
    self.cfg = workload.model_config(bc)
    mesh = partitioning.make_mesh(data=-1, model=1)
    rules = partitioning.logical_axis_rules()
    tx, schedule = optim.make_optimizer(optim.OptimizerConfig(), 10**6, 1e-3)
    layout = train_state.build(self.cfg, tx, mesh, rules, input_len=bc.input_len,
                               target_len=bc.target_len)
    with jax.set_mesh(mesh):
      self.state = layout.init(jax.random.key(0))
    self.step_fn = train.make_train_step(
        network.Transformer(self.cfg), tx, schedule, train.TrainConfig(z_loss=1e-4), "tokens",
        rules, out_shardings=(layout.shardings, NamedSharding(mesh, P())))
    batch = workload.synthetic_batch(bc, self.cfg.vocab_size)
    self.batch = {k: jax.device_put(v, partitioning.data_sharding(mesh, v.ndim))
                  for k, v in batch.items()}
    self.rng = jax.random.key(1)
    t0 = time.perf_counter()
    self.compiled = self.step_fn.lower(self.state, self.batch, self.rng).compile()
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

  def __init__(self, bc: BenchConfig):
    cfg = workload.model_config(bc)
    model = network.Transformer(cfg)
    dev = jax.devices()[0]
    init = jax.jit(lambda r: nn.unbox(network.init_params(cfg, r)))
    self.params = jax.device_put(init(jax.random.key(0)), dev)
    self.inputs = jax.device_put(workload.decode_inputs(bc, cfg.vocab_size), dev)
    # eos_id=-1 never matches: every sequence decodes all new tokens (min = max new tokens).
    self.greedy = decoding.jit(functools.partial(decoding.greedy_decode, model,
                                                 max_decode_len=bc.decode_new_tokens, eos_id=-1))
    self.beam = decoding.jit(functools.partial(decoding.beam_search, model,
                                               max_decode_len=bc.decode_new_tokens,
                                               num_beams=bc.num_beams, eos_id=-1))
    self.run_greedy()
    self.run_beam()

  def run_greedy(self) -> None:
    self.greedy(self.params, self.inputs).tokens.block_until_ready()

  def run_beam(self) -> None:
    self.beam(self.params, self.inputs).tokens.block_until_ready()


def input_pipeline_rate(bc: BenchConfig) -> dict[str, Any]:
  """Examples/s of the real SeqIO training pipeline (task -> converter -> batches)."""
  if not bc.input_task:
    return {"input_examples_per_s": None, "input_note": "not measured for this config"}
  try:  # SeqIO and TensorFlow (~6 s to import) only for this; the rest runs without them
    import dsbs.tasks  # pylint: disable=g-import-not-at-top,unused-import  (registers tasks)
  except ImportError as e:
    return {"input_examples_per_s": None, "input_note": f"not measured: {e}"}
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


def input_resume_times(bc: BenchConfig, position: int) -> dict[str, Any]:
  """Seconds until a resumed run has its next training batch, two ways, at `position` batches
  of the config's input task.

  `skip_s`: re-read and drop the consumed batches (tf.data `skip`); `restore_s`: read back the
  tf.data iterator state saved at that position (what `dsbs.train` does). Both are checked to
  give the very batch that the uninterrupted pipeline gives next. `fresh_s`: a new pipeline's
  first batch, the cost both include.
  """
  import dsbs.tasks  # pylint: disable=g-import-not-at-top,unused-import  (registers tasks)
  conv = input_pipeline.loss_weighting_converter(False, 0.5, "paper")
  lengths = {"inputs": bc.input_len, "targets": bc.target_len}
  cfg = input_pipeline.InputConfig(bc.input_task, lengths, bc.batch, conv)
  out: dict[str, Any] = {"input_task": bc.input_task, "batch": bc.batch, "lengths": lengths,
                         "position": position}
  t0 = time.perf_counter()
  next(input_pipeline.TrainInput(cfg, 1))
  out["fresh_s"] = time.perf_counter() - t0
  running = input_pipeline.TrainInput(cfg, 1)
  for _ in range(position):
    next(running)
  with tempfile.TemporaryDirectory() as state_dir:
    t0 = time.perf_counter()
    running.save(state_dir)
    out["save_s"] = time.perf_counter() - t0
    out["state_bytes"] = sum(os.path.getsize(os.path.join(state_dir, f))
                             for f in os.listdir(state_dir))
    want = next(running)
    t0 = time.perf_counter()
    restored = input_pipeline.TrainInput(cfg, 1)
    restored.restore(state_dir)
    got_restore = next(restored)
    out["restore_s"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  skipped = iter(input_pipeline.converted_dataset(
      cfg, shard=(0, 1), rows=bc.batch, num_epochs=None, drop_remainder=True).skip(position))
  got_skip = {k: v.numpy() for k, v in next(skipped).items()}
  out["skip_s"] = time.perf_counter() - t0
  for name, got in (("restore", got_restore), ("skip", got_skip)):
    if any(not np.array_equal(want[k], got[k]) for k in want):
      raise AssertionError(f"{name} did not continue with the next batch")
  return out


def _in_process_peers(bc: BenchConfig, names: Sequence[str], out: dict[str, Any]) -> dict[str, Any]:
  """The in-process peers that can run here; the others are recorded unavailable in `out`."""
  peers = {}
  for name in names:
    if name == "t5x":
      continue  # a side interpreter, after the others
    try:  # each peer's framework (PyTorch...) is optional and heavy: imported when asked for
      peers[name] = importlib.import_module(f"dsbs.bench.peers.{name}").Peer(bc)
    except ImportError as e:
      out[name] = {"available": False, "reason": f"not importable: {e}"}
    except PeerUnavailable as e:
      out[name] = {"available": False, "reason": str(e)}
  return peers


def run(bc: BenchConfig, peers: Sequence[str] = (), name: str = "",
        t5x_python: str | None = None) -> dict[str, Any]:
  """Measures dsbs (and `peers`) on `bc`; returns the flat result dict (see dsbs.bench)."""
  facts = hardware.device_facts()
  m = workload.model_config(bc)
  flops = roofline.train_flops(m, bc.batch, bc.input_len, bc.target_len)
  tokens = bc.batch * (bc.input_len + bc.target_len)
  out: dict[str, Any] = {"config": name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         **facts, "model_flops_per_step": flops, "tokens_per_step": tokens}

  log(f"{facts['device_kind']} x{facts['devices']}, peak {facts.get('peak_flops') or 0:.3g} "
      "FLOP/s; compiling dsbs")
  dsbs_train = DsbsTrain(bc)
  log(f"dsbs train step compiled in {dsbs_train.compile_s:.1f} s; compiling decoders")
  dsbs_dec = DsbsDecode(bc)
  peer_objs = _in_process_peers(bc, peers, out)
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
      log(f"{key}: train steps {_fmt_list(times[key]['train'])} s, greedy "
          f"{_fmt_list(times[key]['greedy'])} s, beam {_fmt_list(times[key]['beam'])} s")

  new_tokens = bc.decode_batch * bc.decode_new_tokens
  for key, t in times.items():
    step_s = statistics.median(t["train"])
    res = {"train_step_s": step_s, "train_step_min_s": min(t["train"]),
           "train_tokens_per_s": tokens / step_s, "train_sequences_per_s": bc.batch / step_s,
           "mfu": flops / step_s / facts["peak_flops"] if facts.get("peak_flops") else None,
           "decode_tokens_per_s": new_tokens / statistics.median(t["greedy"]),
           "beam_decode_tokens_per_s": new_tokens / statistics.median(t["beam"]),
           "train_step_samples_s": t["train"]}
    if key == "dsbs":
      out.update(res, compile_s=dsbs_train.compile_s, xla_flops_per_step=dsbs_train.xla_flops(),
                 host_peak_rss_bytes=hardware.peak_rss_bytes(), **dsbs_train.memory())
    else:
      out[key] = dict(res, available=True, version=peer_objs[key].version)
  if facts.get("peak_flops") and facts.get("memory_bytes_per_s"):
    # decoding runs on one device (the CPU peak is already the host's, whatever --host_devices)
    peak = facts["peak_flops"] / (1 if facts["backend"] == "cpu" else facts["devices"])
    for kind, beams in (("decode", 1), ("beam_decode", bc.num_beams)):
      floor = roofline.decode_floor_s(m, bc.decode_batch, bc.decode_input_len,
                                      bc.decode_new_tokens, beams, peak,
                                      facts["memory_bytes_per_s"])
      out[f"{kind}_floor_tokens_per_s"] = new_tokens / floor
  if "t5x" in peers:
    log("running the T5X peer")
    out["t5x"] = t5x_peer.run(bc, m, t5x_python)
    if out["t5x"].get("available") and facts.get("peak_flops"):
      out["t5x"]["mfu"] = flops / out["t5x"]["train_step_s"] / facts["peak_flops"]
  _ratios(out)
  out.update(input_pipeline_rate(bc))
  return out


def _ratios(out: dict[str, Any]) -> None:
  """dsbs's speed-ups over each available peer, and every engine's fraction of the floor."""
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

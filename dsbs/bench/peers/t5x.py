"""The T5X peer: T5X's own T5 1.1 network, model loss, Adafactor and decoding, measured in an
interpreter that can import t5x (T5X is not a dsbs dependency).

The dsbs side (`run`) launches, in the interpreter named by `--t5x_python` or
`$DSBS_T5X_PYTHON` (else this one, if it can import t5x):

  python -m dsbs.bench.peers.t5x '<BenchConfig JSON>' '<T5Config JSON>'

which prints one JSON line: train_step_s, train_tokens_per_s, decode_tokens_per_s,
beam_decode_tokens_per_s, version, host_malloc (the process runs with the allocator setting of
`dsbs.hostmem`, as the dsbs and PyTorch runs do). The step is `t5x.trainer.train_with_lr`
(loss_fn + grads + Adafactor update, as T5X's Trainer runs it) under jax.jit with the train
state donated, on one device without a partitioner; decoding is
`EncoderDecoderModel.predict_batch_with_aux` with T5X's beam search and with top-1 temperature
sampling (greedy). No EOS id is ever emitted, so every sequence decodes the full length, as in
dsbs's and PyTorch's runs.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from dsbs import hostmem
from dsbs.bench.timing import median_time

T5X_PYTHON_ENV = "DSBS_T5X_PYTHON"
_PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # dsbs/


def t5x_python(flag: str | None = None) -> tuple[str | None, str]:
  """(interpreter that can import t5x, or None; how it was chosen or why none was).

  `flag` (--t5x_python), else $DSBS_T5X_PYTHON, else this interpreter if it imports t5x."""
  python = flag or os.environ.get(T5X_PYTHON_ENV)
  if not python:
    if importlib.util.find_spec("t5x") is not None:
      return sys.executable, "this interpreter"
    return None, (f"t5x is not importable here; pass --t5x_python or set ${T5X_PYTHON_ENV} to "
                  "an interpreter that has it")
  source = "--t5x_python" if flag else f"${T5X_PYTHON_ENV}"
  if not os.path.exists(python):
    return None, f"{source}: no such interpreter {python}"
  ok = subprocess.run([python, "-c", "import t5x.models, t5x.adafactor"], capture_output=True,
                      check=False).returncode == 0
  if not ok:
    return None, f"{source}: {python} cannot import t5x.models and t5x.adafactor"
  return python, source


def run(bc: Any, model_cfg: Any, python_flag: str | None = None) -> dict[str, Any]:
  """Runs this module in an interpreter with T5X; its JSON line is the result."""
  python, how = t5x_python(python_flag)
  if python is None:
    return {"available": False, "reason": how}
  with tempfile.TemporaryDirectory(prefix="dsbs-t5x-peer-") as path_dir:
    # this dsbs, whether that interpreter has it installed or not, and nothing else from here
    os.symlink(_PACKAGE, os.path.join(path_dir, "dsbs"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (path_dir, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([python, "-m", "dsbs.bench.peers.t5x",
                           json.dumps(dataclasses.asdict(bc)),
                           json.dumps(dataclasses.asdict(model_cfg))],
                          capture_output=True, text=True, check=False, env=env)
  if proc.returncode != 0:
    return {"available": False, "reason": f"T5X peer failed: {proc.stderr.strip()[-800:]}"}
  return dict(json.loads(proc.stdout.strip().splitlines()[-1]), available=True)


def measure(bc: dict[str, Any], mc: dict[str, Any]) -> dict[str, Any]:
  """Measures T5X on the benchmark config `bc` with the dsbs model config `mc` (side
  interpreter only)."""
  # T5X exists only in the side interpreter (the dsbs side imports this module to launch it),
  # and there JAX must start after the allocator setting of __main__: imported here.
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np
  import seqio
  import t5x
  from t5x import adafactor, decoding, models, train_state, trainer
  from t5x.examples.t5 import network
  # pylint: enable=g-import-not-at-top

  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[bc["dtype"]]
  cfg = network.T5Config(
      vocab_size=mc["vocab_size"], dtype=dtype, emb_dim=mc["emb_dim"], num_heads=mc["num_heads"],
      num_encoder_layers=mc["num_encoder_layers"], num_decoder_layers=mc["num_decoder_layers"],
      head_dim=mc["head_dim"], mlp_dim=mc["mlp_dim"], mlp_activations=tuple(mc["mlp_activations"]),
      dropout_rate=0.0, logits_via_embedding=mc["logits_via_embedding"])
  # an EOS id out of the vocabulary: never emitted
  vocab = seqio.PassThroughVocabulary(mc["vocab_size"], eos_id=mc["vocab_size"] + 7)
  opt = adafactor.Adafactor(decay_rate=0.8, step_offset=0,
                            logical_factor_rules=adafactor.standard_logical_factor_rules())
  greedy_fn = functools.partial(decoding.temperature_sample, temperature=1.0, topk=1)
  model = models.EncoderDecoderModel(network.Transformer(cfg), vocab, vocab, opt,
                                     z_loss=1e-4, loss_normalizing_factor=None)
  greedy_model = models.EncoderDecoderModel(network.Transformer(cfg), vocab, vocab, opt,
                                            decode_fn=greedy_fn)
  b, li, lt = bc["batch"], bc["input_len"], bc["target_len"]
  shapes = {"encoder_input_tokens": (b, li), "decoder_input_tokens": (b, lt)}
  variables = model.get_initial_variables(jax.random.PRNGKey(0), shapes)
  state = train_state.FlaxOptimTrainState.create(opt, variables)
  rng = np.random.default_rng(0)
  targets = rng.integers(2, mc["vocab_size"], (b, lt), dtype=np.int32)
  batch = {"encoder_input_tokens": rng.integers(2, mc["vocab_size"], (b, li), dtype=np.int32),
           "decoder_target_tokens": targets,
           "decoder_input_tokens": np.concatenate([np.zeros((b, 1), np.int32), targets[:, :-1]], 1),
           "decoder_loss_weights": np.ones((b, lt), np.float32)}
  batch = jax.device_put(batch)
  step = jax.jit(functools.partial(trainer.train_with_lr, learning_rate=jnp.float32(1e-3),
                                   dropout_rng=jax.random.PRNGKey(1), model=model,
                                   num_microbatches=None), donate_argnums=0)
  holder = {"state": state}

  def train_once():
    holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready(metrics)

  t0 = time.perf_counter()
  train_once()
  compile_s = time.perf_counter() - t0
  steps = [median_time(train_once, 1) for _ in range(bc["train_steps"])]
  step_s = statistics.median(steps)

  db, dl, new = bc["decode_batch"], bc["decode_input_len"], bc["decode_new_tokens"]
  dec_batch = {"encoder_input_tokens": jnp.asarray(
      np.random.default_rng(1).integers(2, mc["vocab_size"], (db, dl), dtype=np.int32)),
               "decoder_input_tokens": jnp.zeros((db, new), jnp.int32)}
  params = holder["state"].params
  greedy = jax.jit(lambda p, x: greedy_model.predict_batch_with_aux(
      p, x, rng=jax.random.PRNGKey(0))[0])
  beam = jax.jit(lambda p, x: model.predict_batch_with_aux(p, x, num_decodes=bc["num_beams"])[0])
  out = {}
  for name, fn in (("decode_tokens_per_s", greedy), ("beam_decode_tokens_per_s", beam)):
    tokens = fn(params, dec_batch)
    tokens.block_until_ready()
    if tokens.shape[-1] != new:
      raise RuntimeError(f"T5X decoding returned {tokens.shape[-1]} tokens, expected {new}")
    reps = median_time(lambda fn=fn: fn(params, dec_batch).block_until_ready(), bc["decode_reps"])
    out[name] = db * new / reps
  return dict(out, train_step_s=step_s, train_step_min_s=min(steps),
              train_tokens_per_s=b * (li + lt) / step_s, train_sequences_per_s=b / step_s,
              compile_s=compile_s, version=f"t5x {getattr(t5x, '__version__', '?')}, "
              f"jax {jax.__version__}")


if __name__ == "__main__":
  # The allocator setting of the dsbs and PyTorch runs (DSBS_MALLOC is inherited), set before
  # JAX starts its threads.
  _malloc = hostmem.tune_malloc()
  print(json.dumps(dict(measure(json.loads(sys.argv[1]), json.loads(sys.argv[2])),
                        host_malloc=_malloc)))

"""The T5X peer of `dsbs.bench`: T5X's own T5 1.1 network, model loss, Adafactor and decoding.

Run by dsbs.bench in an interpreter that can import t5x (T5X is not a dsbs dependency):

  python dsbs/bench_t5x.py '<BenchConfig JSON>' '<T5Config JSON>'

Prints one JSON line: train_step_s, train_tokens_per_s, decode_tokens_per_s,
beam_decode_tokens_per_s, version, host_malloc (the process runs with the allocator setting of
`dsbs.hostmem`, as the dsbs and PyTorch runs do). The step is `t5x.trainer.train_with_lr`
(loss_fn + grads + Adafactor update, as T5X's Trainer runs it) under jax.jit with the train
state donated, on one device without a partitioner; decoding is
`EncoderDecoderModel.predict_batch_with_aux` with T5X's beam search and with top-1 temperature
sampling (greedy). No EOS id is ever emitted, so every sequence decodes the full length, as in
dsbs's and PyTorch's runs.
"""
import functools
import json
import os
import statistics
import sys
import time

# Run as a script, this file's folder (dsbs/) heads sys.path, where dsbs's own modules
# (decoding, train, testing, ...) would shadow top-level modules of the same names.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from dsbs.bench import median_time  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(bc: dict, mc: dict) -> dict:
  """Measures T5X on the benchmark config `bc` with the dsbs model config `mc`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  import t5x  # pylint: disable=g-import-not-at-top
  from t5x import adafactor, decoding, models, train_state, trainer  # pylint: disable=g-import-not-at-top
  from t5x.examples.t5 import network  # pylint: disable=g-import-not-at-top

  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[bc["dtype"]]
  cfg = network.T5Config(
      vocab_size=mc["vocab_size"], dtype=dtype, emb_dim=mc["emb_dim"], num_heads=mc["num_heads"],
      num_encoder_layers=mc["num_encoder_layers"], num_decoder_layers=mc["num_decoder_layers"],
      head_dim=mc["head_dim"], mlp_dim=mc["mlp_dim"], mlp_activations=tuple(mc["mlp_activations"]),
      dropout_rate=0.0, logits_via_embedding=mc["logits_via_embedding"])
  vocab = seqio.PassThroughVocabulary(mc["vocab_size"], eos_id=mc["vocab_size"] + 7)  # never emitted
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
  return dict(out, train_step_s=step_s, train_step_min_s=min(steps), train_tokens_per_s=b * (li + lt) / step_s,
              train_sequences_per_s=b / step_s, compile_s=compile_s,
              version=f"t5x {getattr(t5x, '__version__', '?')}, jax {jax.__version__}")


if __name__ == "__main__":
  from dsbs import hostmem  # pylint: disable=g-import-not-at-top
  # The allocator setting of the dsbs and PyTorch runs (DSBS_MALLOC is inherited), set before
  # JAX starts its threads.
  malloc = hostmem.tune_malloc()
  result = main(json.loads(sys.argv[1]), json.loads(sys.argv[2]))
  print(json.dumps(dict(result, host_malloc=malloc)))

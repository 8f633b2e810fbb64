"""KV-cache greedy and beam search: agree with full recomputation, with each other, and with
transformers' generate()."""
import functools
import os
import re

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from safetensors.numpy import load_file, save_file

from dsbs import decoding, testing
from dsbs.decoding import caches, encoder_decoder
from dsbs.model import Transformer, hf_format, init_params, param_tree

MAX_LEN = 10


def _greedy_by_recompute(model, params, enc, max_len, eos_id=1):
  """Reference: re-run the full decoder on the whole prefix each step, no cache."""
  fwd = jax.jit(lambda dec: model.apply({"params": params}, enc, dec, jnp.ones_like(dec),
                                        enable_dropout=False))
  batch = enc.shape[0]
  out = np.zeros((batch, max_len), np.int32)
  done = np.zeros(batch, bool)
  for i in range(max_len):
    # fixed shape (one compile); causal masking hides the positions beyond i
    dec_in = np.concatenate([np.zeros((batch, 1), np.int32), out[:, :-1]], axis=1)
    logits = np.asarray(fwd(jnp.asarray(dec_in)))[:, i]
    nxt = np.where(done, 0, logits.argmax(-1))
    out[:, i] = nxt
    done |= nxt == eos_id
  return out


def _tiny(scan_layers):
  config = testing.tiny_config(vocab_size=8)
  params = testing.tiny_params(config, seed=1)
  # make EOS (id 1) compete with a frequent token so that some sequences finish early
  kernel = np.array(params["decoder"]["logits_dense"]["kernel"])
  kernel[:, 1] = kernel[:, 4] + np.random.default_rng(0).normal(0, 0.05, kernel.shape[0])
  params["decoder"]["logits_dense"]["kernel"] = jnp.asarray(kernel)
  if scan_layers:  # the same weights in the stacked layout
    config = config.replace(scan_layers=True)
    params = param_tree.unflatten(param_tree.scan_layers(param_tree.flatten(params)))
  enc = testing.random_batch(config, batch=6, input_len=9, seed=2)["encoder_input_tokens"]
  return Transformer(config), params, jnp.asarray(enc)


@pytest.fixture(scope="module")
def tiny():
  return _tiny(scan_layers=False)


def _jit_decode(fn, model, **static):
  return decoding.jit(functools.partial(fn, model, max_decode_len=MAX_LEN, **static))


@pytest.fixture(scope="module")
def decoded(tiny):
  """Greedy and beam (k=1, k=4; alpha=0) results on the tiny model, each compiled once."""
  model, params, enc = tiny
  return {"greedy": _jit_decode(decoding.greedy_decode, model)(params, enc),
          "beam1": _jit_decode(decoding.beam_search, model, num_beams=1, alpha=0.0)(params, enc),
          "beam4": _jit_decode(decoding.beam_search, model, num_beams=4, alpha=0.0)(params, enc)}


@pytest.mark.parametrize("scan_layers", [False, True], ids=["layers", "scanned"])
def test_greedy_cache_matches_recompute(scan_layers, decoded):
  model, params, enc = _tiny(scan_layers)
  if scan_layers:
    got = _jit_decode(decoding.greedy_decode, model)(params, enc)
  else:
    got = decoded["greedy"]
  want = _greedy_by_recompute(model, params, enc, MAX_LEN)
  np.testing.assert_array_equal(np.asarray(got.tokens), want)
  assert (want == 1).any(), "fixture should produce some EOS"
  assert np.all(np.asarray(got.scores) < 0)


def test_beam_one_equals_greedy(decoded):
  greedy, beam = decoded["greedy"], decoded["beam1"]
  np.testing.assert_array_equal(np.asarray(beam.tokens[:, 0]), np.asarray(greedy.tokens))
  np.testing.assert_allclose(np.asarray(beam.scores[:, 0]), np.asarray(greedy.scores), atol=1e-5)


def test_beam_scores_at_least_greedy_and_sorted(tiny, decoded):
  _, _, enc = tiny
  beam = decoded["beam4"]
  scores = np.asarray(beam.scores)
  assert beam.tokens.shape == (enc.shape[0], 4, MAX_LEN)
  assert np.all(scores[:, 0] >= np.asarray(decoded["greedy"].scores) - 1e-5)
  assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


def test_beam_scores_are_sequence_logprobs(tiny, decoded):
  """Every returned beam's score is the model's log-probability of that sequence (alpha=0)."""
  model, params, enc = tiny
  toks = np.asarray(decoded["beam4"].tokens)  # [batch, beams, len]
  b, k, n = toks.shape
  flat = toks.reshape(b * k, n)
  dec_in = np.concatenate([np.zeros((b * k, 1), np.int32), flat[:, :-1]], axis=1)
  batch = {"encoder_input_tokens": np.repeat(np.asarray(enc), k, axis=0),
           "decoder_input_tokens": dec_in, "decoder_target_tokens": np.ones_like(dec_in)}
  logp = np.asarray(jax.nn.log_softmax(testing.forward_fn(model.config)(params, batch)))
  tok_logp = np.take_along_axis(logp, flat[:, :, None], axis=-1)[:, :, 0]
  upto = np.cumsum(np.cumsum(flat == 1, axis=1), axis=1) <= 1  # up to and including EOS
  np.testing.assert_allclose((tok_logp * upto).sum(1).reshape(b, k),
                             np.asarray(decoded["beam4"].scores), atol=1e-4)


def test_beam_scanned_layers_match(decoded):
  """Slot-addressed beam caches under a layer scan (a leading 'layers' axis) agree too."""
  model, params, enc = _tiny(scan_layers=True)
  got = _jit_decode(decoding.beam_search, model, num_beams=4, alpha=0.0)(params, enc)
  np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(decoded["beam4"].tokens))
  np.testing.assert_allclose(np.asarray(got.scores), np.asarray(decoded["beam4"].scores),
                             atol=1e-5)


@pytest.mark.parametrize("scan_layers", [False, True], ids=["layers", "scanned"])
def test_growing_caches_do_not_change_results(scan_layers, decoded):
  """Caches that grow in phases (3 loops over 4 + 3 + 3 steps) decode what full-length caches
  decode, with sequences that finish early."""
  model, params, enc = _tiny(scan_layers)
  assert decoding.cache_lengths(MAX_LEN, 3) == [4, 7, 10]
  greedy = _jit_decode(decoding.greedy_decode, model, cache_phases=3)(params, enc)
  beam = _jit_decode(decoding.beam_search, model, num_beams=4, alpha=0.0, cache_phases=3)(
      params, enc)
  for got, want in ((greedy, decoded["greedy"]), (beam, decoded["beam4"])):
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))
    np.testing.assert_allclose(np.asarray(got.scores), np.asarray(want.scores), atol=1e-5)
  assert (np.asarray(greedy.tokens) == 1).any()


def _library_fusions(jitted, *args):
  """(called computations of YNNPACK fusions, those of them with a reduce) in compiled HLO."""
  hlo = jitted.lower(*args).compile().as_text()
  called = re.findall(r'calls=%([\w.\-]+), [^\n]*"kind":"__ynn_fusion"', hlo)
  return called, [n for n in called if " reduce(" in hlo.split(f"%{n} ", 1)[1].split("\n}", 1)[0]]


def test_decoders_compile_with_matmul_only_library_fusions():
  """On CPU, decoding.jit hands XLA only matmuls as YNNPACK fusions: the softmax and norm
  reductions that plain jax.jit gives the library stay with XLA (compiled from shapes only)."""
  assert decoding.compiler_options("gpu") == ()
  if jax.default_backend() != "cpu" or not decoding.compiler_options():
    pytest.skip("the option is for XLA:CPU builds that know it")
  config = testing.tiny_config().replace(emb_dim=128, mlp_dim=256, num_encoder_layers=1,
                                         num_decoder_layers=1)
  params = jax.eval_shape(lambda r: testing.tiny_params(config, seed=0), 0)
  enc = jax.ShapeDtypeStruct((8, 32), jnp.int32)
  fn = functools.partial(decoding.greedy_decode, Transformer(config), max_decode_len=4)
  _, plain_reduces = _library_fusions(jax.jit(fn), params, enc)
  called, reduces = _library_fusions(decoding.jit(fn), params, enc)
  assert plain_reduces, "the default XLA:CPU pipeline should fuse some reductions into YNNPACK"
  assert called and not reduces, reduces


def _loop_operand_dtypes(jaxpr, dtypes=None):
  """{dtype: shapes} of the >=2-D floating operands of every while loop in `jaxpr`."""
  dtypes = {} if dtypes is None else dtypes
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "while":
      for v in eqn.invars:
        if v.aval.ndim >= 2 and jnp.issubdtype(v.aval.dtype, jnp.floating):
          dtypes.setdefault(str(v.aval.dtype), set()).add(v.aval.shape)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      _loop_operand_dtypes(sub, dtypes)
  return dtypes


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_compute_params_keep_results_bit_for_bit(tied, monkeypatch):
  """Parameters pre-cast to a bfloat16 compute dtype give the same logits and the same decodes,
  to the bit; the float32 logits weights stay float32; float32 configs are left alone."""
  config = testing.tiny_config(vocab_size=40, dtype="bfloat16", logits_via_embedding=tied)
  params = testing.tiny_params(config, seed=3)
  compute_params = encoder_decoder.compute_params
  cast = compute_params(params, config)
  head = ("token_embedder", "embedding") if tied else ("decoder", "logits_dense", "kernel")
  flat = param_tree.flatten(cast)
  assert flat.pop("/".join(head)).dtype == jnp.float32
  assert {str(v.dtype) for v in flat.values()} == {"bfloat16"}
  boxed = jax.eval_shape(lambda: compute_params(  # logically partitioned, as initialised
      init_params(config, jax.random.PRNGKey(0)), config))
  assert {k: v.dtype for k, v in param_tree.flatten(nn.unbox(boxed)).items()} == {
      k: v.dtype for k, v in param_tree.flatten(cast).items()}
  batch = testing.random_batch(config, batch=3, input_len=9, target_len=6, seed=4)
  forward = testing.forward_fn(config)
  np.testing.assert_array_equal(np.asarray(forward(cast, batch)),
                                np.asarray(forward(params, batch)))
  f32 = testing.tiny_config(logits_via_embedding=tied)
  f32_params = testing.tiny_params(f32)
  assert all(a is b for a, b in zip(jax.tree.leaves(compute_params(f32_params, f32)),
                                    jax.tree.leaves(f32_params)))

  model, enc = Transformer(config), jnp.asarray(batch["encoder_input_tokens"])
  decoders = ((decoding.greedy_decode, {}), (decoding.beam_search, {"num_beams": 3}))
  results = [_jit_decode(fn, model, **kw)(params, enc) for fn, kw in decoders]
  with monkeypatch.context() as m:  # the decoders without the cast: casts at every step
    m.setattr(encoder_decoder, "compute_params", lambda p, c: p)
    wants = [_jit_decode(fn, model, **kw)(params, enc) for fn, kw in decoders]
  for got, want in zip(results, wants):
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))
    np.testing.assert_array_equal(np.asarray(got.scores), np.asarray(want.scores))


def test_decode_loops_read_weights_in_compute_dtype():
  """With float32 parameters and bfloat16 compute, the decoding loops take bfloat16 weights:
  only the float32 logits kernel enters them in float32 (XLA does not hoist per-step casts)."""
  config = testing.tiny_config(vocab_size=40, dtype="bfloat16")
  params = jax.eval_shape(lambda r: testing.tiny_params(config, seed=0), 0)
  enc = jax.ShapeDtypeStruct((2, 9), jnp.int32)
  model = Transformer(config)
  head = params["decoder"]["logits_dense"]["kernel"].shape
  for fn, kw in ((decoding.greedy_decode, {}), (decoding.beam_search, {"num_beams": 2})):
    jaxpr = jax.make_jaxpr(functools.partial(fn, model, max_decode_len=4, **kw))(params, enc)
    dtypes = _loop_operand_dtypes(jaxpr.jaxpr)
    assert (config.emb_dim, config.mlp_dim) in dtypes["bfloat16"], dtypes
    # the float32 loop operands: the logits kernel, and caches or scores (not weights)
    weights = {(config.emb_dim, config.mlp_dim), (config.mlp_dim, config.emb_dim),
               (config.emb_dim, config.num_heads * config.head_dim)}
    assert head in dtypes["float32"] and not weights & dtypes["float32"], dtypes


def test_cache_lengths():
  assert decoding.cache_lengths(10) == [10]  # short decodes: one phase
  assert decoding.cache_lengths(64) == [16, 32, 48, 64]
  assert decoding.cache_lengths(320) == [80, 160, 240, 320]  # at most 4 phases by default
  assert decoding.cache_lengths(5, 8) == [1, 2, 3, 4, 5]  # never more phases than steps
  with pytest.raises(ValueError, match="cache_phases"):
    decoding.cache_lengths(64, 0)


def test_extend_cache_keeps_written_positions(tiny):
  model, params, enc = tiny
  model_fns = encoder_decoder.EncoderDecoder(model, params, enc)
  for groups in (1, 3):
    cache = caches.group_sequences(model_fns.init_cache(enc.shape[0] * groups, 4), groups)
    layer = cache["decoder"]["layers_0"]["self_attention"]
    layer["cached_key"] = jnp.ones_like(layer["cached_key"])
    grown = caches.extend_cache(cache, 6, groups)
    key = grown["decoder"]["layers_0"]["self_attention"]["cached_key"]
    value = grown["decoder"]["layers_0"]["self_attention"]["cached_value"]
    assert key.shape[0] == enc.shape[0] and key.shape[-1] == value.shape[-2] == 6 * groups
    key = np.asarray(key)
    assert np.all(key[..., :4 * groups] == 1) and np.all(key[..., 4 * groups:] == 0)
    np.testing.assert_array_equal(
        np.asarray(grown["decoder"]["layers_0"]["encoder_decoder_attention"]["cross_key"]),
        np.asarray(cache["decoder"]["layers_0"]["encoder_decoder_attention"]["cross_key"]))
    with pytest.raises(ValueError, match="cannot grow"):
      caches.extend_cache(cache, 3, groups)


@pytest.mark.parametrize("scan_layers", [False, True], ids=["layers", "scanned"])
def test_grouped_cache_steps_equal_one_row_per_sequence(scan_layers):
  """Three sequences per cache row (interleaved columns, the default own-history mask) decode
  what one row per sequence decodes: the same log-probs at every step."""
  model, params, enc = _tiny(scan_layers)
  model_fns = encoder_decoder.EncoderDecoder(model, params, enc)
  rows, groups = enc.shape[0], 3
  tokens = jnp.asarray(np.random.default_rng(4).integers(2, 8, (4, rows * groups)), jnp.int32)
  step = jax.jit(model_fns.step, static_argnums=2)
  flat = model_fns.init_cache(rows * groups, 4)
  grouped = caches.group_sequences(flat, groups)
  assert grouped["decoder"]["layers" if scan_layers else "layers_0"]["self_attention"][
      "cached_key"].shape[-4] == rows
  for t in range(4):
    want, flat = step(tokens[t], flat, 4)
    got, grouped = step(tokens[t], grouped, 4)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_beam_length_normalisation(tiny):
  """With alpha > 0 each score is log p(seq) / ((5 + len) / 6) ** alpha, len counting EOS."""
  model, params, enc = tiny
  beam = _jit_decode(decoding.beam_search, model, num_beams=4, alpha=0.6)(params, enc)
  toks = np.asarray(beam.tokens)
  b, k, n = toks.shape
  flat = toks.reshape(b * k, n)
  dec_in = np.concatenate([np.zeros((b * k, 1), np.int32), flat[:, :-1]], axis=1)
  batch = {"encoder_input_tokens": np.repeat(np.asarray(enc), k, axis=0),
           "decoder_input_tokens": dec_in, "decoder_target_tokens": np.ones_like(dec_in)}
  logp = np.asarray(jax.nn.log_softmax(testing.forward_fn(model.config)(params, batch)))
  tok_logp = np.take_along_axis(logp, flat[:, :, None], axis=-1)[:, :, 0]
  upto = np.cumsum(np.cumsum(flat == 1, axis=1), axis=1) <= 1
  lengths = np.where((flat == 1).any(1), np.argmax(flat == 1, axis=1) + 1, n)
  want = (tok_logp * upto).sum(1) / ((5.0 + lengths) / 6.0) ** 0.6
  np.testing.assert_allclose(want.reshape(b, k), np.asarray(beam.scores), atol=1e-4)


def test_length_penalty_changes_normalisation():
  bp = decoding.brevity_penalty
  assert float(bp(0.0, jnp.array(7))) == 1.0
  np.testing.assert_allclose(float(bp(0.6, jnp.array(7))), (12 / 6) ** 0.6, rtol=1e-6)


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  # transformers' generate() needs equal encoder/decoder depth (its cache is sized by num_layers)
  d = testing.make_hf_t5(str(tmp_path_factory.mktemp("hfgen")), "t5_1_1", seed=5, vocab_size=12,
                         num_decoder_layers=2)
  path = os.path.join(d, "model.safetensors")
  tensors = load_file(path)
  # give EOS an output row close to a frequent token's, so that some beams finish early
  rng = np.random.default_rng(0)
  tensors["lm_head.weight"][1] = tensors["lm_head.weight"][7] + rng.normal(0, 0.1, 32)
  save_file(tensors, path, metadata={"format": "pt"})
  config, params = hf_format.load_hf_checkpoint(d)
  torch_model = transformers.T5ForConditionalGeneration.from_pretrained(d).eval()
  return config, params, torch_model, torch


def _pad_after_eos(x, n):
  """Pads to n and writes 0 after the first EOS (HF fills finished beams with EOS or pad)."""
  x = np.pad(x, [(0, 0), (0, n - x.shape[1])])
  after = np.cumsum(np.cumsum(x == 1, axis=1), axis=1) > 1
  return np.where(after, 0, x)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_matches_transformers_generate(hf_model, num_beams):
  config, params, torch_model, torch = hf_model
  model = Transformer(config)
  enc = testing.random_batch(config, batch=8, input_len=10, seed=3)["encoder_input_tokens"]
  ids = torch.tensor(enc, dtype=torch.long)
  with torch.no_grad():
    out = torch_model.generate(input_ids=ids, attention_mask=(ids > 0).long(),
                               max_new_tokens=MAX_LEN, do_sample=False, num_beams=num_beams,
                               length_penalty=0.0, num_return_sequences=num_beams,
                               output_scores=True, return_dict_in_generate=True)
  want = _pad_after_eos(out.sequences.numpy()[:, 1:], MAX_LEN).reshape(8, num_beams, MAX_LEN)
  if num_beams == 1:
    got = _jit_decode(decoding.greedy_decode, model)(params, jnp.asarray(enc))
    np.testing.assert_array_equal(np.asarray(got.tokens), want[:, 0])
  else:
    got = _jit_decode(decoding.beam_search, model, num_beams=num_beams, alpha=0.0,
                      cache_phases=2)(params, jnp.asarray(enc))
    np.testing.assert_array_equal(np.asarray(got.tokens)[:, 0], want[:, 0])
    hf_scores = out.sequences_scores.numpy().reshape(8, num_beams)
    np.testing.assert_allclose(np.asarray(got.scores)[:, 0], hf_scores[:, 0], atol=1e-3)
  assert (want == 1).any(), "some sequences should finish with EOS"

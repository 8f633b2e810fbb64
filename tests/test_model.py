"""The Flax T5: parameter tree and logical axes as T5X, masking/packing semantics, dtypes,
dropout, remat/scan equivalence, full-size configs through eval_shape."""
import dataclasses

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from dsbs import testing
from dsbs.model import Transformer, get_config, init_params, layers, param_tree
from dsbs.model import config as config_lib
from dsbs.model.config import T5Config


def _logits(config, params, batch):
  return np.asarray(testing.forward_fn(config)(params, batch))


def _specs(config):
  abstract = jax.eval_shape(lambda r: init_params(config, r), jax.random.PRNGKey(0))
  specs = param_tree.flatten(nn.get_partition_spec(abstract))
  shapes = {k: v.shape for k, v in param_tree.flatten(nn.unbox(abstract)).items()}
  return specs, shapes


def test_xxl_eval_shape_param_count_and_axes():
  specs, shapes = _specs(get_config("t5_1_1_xxl"))
  total = sum(int(np.prod(s)) for s in shapes.values())
  assert 11.0e9 < total < 11.5e9, total  # T5 1.1 XXL: ~11.1B parameters
  assert len(shapes) == 1 + 2 * 2 + 24 * 9 + 24 * 14 + 1  # emb, 2x(relpos,norm), layers, head
  want_axes = {
      "token_embedder/embedding": ("vocab", "embed"),
      "encoder/relpos_bias/rel_embedding": ("heads", "relpos_buckets"),
      "decoder/relpos_bias/rel_embedding": ("heads", "relpos_buckets"),
      "encoder/encoder_norm/scale": ("embed",),
      "decoder/decoder_norm/scale": ("embed",),
      "decoder/logits_dense/kernel": ("embed", "vocab"),
  }
  for stack, attns in (("encoder", ["attention"]),
                       ("decoder", ["self_attention", "encoder_decoder_attention"])):
    for i in range(24):
      p = f"{stack}/layers_{i}"
      for a in attns:
        for proj in ("query", "key", "value"):
          want_axes[f"{p}/{a}/{proj}/kernel"] = ("embed", "joined_kv")
        want_axes[f"{p}/{a}/out/kernel"] = ("joined_kv", "embed")
      want_axes[f"{p}/mlp/wi_0/kernel"] = ("embed", "mlp")
      want_axes[f"{p}/mlp/wi_1/kernel"] = ("embed", "mlp")
      want_axes[f"{p}/mlp/wo/kernel"] = ("mlp", "embed")
    norms = (["pre_attention_layer_norm", "pre_mlp_layer_norm"] if stack == "encoder" else
             ["pre_self_attention_layer_norm", "pre_cross_attention_layer_norm",
              "pre_mlp_layer_norm"])
    for i in range(24):
      for n in norms:
        want_axes[f"{stack}/layers_{i}/{n}/scale"] = ("embed",)
  assert set(specs) == set(want_axes)
  for name, axes in want_axes.items():
    assert tuple(specs[name]) == axes, name
  assert shapes["encoder/layers_0/attention/query/kernel"] == (4096, 64 * 64)
  assert shapes["decoder/layers_3/mlp/wi_1/kernel"] == (4096, 10240)
  assert shapes["encoder/relpos_bias/rel_embedding"] == (64, 32)


def test_original_t5_tree_is_tied_relu():
  specs, shapes = _specs(get_config("t5_11b"))
  assert "decoder/logits_dense/kernel" not in specs
  assert tuple(specs["encoder/layers_0/mlp/wi/kernel"]) == ("embed", "mlp")
  assert shapes["encoder/layers_0/mlp/wi/kernel"] == (1024, 65536)
  assert 10.5e9 < sum(int(np.prod(s)) for s in shapes.values()) < 11.5e9


def test_scanned_tree_has_layers_axis():
  specs, shapes = _specs(get_config("t5_1_1_base", scan_layers=True))
  assert tuple(specs["encoder/layers/attention/query/kernel"]) == ("layers", "embed", "joined_kv")
  assert shapes["decoder/layers/mlp/wo/kernel"] == (12, 2048, 768)


def test_registry_and_overrides():
  assert get_config("flan_t5_large") == get_config("t5_1_1_large")
  small = get_config("t5_small")
  assert small.mlp_activations == ("relu",) and small.logits_via_embedding
  b = get_config("bench_small")
  assert (b.vocab_size, b.emb_dim, b.num_encoder_layers, b.num_heads, b.head_dim,
          b.mlp_dim, b.dtype) == (384, 512, 8, 6, 64, 1024, "float32")
  assert get_config("t5_1_1_base", dropout_rate=0.1).dropout_rate == 0.1
  with pytest.raises(KeyError, match="unknown T5 config"):
    get_config("t5_huge")
  with pytest.raises(TypeError, match="unknown T5Config fields"):
    get_config("test_tiny", d_model=3)
  with pytest.raises(ValueError, match="mlp_activations"):
    T5Config(mlp_activations=("tanhh",))
  with pytest.raises(dataclasses.FrozenInstanceError):
    small.emb_dim = 3  # pytype: disable=not-writable
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(testing.tiny_params()))
  assert 1e5 < n < 1e6


def test_gin_picks_a_size():
  with gin.unlock_config():
    gin.parse_config(["dsbs.model.get_config.name = 't5_1_1_xl'",
                      "dsbs.model.get_config.dropout_rate = 0.1"])
  try:
    cfg = config_lib.get_config()
    assert cfg.emb_dim == 2048 and cfg.dropout_rate == 0.1
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def tiny():
  # two decoder layers (cache/scan paths), one encoder layer: faster compiles
  config = testing.tiny_config(num_encoder_layers=1)
  return config, testing.tiny_params(config, seed=0)


def test_padding_does_not_change_valid_logits(tiny):
  config, params = tiny
  batch = testing.random_batch(config, batch=3, input_len=10, target_len=6)
  padded = {k: np.pad(v, [(0, 0), (0, 5)]) for k, v in batch.items()}
  a, b = _logits(config, params, batch), _logits(config, params, padded)[:, :6]
  valid = batch["decoder_target_tokens"] > 0
  np.testing.assert_allclose(a[valid], b[valid], atol=1e-5)


def test_packed_equals_separate(tiny):
  config, params = tiny
  one = testing.random_batch(config, batch=2, input_len=6, target_len=5, seed=7)
  n_in = (one["encoder_input_tokens"] > 0).sum(1)
  n_tg = (one["decoder_target_tokens"] > 0).sum(1)
  def pack(key, lengths):
    return np.concatenate([one[key][i, :lengths[i]] for i in range(2)])[None]
  seg_in = np.concatenate([np.full(n_in[i], i + 1) for i in range(2)])[None]
  seg_tg = np.concatenate([np.full(n_tg[i], i + 1) for i in range(2)])[None]
  packed = {"encoder_input_tokens": pack("encoder_input_tokens", n_in),
            "decoder_input_tokens": pack("decoder_input_tokens", n_tg),
            "decoder_target_tokens": pack("decoder_target_tokens", n_tg),
            "encoder_segment_ids": seg_in.astype(np.int32),
            "decoder_segment_ids": seg_tg.astype(np.int32)}
  got = _logits(config, params, packed)[0]
  want = np.concatenate([_logits(config, params, one)[i, :n_tg[i]] for i in range(2)])
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_logits_float32_and_bfloat16_compute(tiny):
  config, params = tiny
  batch = testing.random_batch(config)
  a = testing.forward_fn(config)(params, batch)
  assert a.dtype == jnp.float32
  bf = _logits(config.replace(dtype="bfloat16"), params, batch)
  assert bf.dtype == np.float32
  valid = batch["decoder_target_tokens"] > 0
  err = np.abs(bf - np.asarray(a))[valid].max()
  assert 0 < err < 0.25 * np.abs(np.asarray(a)).max()  # really computed in bf16, still close


def test_dropout_only_when_enabled():
  config = testing.tiny_config(num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.3)
  params = testing.tiny_params(config)
  batch = testing.random_batch(config)
  drop = testing.forward_fn(config, enable_dropout=True)
  # 'rbg' keys compile much faster than threefry on CPU; semantics are the same
  d1 = drop(params, batch, {"dropout": jax.random.key(1, impl="rbg")})
  d2 = drop(params, batch, {"dropout": jax.random.key(2, impl="rbg")})
  assert not np.allclose(d1, d2)
  det = _logits(config, params, batch)  # same config, dropout disabled: deterministic
  np.testing.assert_array_equal(det, _logits(config, params, batch))
  assert not np.allclose(d1, det)


def test_remat_and_scan_give_same_loss_and_grads(tiny):
  config, params = tiny
  batch = testing.random_batch(config)

  def loss(cfg, p):
    logits = Transformer(cfg).apply({"params": p}, **batch, enable_dropout=False)
    tgt = jax.nn.one_hot(batch["decoder_target_tokens"], cfg.vocab_size)
    return -(jax.nn.log_softmax(logits) * tgt).sum()

  grad = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)
  l1, g1 = grad(config, params)
  scanned = param_tree.unflatten(param_tree.scan_layers(param_tree.flatten(params)))
  for other, other_params in ((config.replace(remat_policy="full"), params),
                              (config.replace(scan_layers=True, remat_policy="minimal"), scanned)):
    l2, g2 = grad(other, other_params)
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    g2 = param_tree.flatten(g2)
    if other.scan_layers:
      g2 = param_tree.unscan_layers(g2)
    for k, v in param_tree.flatten(g1).items():
      np.testing.assert_allclose(v, g2[k], atol=1e-4, err_msg=f"{other}: {k}")


def test_folded_mask_equals_select():
  """additive_mask(mask, bias) added to logits gives the softmax of where(mask, logits + bias)."""
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 3, 5, 7)) * 30, jnp.float32)
  bias = jnp.asarray(rng.normal(size=(1, 3, 5, 7)), jnp.float32)
  mask = jnp.asarray(rng.random((2, 1, 5, 7)) > 0.4).at[:, :, :, 0].set(True)
  want = jax.nn.softmax(jnp.where(mask, logits + bias, layers.NEG_INF), axis=-1)
  got = jax.nn.softmax(logits + layers.additive_mask(mask, bias), axis=-1)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-7)
  assert float(jnp.max(jnp.where(mask, 0.0, got))) == 0.0


def test_grouped_cross_attention_equals_repeated_keys():
  """g queries per input on one copy of the keys/values (beam search) = keys repeated g times."""
  rng = np.random.default_rng(1)
  att = layers.EncoderDecoderAttention(num_heads=2, head_dim=4)
  enc = jnp.asarray(rng.normal(size=(3, 6, 8)), jnp.float32)
  dec = jnp.asarray(rng.normal(size=(3 * 4, 1, 8)), jnp.float32)
  mask = jnp.asarray(rng.random((3, 1, 1, 6)) > 0.3).at[..., 0].set(True)
  params = att.init(jax.random.PRNGKey(0), dec, jnp.repeat(enc, 4, axis=0))["params"]

  def run(enc_in, mask_in):
    _, cache = att.apply({"params": params}, dec, enc_in, mask_in, decode=True,
                         mutable=["cache"])
    return att.apply({"params": params, **cache}, dec, enc_in, mask_in, decode=True,
                     mutable=["cache"])[0]

  grouped = run(enc, mask)
  repeated = run(jnp.repeat(enc, 4, axis=0), jnp.repeat(mask, 4, axis=0))
  np.testing.assert_allclose(np.asarray(grouped), np.asarray(repeated), atol=1e-6)
  with pytest.raises(ValueError, match="not a multiple"):
    att.apply({"params": params}, dec[:5], enc, mask, decode=True, mutable=["cache"])


def _mlp_reference(activations, x, wi, wo, keep, keep_prob):
  """The feed-forward block by autodiff: prod_i act_i(x @ wi_i), dropout, @ wo."""
  hidden = None
  for name, w in zip(activations, wi):
    h = layers.ACTIVATIONS[name][0](x @ w)
    hidden = h if hidden is None else hidden * h
  if keep is not None:
    hidden = jnp.where(jnp.broadcast_to(keep, hidden.shape), hidden / keep_prob, 0.0)
  return hidden @ wo


@pytest.mark.parametrize("activations", [("gelu", "linear"), ("relu",), ("gelu_exact", "silu")])
@pytest.mark.parametrize("dropout", [False, True], ids=["no_dropout", "dropout"])
def test_mlp_backward_equals_autodiff(activations, dropout):
  """The hand-written feed-forward backward equals autodiff, with and without dropout."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
  wi = tuple(jnp.asarray(rng.standard_normal((16, 24)) * 0.3, jnp.float32)
             for _ in activations)
  wo = jnp.asarray(rng.standard_normal((24, 16)) * 0.3, jnp.float32)
  keep_prob = 0.7
  keep = jnp.asarray(rng.random((2, 1, 24)) < keep_prob) if dropout else None

  def ours(x, wi, wo):
    return layers.mlp(activations, keep_prob, (), x, wi, wo, keep)

  def ref(x, wi, wo):
    return _mlp_reference(activations, x, wi, wo, keep, keep_prob)

  def grads(fn):
    return jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))), argnums=(0, 1, 2))(x, wi, wo)

  np.testing.assert_allclose(ours(x, wi, wo), ref(x, wi, wo), atol=1e-6)
  for got, want in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(ref))):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mlp_block_dropout_shares_a_mask_along_the_length():
  """MlpBlock's dropout: one draw per (sequence, mlp unit), the same at every position, kept
  values scaled by 1 / keep_prob; off when deterministic. Identity kernels expose the mask."""
  block = layers.MlpBlock(8, ("linear",), dropout_rate=0.5)
  x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 7, 8)) + 5.0, jnp.float32)
  eye = jnp.eye(8, dtype=jnp.float32)
  params = {"wi": {"kernel": eye}, "wo": {"kernel": eye}}
  np.testing.assert_allclose(block.apply({"params": params}, x), x, rtol=1e-6)
  out = np.asarray(block.apply({"params": params}, x, deterministic=False,
                               rngs={"dropout": jax.random.PRNGKey(3)}))
  dropped = out == 0
  assert dropped.any() and not dropped.all()
  assert (dropped == dropped[:, :1]).all()  # shared along the length axis
  np.testing.assert_allclose(out[~dropped], np.asarray(x)[~dropped] / 0.5, rtol=1e-6)

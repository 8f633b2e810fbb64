"""Parity with transformers' PyTorch T5: HF checkpoints load into our tree with equal logits,
and exported students reload in transformers with equal logits."""
import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top

from dsbs import testing  # pylint: disable=g-import-not-at-top
from dsbs.model import hf_format, param_tree


def _hf_logits(model_dir, batch):
  model = transformers.T5ForConditionalGeneration.from_pretrained(model_dir).eval()
  with torch.no_grad():
    out = model(input_ids=torch.tensor(batch["encoder_input_tokens"], dtype=torch.long),
                attention_mask=torch.tensor(batch["encoder_input_tokens"] > 0, dtype=torch.long),
                decoder_input_ids=torch.tensor(batch["decoder_input_tokens"], dtype=torch.long))
  return out.logits.numpy()


def _our_logits(config, params, batch):
  return np.asarray(testing.forward_fn(config)(params, batch))


@pytest.fixture(scope="module", params=["t5_1_1", "t5"])
def hf_dir(request, tmp_path_factory):
  return testing.make_hf_t5(str(tmp_path_factory.mktemp(request.param)), request.param, seed=3)


def test_untied_reference_really_untied(tmp_path):
  d = testing.make_hf_t5(str(tmp_path), "t5_1_1")
  tensors = load_file(os.path.join(d, "model.safetensors"))
  assert "lm_head.weight" in tensors
  assert not np.array_equal(tensors["lm_head.weight"], tensors["shared.weight"])


def test_config_from_hf(hf_dir):
  config, _ = hf_format.load_hf_checkpoint(hf_dir)
  with open(os.path.join(hf_dir, "config.json")) as f:
    raw = json.load(f)
  if raw["feed_forward_proj"] == "gated-gelu":
    assert config.mlp_activations == ("gelu", "linear") and not config.logits_via_embedding
  else:
    assert config.mlp_activations == ("relu",) and config.logits_via_embedding
  assert (config.emb_dim, config.num_heads, config.head_dim, config.mlp_dim) == (32, 4, 8, 48)
  assert (config.num_encoder_layers, config.num_decoder_layers) == (2, 3)
  assert config.relative_attention_num_buckets == 8
  assert config.relative_attention_max_distance == 20


def test_logits_match_transformers(hf_dir):
  config, params = hf_format.load_hf_checkpoint(hf_dir)
  # long enough inputs that relative distances reach the logarithmic buckets and the clip
  batch = testing.random_batch(config, batch=3, input_len=30, target_len=25, seed=1)
  ours = _our_logits(config, params, batch)
  ref = _hf_logits(hf_dir, batch)
  valid = batch["decoder_target_tokens"] > 0
  assert np.abs(ours - ref)[valid].max() < 1e-4
  assert np.abs(ref).max() > 0.2  # the comparison is not between two near-zero tensors


def test_scanned_layout_loads_to_same_logits(hf_dir):
  if "gelu" not in open(os.path.join(hf_dir, "config.json")).read():
    pytest.skip("layout conversion is variant-independent: checked on the T5 1.1 variant")
  config, params = hf_format.load_hf_checkpoint(hf_dir)
  scfg, sparams = hf_format.load_hf_checkpoint(hf_dir, scan_layers=True)
  assert "layers" in sparams["encoder"] and "layers_0" not in sparams["encoder"]
  batch = testing.random_batch(config, seed=2)
  np.testing.assert_allclose(_our_logits(scfg, sparams, batch), _our_logits(config, params, batch),
                             atol=1e-5)


def test_export_reloads_in_transformers(hf_dir, tmp_path):
  config, params = hf_format.load_hf_checkpoint(hf_dir)
  # perturb so the export is not a byte copy of what was loaded
  params = jax.tree.map(lambda x: x + 0.01 * np.sin(np.arange(x.size).reshape(x.shape)), params)
  out = str(tmp_path / "export")
  hf_format.export_hf(params, config, out)
  batch = testing.random_batch(config, seed=4)
  valid = batch["decoder_target_tokens"] > 0
  ref = _hf_logits(out, batch)
  assert np.abs(_our_logits(config, params, batch) - ref)[valid].max() < 1e-4
  config2, params2 = hf_format.load_hf_checkpoint(out)
  assert config2 == config
  flat, flat2 = param_tree.flatten(params), param_tree.flatten(params2)
  assert set(flat) == set(flat2)
  for k in flat:
    np.testing.assert_array_equal(np.asarray(flat[k], np.float32), flat2[k])


def test_export_writes_tokenizer(tmp_path):
  config = testing.tiny_config()
  spm = tmp_path / "fake.model"
  spm.write_bytes(b"\x00spm-bytes")
  hf_format.export_hf(testing.tiny_params(config), config, str(tmp_path / "out"), spm_path=str(spm),
               extra_ids=5)
  assert (tmp_path / "out" / "spiece.model").read_bytes() == b"\x00spm-bytes"
  tok = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
  assert tok["tokenizer_class"] == "T5Tokenizer" and tok["extra_ids"] == 5


def test_bad_checkpoints_raise(tmp_path, hf_dir):
  tensors = load_file(os.path.join(hf_dir, "model.safetensors"))
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "config.json").write_text(open(os.path.join(hf_dir, "config.json")).read())
  del tensors["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
  save_file(tensors, str(bad / "model.safetensors"))
  with pytest.raises(ValueError, match="encoder.block.1.layer.1.DenseReluDense.wo.weight"):
    hf_format.load_hf_checkpoint(str(bad))
  with pytest.raises(ValueError, match="feed_forward_proj"):
    hf_format.config_from_hf({"model_type": "t5", "feed_forward_proj": "gated-foo", "vocab_size": 8,
                       "d_model": 8, "num_heads": 1, "d_kv": 8, "d_ff": 8, "num_layers": 1})
  with pytest.raises(FileNotFoundError):
    hf_format.load_hf_checkpoint(str(tmp_path / "nowhere"))


def test_sharded_and_torch_bin_checkpoints_load(hf_dir, tmp_path):
  """`*.index.json` sharded safetensors and pytorch_model.bin give the same tree."""
  _, want = hf_format.load_hf_checkpoint(hf_dir)
  model = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir)
  sharded = tmp_path / "sharded"
  model.save_pretrained(str(sharded), max_shard_size="20KB")
  assert (sharded / "model.safetensors.index.json").exists()
  binary = tmp_path / "bin"
  binary.mkdir()
  (binary / "config.json").write_text(open(os.path.join(hf_dir, "config.json")).read())
  torch.save({k: v.clone() for k, v in model.state_dict().items()},
             str(binary / "pytorch_model.bin"))
  for d in (sharded, binary):
    _, got = hf_format.load_hf_checkpoint(str(d))
    flat_w, flat_g = param_tree.flatten(want), param_tree.flatten(got)
    assert set(flat_w) == set(flat_g)
    for k in flat_w:
      np.testing.assert_array_equal(flat_w[k], flat_g[k], err_msg=f"{d.name}: {k}")


def test_bfloat16_checkpoint_loads_as_float32(hf_dir, tmp_path):
  model = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).to(torch.bfloat16)
  model.save_pretrained(str(tmp_path / "bf16"))
  _, got = hf_format.load_hf_checkpoint(str(tmp_path / "bf16"))
  _, ref = hf_format.load_hf_checkpoint(hf_dir)
  g = param_tree.flatten(got)["encoder/layers_0/attention/query/kernel"]
  r = param_tree.flatten(ref)["encoder/layers_0/attention/query/kernel"]
  assert g.dtype == np.float32
  want = torch.tensor(r).to(torch.bfloat16).float().numpy()
  np.testing.assert_array_equal(g, want)

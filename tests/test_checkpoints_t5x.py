"""T5X (msgpack + tensorstore zarr) and Orbax checkpoints load into our tree; our writer's
output reads back bit-exactly."""
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts
from flax import serialization

from dsbs import testing
from dsbs.model import Transformer, checkpoint_formats, param_tree, t5x_format


def _hand_written_t5x(ckpt_dir, params, inline=("decoder/decoder_norm/scale",)):
  """A checkpoint in T5X's layout, written here independently of dsbs.model.t5x_format: the old
  'optimizer' wrapper, tensorstore zarr arrays for most leaves, some leaves inline."""
  os.makedirs(ckpt_dir)
  target = {}
  for name, value in param_tree.flatten(params).items():
    value = np.asarray(value, np.float32)
    if name in inline:
      leaf = value
    else:
      rel = "target." + name.replace("/", ".")
      meta = {"chunks": list(value.shape), "compressor": {"id": "gzip"},
              "shape": list(value.shape), "dtype": "<f4"}
      ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": os.path.join(ckpt_dir, rel)},
               "metadata": meta}, create=True).result().write(value).result()
      leaf = {"driver": "zarr", "dtype": "float32", "kvstore": {"driver": "file", "path": rel},
              "metadata": meta}
    node = target
    for part in name.split("/")[:-1]:
      node = node.setdefault(part, {})
    node[name.split("/")[-1]] = leaf
  contents = {"version": 3, "optimizer": {"target": target, "state": {
      "step": np.int32(7), "param_states": {"token_embedder": {"embedding": {"v": np.zeros(2)}}}}}}
  with open(os.path.join(ckpt_dir, "checkpoint"), "wb") as f:
    f.write(serialization.msgpack_serialize(contents))


def _assert_same(a, b):
  fa, fb = param_tree.flatten(a), param_tree.flatten(b)
  assert set(fa) == set(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


def test_reads_hand_written_t5x_layout(tmp_path):
  config = testing.tiny_config()
  params = testing.tiny_params(config, seed=3)
  _hand_written_t5x(str(tmp_path / "run" / "checkpoint_7"), params)
  os.makedirs(tmp_path / "run" / "checkpoint_3")  # older step: the newest must be chosen
  loaded = t5x_format.load_t5x_checkpoint(str(tmp_path / "run"), config)
  _assert_same(loaded, params)
  batch = testing.random_batch(config)
  model = Transformer(config)
  np.testing.assert_array_equal(model.apply({"params": loaded}, **batch, enable_dropout=False),
                                model.apply({"params": params}, **batch, enable_dropout=False))


def test_write_then_read_roundtrip_and_layouts(tmp_path):
  config = testing.tiny_config()
  params = testing.tiny_params(config, seed=4)
  ckpt = t5x_format.write_t5x_checkpoint(params, str(tmp_path), step=12)
  assert ckpt.endswith("checkpoint_12")
  assert os.path.isdir(os.path.join(ckpt, "target.encoder.layers_0.attention.query.kernel"))
  with open(os.path.join(ckpt, "checkpoint"), "rb") as f:
    contents = serialization.msgpack_restore(f.read())
  # T5X's own layout: the state dict sits under 'optimizer' (t5x.checkpoints reads it there).
  state = contents["optimizer"]
  assert contents["version"] == 3 and int(state["state"]["step"]) == 12
  spec = state["target"]["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  assert spec["kvstore"] == {"driver": "file", "path": "target.encoder.layers_0.attention.query.kernel"}
  _assert_same(t5x_format.load_t5x_checkpoint(ckpt, config), params)
  # the same checkpoint read into a scanned-layer model
  scanned = t5x_format.load_t5x_checkpoint(ckpt, config.replace(scan_layers=True))
  assert scanned["encoder"]["layers"]["attention"]["query"]["kernel"].shape[0] == 2
  _assert_same(param_tree.unflatten(param_tree.unscan_layers(param_tree.flatten(scanned))), params)


def test_orbax_pytree_checkpoint(tmp_path):
  config = testing.tiny_config()
  params = testing.tiny_params(config, seed=5)
  ckptr = ocp.PyTreeCheckpointer()
  tree = {"target": jax.tree.map(np.asarray, params), "state": {"step": np.int32(5)}}
  path = str(tmp_path / "orbax" / "checkpoint_5")
  ckptr.save(path, tree)
  _assert_same(t5x_format.load_t5x_checkpoint(path, config), params)
  # T5X through Orbax: checkpoint_N/state/<pytree>; the run dir resolves to its newest step
  ckptr.save(str(tmp_path / "run" / "checkpoint_9" / "state"), tree)
  _assert_same(t5x_format.load_t5x_checkpoint(str(tmp_path / "run"), config), params)


def test_mismatched_config_and_missing_dirs_raise(tmp_path):
  config = testing.tiny_config()
  ckpt = t5x_format.write_t5x_checkpoint(testing.tiny_params(config), str(tmp_path), step=1)
  with pytest.raises(ValueError, match="shape mismatches"):
    t5x_format.load_t5x_checkpoint(ckpt, config.replace(mlp_dim=64))
  with pytest.raises(ValueError, match="missing"):
    t5x_format.load_t5x_checkpoint(ckpt, config.replace(num_encoder_layers=3))
  with pytest.raises(FileNotFoundError):
    t5x_format.load_t5x_checkpoint(str(tmp_path / "absent"), config)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="checkpoint_N"):
    t5x_format.load_t5x_checkpoint(str(empty), config)


def test_gcs_spec_is_rebased_to_the_bucket_read():
  spec = {"driver": "zarr", "kvstore": {"driver": "gcs", "bucket": "t5x-dummy-bucket"},
          "path": "target.encoder.encoder_norm.scale", "metadata": {}}
  full = t5x_format._absolute_spec(  # pylint: disable=protected-access
      spec, "gs://my-bucket/runs/x/checkpoint_100")
  assert full["kvstore"] == {"driver": "gcs", "bucket": "my-bucket",
                             "path": "runs/x/checkpoint_100/target.encoder.encoder_norm.scale"}
  assert "path" not in full


def test_load_checkpoint_dispatch(tmp_path):
  config = testing.tiny_config()
  params = testing.tiny_params(config, seed=6)
  out = checkpoint_formats.export(params, config, str(tmp_path / "t5x"), fmt="t5x", step=2)
  assert checkpoint_formats.detect_format(out) == "t5x"
  with pytest.raises(ValueError, match="pass config="):
    checkpoint_formats.load_hf_or_t5x(out)
  cfg, loaded = checkpoint_formats.load_hf_or_t5x(str(tmp_path / "t5x"), config)
  assert cfg == config
  _assert_same(loaded, params)
  hf_dir = checkpoint_formats.export(params, config, str(tmp_path / "hf"), fmt="hf")
  assert checkpoint_formats.detect_format(hf_dir) == "hf"
  cfg, loaded = checkpoint_formats.load_hf_or_t5x(hf_dir)
  assert cfg == config
  _assert_same(loaded, params)

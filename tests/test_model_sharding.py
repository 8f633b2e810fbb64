"""Sharded init and forward on 8 fake CPU devices match one device (meshes 8x1 and 2x4, with
and without FSDP). Runs in a subprocess: the device count is fixed when jax first starts."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest
from flax import linen as nn

from dsbs.model import partitioning as P

_SCRIPT = textwrap.dedent("""
    import json, os, re
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp, numpy as np
    from flax import linen as nn
    from dsbs import testing
    from dsbs.model import Transformer, init_params
    from dsbs.model import partitioning as P

    assert jax.device_count() == 8, jax.devices()
    config = testing.tiny_config(num_encoder_layers=1, num_decoder_layers=1)
    model = Transformer(config)
    batch = testing.random_batch(config, batch=8, input_len=12, target_len=8)
    rng = jax.random.PRNGKey(0)
    init = lambda r: init_params(config, r)
    ref_params = nn.unbox(jax.jit(init)(rng))
    ref = np.asarray(testing.forward_fn(config)(ref_params, batch))
    drop_model = Transformer(config.replace(dropout_rate=0.3))
    def loss(p, b):  # with dropout: the feed-forward block's hand-written backward
      logits = drop_model.apply({"params": p}, **b, enable_dropout=True,
                                rngs={"dropout": jax.random.PRNGKey(5)})
      return jnp.mean(jnp.sin(logits))
    grad = jax.jit(jax.grad(loss))
    ref_grads = grad(ref_params, batch)
    out = {}
    for data, model_axis, fsdp in ((8, 1, False), (2, 4, True)):
      mesh = P.make_mesh(data, model_axis)
      rules = P.logical_axis_rules(fsdp=fsdp)
      abstract = jax.eval_shape(init, rng)
      shardings = P.param_shardings(abstract, mesh, rules)
      params = nn.unbox(jax.jit(init, out_shardings=shardings)(rng))
      specs = {"/".join(str(getattr(k, "key", k)) for k in path): list(v.sharding.spec)
               for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
      inputs = {k: jax.device_put(v, P.data_sharding(mesh, v.ndim)) for k, v in batch.items()}
      def fwd(p, b):
        return model.apply({"params": p}, **b, enable_dropout=False)
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        logits = jax.jit(fwd)(params, inputs)
        grads = grad(params, inputs)
        hlos = (jax.jit(fwd).lower(params, inputs).as_text(), grad.lower(params, inputs).as_text())
      # sharding constraints on the [batch, length, mlp] activations (and their gradients),
      # without dropout (forward) and with it (training)
      mlp_constraints = [len(re.findall(r'sharding_constraint .*\[\{"data"\}, \{\}, '
                                        r'\{"model"\}\]> : tensor<8x\d+x128xf32>', hlo))
                         for hlo in hlos]
      key = f"{mesh.shape['data']}x{mesh.shape['model']}{'-fsdp' if fsdp else ''}"
      out[key] = {"max_err": float(np.abs(np.asarray(logits) - ref).max()),
                  "init_equal": all(bool(np.array_equal(a, b)) for a, b in zip(
                      jax.tree.leaves(params), jax.tree.leaves(ref_params))),
                  "grad_err": max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                                  for a, b in zip(jax.tree.leaves(grads),
                                                  jax.tree.leaves(ref_grads))),
                  "mlp_constraints": mlp_constraints,
                  "logits_spec": list(logits.sharding.spec), "specs": specs}
    # 2x4 without FSDP: shardings only (no compile needed)
    mesh = P.make_mesh(-1, 4)
    abstract = jax.eval_shape(init, rng)
    shardings = nn.unbox(P.param_shardings(abstract, mesh, P.logical_axis_rules()))
    out["2x4"] = {"specs": {"/".join(str(getattr(k, "key", k)) for k in path): list(v.spec)
                            for path, v in jax.tree_util.tree_flatten_with_path(
                                shardings, is_leaf=lambda x: hasattr(x, "spec"))[0]}}
    print("RESULT" + json.dumps(out))
""")


def test_sharded_forward_matches_single_device():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
  res = json.loads(line[len("RESULT"):])
  assert set(res) == {"8x1", "2x4", "2x4-fsdp"}
  for key in ("8x1", "2x4-fsdp"):
    assert res[key]["max_err"] < 1e-5, (key, res[key]["max_err"])
    assert res[key]["init_equal"], key
    assert res[key]["grad_err"] < 1e-5, (key, res[key]["grad_err"])
    # one encoder and one decoder MLP: forward; forward and backward with dropout
    no_dropout, dropout = res[key]["mlp_constraints"]
    assert no_dropout >= 2 and dropout >= 4, (key, res[key]["mlp_constraints"])
  s = res["2x4"]["specs"]
  assert s["encoder/layers_0/attention/query/kernel"] == [None, "model"]
  assert s["encoder/layers_0/mlp/wo/kernel"] == ["model", None]
  assert s["token_embedder/embedding"][0] == "model"
  f = res["2x4-fsdp"]["specs"]
  assert f["encoder/layers_0/attention/query/kernel"] == ["data", "model"]
  assert f["decoder/layers_0/mlp/wo/kernel"] == ["model", "data"]
  assert f["encoder/encoder_norm/scale"] == ["data"]
  assert res["8x1"]["logits_spec"][0] == "data"


def test_rules_table_and_mesh_errors():
  rules = dict(P.logical_axis_rules())
  assert rules["batch"] == "data" and rules["mlp"] == "model" and rules["embed"] is None
  fsdp = P.logical_axis_rules(fsdp=True)
  assert nn.logical_to_mesh_axes(("batch", "length", "embed"), fsdp) == \
      jax.sharding.PartitionSpec("data", None, None)  # 'embed' falls through: 'data' is taken
  assert nn.logical_to_mesh_axes(("embed", "mlp"), fsdp) == jax.sharding.PartitionSpec("data",
                                                                                   "model")
  with pytest.raises(ValueError, match="devices"):
    P.make_mesh(data=3, model=1)
  with pytest.raises(ValueError, match="at most one"):
    P.make_mesh(data=-1, model=-1)

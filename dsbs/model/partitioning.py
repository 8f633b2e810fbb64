"""Logical-to-mesh sharding: one table of rules, a mesh builder, parameter shardings.

Code names array axes logically ('batch', 'embed', 'mlp', ...); this table maps them onto the
mesh axes ('data', 'model'). With `fsdp=True` parameters are additionally sharded over 'data'
along their 'embed' axis (ZeRO-3 style: weights gathered per layer in the forward pass).

Typical use in a trainer (shape first, then initialise directly into the shards):

    mesh = make_mesh(data=-1, model=1)
    rules = logical_axis_rules(fsdp=True)
    abstract = jax.eval_shape(init_fn, rng)           # boxed params with logical names
    shardings = param_shardings(abstract, mesh, rules)
    params = jax.jit(init_fn, out_shardings=shardings)(rng)
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = tuple[tuple[str, Any], ...]

DATA, MODEL = "data", "model"


def logical_axis_rules(fsdp: bool = False) -> Rules:
  """THE table: logical axis name -> mesh axis (None = replicated).

  Activations: 'batch' over data; heads / mlp / vocab / joined_kv over model (Megatron-style
  tensor parallelism). Parameters: 'embed' over data only when `fsdp` (activations' 'embed'
  stays replicated because 'batch' already occupies the data axis; flax skips a rule whose mesh
  axis is already used in the same spec and falls through to the next rule for that name).
  """
  rules = [
      ("batch", DATA),
      ("vocab", MODEL),
      ("heads", MODEL),
      ("kv", None),
      ("joined_kv", MODEL),
      ("mlp", MODEL),
      ("length", None),
      ("relpos_buckets", None),
      ("layers", None),
  ]
  if fsdp:
    rules.append(("embed", DATA))
  rules.append(("embed", None))
  return tuple(rules)


def make_mesh(data: int = -1, model: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'model') mesh; -1 on one axis takes the rest of the devices."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if data == -1 and model == -1:
    raise ValueError("make_mesh: at most one axis may be -1")
  if data == -1:
    if n % model:
      raise ValueError(f"make_mesh: {n} devices do not divide into model={model}")
    data = n // model
  if model == -1:
    if n % data:
      raise ValueError(f"make_mesh: {n} devices do not divide into data={data}")
    model = n // data
  if data * model != n:
    raise ValueError(f"make_mesh: data*model = {data}*{model} != {n} devices")
  try:  # topology-aware placement on TPU/GPU slices
    grid = mesh_utils.create_device_mesh((data, model), devices=devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(data, model)
  return Mesh(grid, (DATA, MODEL))


def param_shardings(abstract_params: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for a tree of boxed (nn.LogicallyPartitioned) parameters or their shapes.

  Unboxed leaves (no logical names) are replicated. Each flax box maps to one NamedSharding, so
  the result is a pytree prefix of the boxed tree and the exact structure of `nn.unbox(params)`:
  it serves as `out_shardings` for an init returning either.
  """
  specs = nn.get_partition_spec(abstract_params)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def data_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Sharding of an input batch: leading axis over 'data', the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA, *([None] * (ndim - 1))))

"""The built-in runner's train state: what it holds, its shapes and shardings, and its init.

Shape first, as big_vision does it: `jax.eval_shape` of the initialiser gives the parameters
boxed with their logical axis names -> their shardings on the mesh -> the optimizer state's
shapes and shardings -> one `jax.jit(init, out_shardings=...)` that creates the state directly
in its shards. `dsbs.train` and the benchmark (`dsbs.bench.harness`) both build it here.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dsbs.model import network, partitioning
from dsbs.model.config import T5Config


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class StateLayout:
  """The train state's abstract trees (ShapeDtypeStructs), their shardings, and `init`:
  rng -> TrainState placed on `shardings` (jitted; call it under `jax.set_mesh(mesh)`)."""
  abstract_params: Any
  abstract_opt_state: Any
  param_shardings: Any
  opt_shardings: Any
  shardings: TrainState
  init: Callable[[jax.Array], TrainState]


def build(model_cfg: T5Config, tx: optax.GradientTransformation, mesh: Mesh,
          rules: partitioning.Rules, *, input_len: int, target_len: int,
          start_step: int = 0) -> StateLayout:
  """The state layout of `model_cfg` trained by `tx` on `mesh` under `rules`.

  Parameters are sharded by their logical axis names. Optimizer leaves shaped like their
  parameter share its sharding; factored Adafactor statistics (v_row, v_col) and counters are
  small and replicated. `init` starts the step counter at `start_step`.
  """
  replicated = NamedSharding(mesh, P())
  init_boxed = functools.partial(network.init_params, model_cfg, input_len=input_len,
                                 target_len=target_len)
  boxed = jax.eval_shape(init_boxed, jax.random.key(0))
  param_shardings = partitioning.param_shardings(boxed, mesh, rules)
  abstract_params = nn.unbox(boxed)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  opt_shardings = optax.tree_map_params(
      tx, lambda leaf, s, p: s if leaf.shape == p.shape else replicated, abstract_opt,
      param_shardings, abstract_params, transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, NamedSharding))
  shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings)

  @functools.partial(jax.jit, out_shardings=shardings)
  def init(rng):
    params = nn.unbox(init_boxed(rng))
    return TrainState(step=jnp.asarray(start_step, jnp.int32), params=params,
                      opt_state=tx.init(params))

  return StateLayout(abstract_params, abstract_opt, param_shardings, opt_shardings, shardings,
                     init)

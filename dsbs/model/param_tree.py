"""Parameter-tree plumbing shared by the checkpoint readers and writers.

Flat '/'-joined names ('encoder/layers_0/attention/query/kernel') are the lingua franca between
our nested Flax tree, T5X checkpoints and HuggingFace state dicts. Also: checking a loaded tree
against the tree a config expects, and converting between per-layer (`layers_0`, ...) and
scanned (`layers` with a leading layer axis) layouts.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np
from flax import linen as nn

from dsbs.model.config import T5Config
from dsbs.model.network import init_params


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dict -> {'a/b/c': leaf}."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      out.update(flatten(value, name))
    else:
      out[name] = value
  return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{'a/b/c': leaf} -> nested dict."""
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    node = tree
    parts = name.split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  return tree


def expected_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
  """Flat name -> shape of every parameter `config` defines (no compute: eval_shape)."""
  abstract = jax.eval_shape(lambda rng: init_params(config, rng), jax.random.PRNGKey(0))
  return {k: tuple(v.shape) for k, v in flatten(nn.unbox(abstract)).items()}


def check_tree(flat: Mapping[str, Any], config: T5Config, source: str) -> None:
  """Raises ValueError naming `source` unless `flat` has exactly the config's names and shapes."""
  want = expected_shapes(config)
  missing = sorted(set(want) - set(flat))
  extra = sorted(set(flat) - set(want))
  bad = [f"{k}: got {tuple(np.shape(flat[k]))}, want {want[k]}" for k in sorted(want)
         if k in flat and tuple(np.shape(flat[k])) != want[k]]
  problems = []
  if missing:
    problems.append(f"missing {len(missing)} params, e.g. {missing[:5]}")
  if extra:
    problems.append(f"unexpected {len(extra)} params, e.g. {extra[:5]}")
  if bad:
    problems.append(f"{len(bad)} shape mismatches, e.g. {bad[:5]}")
  if problems:
    raise ValueError(f"{source}: parameter tree does not match the T5 config: " + "; ".join(problems))


_LAYER = re.compile(r"^(encoder|decoder)/layers_(\d+)/(.+)$")
_SCANNED = re.compile(r"^(encoder|decoder)/layers/(.+)$")


def scan_layers(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Per-layer names -> scanned layout: stacks layers_i along a new leading axis."""
  out: dict[str, Any] = {}
  groups: dict[tuple[str, str], dict[int, Any]] = {}
  for name, value in flat.items():
    m = _LAYER.match(name)
    if m:
      groups.setdefault((m.group(1), m.group(3)), {})[int(m.group(2))] = value
    else:
      out[name] = value
  for (stack, rest), by_index in groups.items():
    if sorted(by_index) != list(range(len(by_index))):
      raise ValueError(f"{stack}/layers_*/{rest}: layer indices not contiguous: {sorted(by_index)}")
    out[f"{stack}/layers/{rest}"] = np.stack([np.asarray(by_index[i]) for i in range(len(by_index))])
  return out


def unscan_layers(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Scanned layout -> per-layer names (inverse of `scan_layers`)."""
  out: dict[str, Any] = {}
  for name, value in flat.items():
    m = _SCANNED.match(name)
    if m:
      value = np.asarray(value)
      for i in range(value.shape[0]):
        out[f"{m.group(1)}/layers_{i}/{m.group(2)}"] = value[i]
    else:
      out[name] = value
  return out


def to_config_layout(flat: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
  """Per-layer or scanned flat params -> the layout `config.scan_layers` asks for."""
  scanned_in = any(_SCANNED.match(k) for k in flat)
  if config.scan_layers and not scanned_in:
    return scan_layers(flat)
  if not config.scan_layers and scanned_in:
    return unscan_layers(flat)
  return dict(flat)

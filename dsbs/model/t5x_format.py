"""T5X checkpoints <-> our parameter tree (read and write), local or gs://.

Supported layouts:

1. T5X's native (tensorstore) checkpoint, as written by `t5x.checkpoints.Checkpointer`:

       <dir>/checkpoint_<step>/checkpoint          msgpack (flax.serialization) of the state dict
       <dir>/checkpoint_<step>/target.encoder.layers_0.attention.key.kernel/   a zarr array
       ...                                          (one directory per tensorstore-written leaf)

   The msgpack holds `{'version': 3, 'optimizer'?: {'target': ..., 'state': ...}}` (older
   files wrap the state dict in 'optimizer'; newer ones hold 'target' / 'state' at the top).
   Each leaf of 'target' is either an inline numpy array (small params) or a tensorstore spec
   dict `{'driver': 'zarr', 'kvstore': {'driver': 'file', 'path': 'target.a.b.kernel'},
   'metadata': {...}}` with a path relative to the checkpoint dir. On gs://, T5X writes
   `{'kvstore': {'driver': 'gcs', 'bucket': 't5x-dummy-bucket'}, 'path': ...}`; the bucket
   and prefix are rewritten from the directory being read, so checkpoints move between buckets.

2. Orbax PyTree checkpoints: `checkpoint_N/state/` (what T5X writes when it checkpoints through
   Orbax) or any directory Orbax can `restore`; the 'target' subtree if present, else
   'params', else the whole tree.

Only the model parameters (`target`) are read; optimizer state is ignored. `write_t5x_checkpoint`
writes layout 1 (zarr + gzip, float32, version 3) with `optimizer/target` and
`optimizer/state/step`, where T5X's restore looks; restoring it in
T5X for evaluation needs the optimizer slots skipped, e.g.
`utils.RestoreCheckpointConfig(..., strict=False)` or an `assignment_map` dropping
`state/param_states/.*` (see README).
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Mapping

import numpy as np
from flax import linen as nn
from flax import serialization

from dsbs import fileio
from dsbs.model import param_tree
from dsbs.model.config import T5Config

T5X_VERSION = 3
_CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")


def _is_spec(x: Any) -> bool:
  return isinstance(x, Mapping) and "driver" in x and ("kvstore" in x or "path" in x)


def latest_checkpoint_dir(path: str) -> str:
  """`path` itself if it is a checkpoint_N dir (or has a checkpoint file), else its newest child."""
  path = path.rstrip("/")
  if _CHECKPOINT_DIR.match(os.path.basename(path)) or fileio.exists(f"{path}/checkpoint"):
    return path
  if not fileio.exists(path):
    raise FileNotFoundError(f"{path}: no such checkpoint directory")
  steps = sorted((int(m.group(1)), name) for name in fileio.listdir(path)
                 if (m := _CHECKPOINT_DIR.match(name.rstrip("/"))))
  if not steps:
    raise FileNotFoundError(f"{path}: neither a checkpoint_N directory nor a parent of one")
  return f"{path}/{steps[-1][1].rstrip('/')}"


def _absolute_spec(spec: Mapping[str, Any], ckpt_dir: str) -> dict[str, Any]:
  """Makes a checkpoint-relative tensorstore spec point into `ckpt_dir` (local or gs://)."""
  spec = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in spec.items()}
  kvstore = dict(spec.get("kvstore") or {})
  rel = kvstore.pop("path", None) or spec.pop("path", None)
  spec.pop("path", None)
  if rel is None:
    raise ValueError(f"{ckpt_dir}/checkpoint: tensorstore spec without a path: {spec}")
  m = re.fullmatch(r"gs://([^/]+)/?(.*)", ckpt_dir)
  if m:
    kvstore = {"driver": "gcs", "bucket": m.group(1), "path": f"{m.group(2)}/{rel}".lstrip("/")}
  else:
    kvstore = {"driver": "file", "path": os.path.join(ckpt_dir, rel)}
  spec["kvstore"] = kvstore
  return spec


def _read_spec(spec: Mapping[str, Any], ckpt_dir: str, name: str) -> np.ndarray:
  # tensorstore (~2 s to import) only when a T5X checkpoint is read or written
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  full = _absolute_spec(spec, ckpt_dir)
  try:
    arr = ts.open(full, open=True, read=True).result().read().result()
  except Exception as e:  # tensorstore raises ValueError / RuntimeError subclasses
    raise ValueError(f"{ckpt_dir}: cannot read {name} from {full['kvstore']}: {e}") from e
  return np.asarray(arr, np.float32)


def _read_msgpack_checkpoint(ckpt_dir: str) -> dict[str, Any]:
  with fileio.open_bytes(f"{ckpt_dir}/checkpoint") as f:
    contents = serialization.msgpack_restore(f.read())
  state = contents.get("optimizer", contents)
  if "target" not in state:
    raise ValueError(f"{ckpt_dir}/checkpoint: no 'target' in the state dict "
                     f"(top-level keys {sorted(contents)})")
  out: dict[str, Any] = {}  # spec dicts are leaves here, so no generic flatten()

  def walk(node: Any, prefix: str) -> None:
    if _is_spec(node):
      out[prefix] = _read_spec(node, ckpt_dir, prefix)
    elif isinstance(node, Mapping):
      for k, v in node.items():
        walk(v, f"{prefix}/{k}" if prefix else str(k))
    else:
      out[prefix] = np.asarray(node, np.float32)

  walk(state["target"], "")
  return out


def _read_orbax_checkpoint(ckpt_dir: str) -> dict[str, Any]:
  # Orbax only for T5X checkpoints in its layout: evaluation of HF dirs does without it
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  tree = ocp.PyTreeCheckpointer().restore(ckpt_dir)
  for key in ("target", "params"):
    if isinstance(tree, Mapping) and key in tree:
      tree = tree[key]
      break
  if isinstance(tree, Mapping) and set(tree) == {"params"}:
    tree = tree["params"]
  return {k: np.asarray(v, np.float32) for k, v in param_tree.flatten(tree).items()}


def load_t5x_checkpoint(path: str, config: T5Config) -> dict[str, Any]:
  """Reads the model parameters of a T5X or Orbax checkpoint into our (nested numpy) tree.

  `path` is a checkpoint_N dir or a parent holding several (the newest is read). The tree is
  converted to `config`'s layer layout (scanned or not) and checked against its shapes.
  """
  ckpt_dir = latest_checkpoint_dir(path)
  if fileio.exists(f"{ckpt_dir}/checkpoint"):
    flat = _read_msgpack_checkpoint(ckpt_dir)
  elif fileio.exists(f"{ckpt_dir}/state"):  # T5X with Orbax: checkpoint_N/state holds the PyTree
    flat = _read_orbax_checkpoint(f"{ckpt_dir}/state")
  else:
    flat = _read_orbax_checkpoint(ckpt_dir)
  flat = param_tree.to_config_layout(flat, config)
  param_tree.check_tree(flat, config, ckpt_dir)
  return param_tree.unflatten(flat)


def _chunks(shape: tuple[int, ...], target_elements: int = 16 * 1024 * 1024) -> list[int]:
  """Chunk shape dividing `shape`, at most `target_elements` (64 MiB of float32) per chunk."""
  chunk = list(shape)
  while int(np.prod(chunk)) > target_elements:
    i = int(np.argmax(chunk))
    divisors = [d for d in range(chunk[i] - 1, 0, -1) if shape[i] % d == 0]
    chunk[i] = divisors[0]
  return chunk or []


def write_t5x_checkpoint(params: Mapping[str, Any], out_dir: str, step: int) -> str:
  """Writes `params` as `<out_dir>/checkpoint_<step>` in T5X's native layout; returns that dir.

  Every parameter becomes a gzip zarr array written with tensorstore (the 'gcs' driver for
  gs://), referenced from the msgpack `checkpoint` file by a relative spec, as T5X writes them.
  """
  import tensorstore as ts  # pylint: disable=g-import-not-at-top  (see _read_spec)
  flat = {k: np.asarray(v, np.float32) for k, v in
          param_tree.flatten(nn.unbox(dict(params))).items()}
  ckpt_dir = f"{out_dir.rstrip('/')}/checkpoint_{step}"
  remote = fileio.is_remote(ckpt_dir)
  fileio.makedirs(ckpt_dir)
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    ts_name = "target." + name.replace("/", ".")
    metadata = {"compressor": {"id": "gzip"}, "shape": list(value.shape),
                "chunks": _chunks(value.shape), "dtype": "<f4"}
    rel_spec: dict[str, Any] = {"driver": "zarr", "dtype": "float32", "metadata": metadata}
    if remote:
      rel_spec["kvstore"] = {"driver": "gcs", "bucket": "t5x-dummy-bucket"}
      rel_spec["path"] = ts_name
    else:
      rel_spec["kvstore"] = {"driver": "file", "path": ts_name}
    store = ts.open(_absolute_spec(rel_spec, ckpt_dir), create=True, delete_existing=True).result()
    store.write(value).result()
    node = tree
    parts = name.split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = rel_spec
  # T5X's restore looks the state dict up under 'optimizer' (its checkpoints.py reads
  # contents['optimizer'] whatever the version), so the exported tree goes there.
  contents = {"version": T5X_VERSION,
              "optimizer": {"target": tree, "state": {"step": np.asarray(step, np.int32)}}}
  data = serialization.msgpack_serialize(contents)
  if remote:
    with fileio.open_bytes(f"{ckpt_dir}/checkpoint", "wb") as f:
      f.write(data)
  else:  # write-then-rename: a reader never sees a half-written checkpoint file
    fd, tmp = tempfile.mkstemp(dir=ckpt_dir, prefix=".tmp-checkpoint")
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, os.path.join(ckpt_dir, "checkpoint"))
  return ckpt_dir

"""HuggingFace T5 checkpoints <-> our parameter tree (import and export).

Reads a `save_pretrained` directory (local or gs://): config.json plus model.safetensors,
pytorch_model.bin, or their sharded `*.index.json` forms. Writes config.json +
model.safetensors (+ spiece.model and tokenizer_config.json for SentencePiece vocabularies) that
`transformers.T5ForConditionalGeneration.from_pretrained` loads. torch is imported only for
`.bin` files.

HF linear weights are [out, in]; ours are [in, out] (T5X's flattened kernels), so every dense
weight is transposed. Relative-position tables are [buckets, heads] in HF, [heads, buckets] here.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Mapping

import numpy as np
from flax import linen as nn
from safetensors.numpy import load_file, save_file

from dsbs import fileio
from dsbs.model import param_tree
from dsbs.model.config import T5Config

_ACT_FROM_HF = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact",
                "relu": "relu", "silu": "silu", "swish": "silu"}
_ACT_TO_HF = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu", "silu": "silu"}


# ---------------------------------------------------------------------------------------------
# config.json <-> T5Config
# ---------------------------------------------------------------------------------------------


def config_from_hf(hf: Mapping[str, Any], source: str = "config.json", **overrides: Any) -> T5Config:
  """Builds a T5Config from HF's config.json dict (feed_forward_proj, tie_word_embeddings, ...)."""
  if hf.get("model_type", "t5") not in ("t5", "mt5", "umt5"):
    raise ValueError(f"{source}: model_type {hf.get('model_type')!r} is not a T5 model")
  if hf.get("model_type") == "umt5":
    raise ValueError(f"{source}: umT5 (per-layer relative biases) is not supported")
  proj = hf.get("feed_forward_proj", "relu")
  parts = proj.split("-")
  gated = parts[0] == "gated"
  act_name = "gelu_new" if proj == "gated-gelu" else parts[-1]
  if act_name not in _ACT_FROM_HF or len(parts) > 2 or (len(parts) == 2 and not gated):
    raise ValueError(f"{source}: field feed_forward_proj={proj!r} is not supported")
  act = _ACT_FROM_HF[act_name]
  try:
    fields = dict(
        vocab_size=int(hf["vocab_size"]), emb_dim=int(hf["d_model"]),
        num_heads=int(hf["num_heads"]), head_dim=int(hf["d_kv"]), mlp_dim=int(hf["d_ff"]),
        num_encoder_layers=int(hf["num_layers"]),
        num_decoder_layers=int(hf.get("num_decoder_layers") or hf["num_layers"]),
        mlp_activations=(act, "linear") if gated else (act,),
        dropout_rate=float(hf.get("dropout_rate", 0.0)),
        # Original T5 ties the head and scales by d_model**-0.5; T5 1.1 does neither. Files
        # written by transformers>=5 say tie_word_embeddings=true for every T5 and record the
        # scaling as scale_decoder_outputs; whether the head is really tied is decided by the
        # tensors (lm_head.weight vs shared.weight) when loading.
        logits_via_embedding=bool(hf.get("scale_decoder_outputs",
                                         hf.get("tie_word_embeddings", True))),
        relative_attention_num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(hf.get("relative_attention_max_distance", 128)),
        layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
        dtype="float32",
    )
  except KeyError as e:
    raise ValueError(f"{source}: missing field {e.args[0]!r}") from None
  fields.update(overrides)
  return T5Config(**fields)


def config_to_hf(config: T5Config) -> dict[str, Any]:
  """T5Config -> HF config.json dict."""
  acts = config.mlp_activations
  if len(acts) == 2 and acts[1] == "linear" and acts[0] in _ACT_TO_HF and acts[0] != "gelu_exact":
    proj = "gated-gelu" if acts[0] == "gelu" else f"gated-{_ACT_TO_HF[acts[0]]}"
  elif len(acts) == 1 and acts[0] in _ACT_TO_HF:
    proj = "gelu_new" if acts[0] == "gelu" else _ACT_TO_HF[acts[0]]
  else:
    raise ValueError(f"mlp_activations {acts} have no HuggingFace T5 equivalent")
  return {
      "architectures": ["T5ForConditionalGeneration"],
      "model_type": "t5",
      "vocab_size": config.vocab_size,
      "d_model": config.emb_dim,
      "d_kv": config.head_dim,
      "d_ff": config.mlp_dim,
      "num_layers": config.num_encoder_layers,
      "num_decoder_layers": config.num_decoder_layers,
      "num_heads": config.num_heads,
      "relative_attention_num_buckets": config.relative_attention_num_buckets,
      "relative_attention_max_distance": config.relative_attention_max_distance,
      "dropout_rate": config.dropout_rate,
      "layer_norm_epsilon": config.layer_norm_epsilon,
      "initializer_factor": 1.0,
      "feed_forward_proj": proj,
      "tie_word_embeddings": config.logits_via_embedding,
      "scale_decoder_outputs": config.logits_via_embedding,  # read by transformers>=5
      "is_encoder_decoder": True,
      "use_cache": True,
      "pad_token_id": 0,
      "eos_token_id": 1,
      "decoder_start_token_id": 0,
  }


# ---------------------------------------------------------------------------------------------
# Name mapping
# ---------------------------------------------------------------------------------------------


def _mlp_names(config: T5Config) -> list[str]:
  return ["wi"] if len(config.mlp_activations) == 1 else [
      f"wi_{i}" for i in range(len(config.mlp_activations))]


def name_map(config: T5Config) -> dict[str, tuple[str, str]]:
  """HF tensor name -> (our flat name, how: 'T' transpose | 'id' copy)."""
  m: dict[str, tuple[str, str]] = {"shared.weight": ("token_embedder/embedding", "id")}
  if not config.logits_via_embedding:
    m["lm_head.weight"] = ("decoder/logits_dense/kernel", "T")
  for stack in ("encoder", "decoder"):
    m[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
        f"{stack}/relpos_bias/rel_embedding", "T")
    m[f"{stack}.final_layer_norm.weight"] = (f"{stack}/{stack}_norm/scale", "id")
  # Per layer, HF sublayer index -> (our layer norm, our attention or None for the MLP, HF's)
  sublayers = {
      "encoder": ((0, "pre_attention_layer_norm", "attention", "SelfAttention"),
                  (1, "pre_mlp_layer_norm", None, None)),
      "decoder": ((0, "pre_self_attention_layer_norm", "self_attention", "SelfAttention"),
                  (1, "pre_cross_attention_layer_norm", "encoder_decoder_attention",
                   "EncDecAttention"),
                  (2, "pre_mlp_layer_norm", None, None)),
  }
  layers = {"encoder": config.num_encoder_layers, "decoder": config.num_decoder_layers}
  for stack, subs in sublayers.items():
    for i in range(layers[stack]):
      hf, ours = f"{stack}.block.{i}.layer", f"{stack}/layers_{i}"
      for j, norm, attention, hf_attention in subs:
        m[f"{hf}.{j}.layer_norm.weight"] = (f"{ours}/{norm}/scale", "id")
        if attention is None:
          for w in _mlp_names(config) + ["wo"]:
            m[f"{hf}.{j}.DenseReluDense.{w}.weight"] = (f"{ours}/mlp/{w}/kernel", "T")
        else:
          for h, o in {"q": "query", "k": "key", "v": "value", "o": "out"}.items():
            m[f"{hf}.{j}.{hf_attention}.{h}.weight"] = (f"{ours}/{attention}/{o}/kernel", "T")
  return m


# Copies of shared.weight that HF may or may not write; verified equal when present.
_TIED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _read_state_dict(local_dir: str) -> dict[str, np.ndarray]:
  """All tensors of a local HF dir as float32 numpy arrays."""
  files = os.listdir(local_dir)
  if "model.safetensors" in files:
    shards = ["model.safetensors"]
  elif "model.safetensors.index.json" in files:
    with open(os.path.join(local_dir, "model.safetensors.index.json")) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
  elif "pytorch_model.bin" in files:
    shards = ["pytorch_model.bin"]
  elif "pytorch_model.bin.index.json" in files:
    with open(os.path.join(local_dir, "pytorch_model.bin.index.json")) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
  else:
    raise FileNotFoundError(f"{local_dir}: no model.safetensors, pytorch_model.bin or index file")
  state: dict[str, np.ndarray] = {}
  for shard in shards:
    path = os.path.join(local_dir, shard)
    if shard.endswith(".safetensors"):
      try:
        tensors = load_file(path)
      except (TypeError, ValueError):  # bfloat16 tensors: numpy has no bf16, go through torch
        # PyTorch is optional and heavy: only for checkpoints that need it
        from safetensors.torch import load_file as load_torch  # pylint: disable=g-import-not-at-top
        tensors = {k: v.float().numpy() for k, v in load_torch(path).items()}
    else:
      import torch  # pylint: disable=g-import-not-at-top  (optional: pytorch_model.bin only)
      tensors = {k: v.float().numpy() for k, v in
                 torch.load(path, map_location="cpu", weights_only=True).items()}
    state.update({k: np.asarray(v, np.float32) for k, v in tensors.items()})
  return state


def _localize(path: str) -> tuple[str, tempfile.TemporaryDirectory | None]:
  if not fileio.is_remote(path):
    return path, None
  tmp = tempfile.TemporaryDirectory(prefix="dsbs-hf-")
  for name in fileio.listdir(path):
    if name.endswith((".json", ".safetensors", ".bin", ".model")):
      with fileio.open_bytes(f"{path.rstrip('/')}/{name}") as src, \
          open(os.path.join(tmp.name, name), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
  return tmp.name, tmp


def load_hf_checkpoint(path: str, config: T5Config | None = None,
                       **config_overrides: Any) -> tuple[T5Config, dict[str, Any]]:
  """Loads a HF T5 dir (local or remote) -> (config, nested float32 numpy params).

  `config` defaults to the one built from config.json (with `config_overrides`, e.g.
  dtype="bfloat16"); a given config must agree with the checkpoint's shapes.
  """
  local, tmp = _localize(path)
  try:
    cfg_path = os.path.join(local, "config.json")
    if not os.path.exists(cfg_path):
      raise FileNotFoundError(f"{path}: no config.json")
    with open(cfg_path) as f:
      hf_cfg = json.load(f)
    if config is None:
      config = config_from_hf(hf_cfg, source=f"{path}/config.json", **config_overrides)
    state = _read_state_dict(local)
  finally:
    if tmp is not None:
      tmp.cleanup()
  mapping = name_map(config)
  if not config.logits_via_embedding and "lm_head.weight" not in state:
    # an unscaled head that shares the embedding's weights: an untied head with a copy
    state["lm_head.weight"] = state.get("shared.weight")
  flat = {}
  for hf_name, (ours, how) in mapping.items():
    if state.get(hf_name) is None:
      raise ValueError(f"{path}: tensor {hf_name} (for {ours}) missing from the checkpoint")
    value = state[hf_name]
    flat[ours] = np.ascontiguousarray(value.T) if how == "T" else value
  leftovers = set(state) - set(mapping)
  for name in _TIED_COPIES + ("lm_head.weight",):
    if name in leftovers:
      leftovers.discard(name)
      if name != "lm_head.weight" and not np.array_equal(state[name], state["shared.weight"]):
        raise ValueError(f"{path}: {name} differs from shared.weight; untied input embeddings "
                         "are not supported")
      if name == "lm_head.weight" and config.logits_via_embedding and not np.array_equal(
          state[name], state["shared.weight"]):
        raise ValueError(f"{path}: config ties the output head but lm_head.weight differs from "
                         "shared.weight")
  # HF's decoder keeps an unused cross-attention relative bias slot in some versions.
  leftovers = {n for n in leftovers if "EncDecAttention.relative_attention_bias" not in n}
  if leftovers:
    raise ValueError(f"{path}: {len(leftovers)} unrecognised tensors, e.g. {sorted(leftovers)[:5]}")
  flat = param_tree.to_config_layout(flat, config)
  param_tree.check_tree(flat, config, path)
  return config, param_tree.unflatten(flat)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def export_hf(params: Mapping[str, Any], config: T5Config, out_dir: str,
              spm_path: str | None = None, extra_ids: int = 100) -> None:
  """Writes a `T5ForConditionalGeneration.from_pretrained`-loadable dir (local or remote).

  `params` is our (unboxed) tree, per-layer or scanned. With `spm_path` (a SentencePiece model)
  the tokenizer is written too: spiece.model + tokenizer_config.json (T5Tokenizer with
  `extra_ids` sentinel tokens, as seqio's default T5 vocabulary).
  """
  flat = param_tree.flatten(nn.unbox(dict(params)))
  flat = {k: np.asarray(v, np.float32) for k, v in flat.items()}
  if any(k.startswith(("encoder/layers/", "decoder/layers/")) for k in flat):
    flat = param_tree.unscan_layers(flat)
  per_layer = config.replace(scan_layers=False)
  param_tree.check_tree(flat, per_layer, "export_hf(params)")
  tensors = {}
  for hf_name, (ours, how) in name_map(per_layer).items():
    value = flat[ours]
    tensors[hf_name] = np.ascontiguousarray(value.T if how == "T" else value)
  if config.logits_via_embedding:  # transformers ties lm_head to shared; write it explicitly too
    tensors["lm_head.weight"] = tensors["shared.weight"].copy()
  local_dir, remote = (tempfile.mkdtemp(prefix="dsbs-hf-out-"), out_dir) if fileio.is_remote(
      out_dir) else (out_dir, None)
  os.makedirs(local_dir, exist_ok=True)
  save_file(tensors, os.path.join(local_dir, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(local_dir, "config.json"), "w") as f:
    json.dump(config_to_hf(config), f, indent=2, sort_keys=True)
  if spm_path is not None:
    with fileio.open_bytes(spm_path) as src, open(os.path.join(local_dir, "spiece.model"), "wb") as dst:
      shutil.copyfileobj(src, dst)
    tok = {"tokenizer_class": "T5Tokenizer", "extra_ids": extra_ids, "eos_token": "</s>",
           "pad_token": "<pad>", "unk_token": "<unk>", "model_max_length": 512,
           "additional_special_tokens": [f"<extra_id_{i}>" for i in range(extra_ids)]}
    with open(os.path.join(local_dir, "tokenizer_config.json"), "w") as f:
      json.dump(tok, f, indent=2)
  if remote is not None:
    fileio.makedirs(remote)
    for name in os.listdir(local_dir):
      with open(os.path.join(local_dir, name), "rb") as src, \
          fileio.open_bytes(f"{remote.rstrip('/')}/{name}", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
    shutil.rmtree(local_dir, ignore_errors=True)

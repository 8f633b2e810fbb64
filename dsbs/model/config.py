"""T5 student hyperparameters: one frozen dataclass and a registry of named sizes.

The field names follow T5X's `network.T5Config` so that gin files written for T5X read naturally
here. `get_config(name, **overrides)` returns a registered size with `dataclasses.replace`
overrides applied; both are gin-configurable (`--gin.get_config.name="t5_1_1_large"`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import gin

_ACTIVATIONS = ("relu", "gelu", "gelu_exact", "silu", "linear")
_REMAT_POLICIES = (None, "none", "full", "minimal", "dots_saveable")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """All hyperparameters of the encoder-decoder T5 (T5 1.1 / Flan-T5 / original T5)."""
  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  head_dim: int = 64
  mlp_dim: int = 1024
  # ("gelu", "linear") is T5 1.1's gated-GELU (tanh approximation, as HF's "gelu_new");
  # ("relu",) is the original T5 feed-forward.
  mlp_activations: tuple[str, ...] = ("gelu", "linear")
  dropout_rate: float = 0.0
  # Tied output head (original T5): logits = decoder_out @ embedding.T / sqrt(emb_dim).
  logits_via_embedding: bool = False
  dtype: str = "bfloat16"  # compute dtype; parameters are always float32
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  float32_attention_logits: bool = True
  layer_norm_epsilon: float = 1e-6
  scan_layers: bool = False
  # None / "none": no rematerialisation; "full": recompute each layer in the backward pass;
  # "minimal" / "dots_saveable": keep matmul outputs, recompute the rest.
  remat_policy: str | None = None

  def __post_init__(self):
    if isinstance(self.mlp_activations, list):
      object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    for act in self.mlp_activations:
      if act not in _ACTIVATIONS:
        raise ValueError(f"T5Config.mlp_activations: unknown activation {act!r}; known: {_ACTIVATIONS}")
    if not self.mlp_activations:
      raise ValueError("T5Config.mlp_activations must name at least one activation")
    if self.remat_policy not in _REMAT_POLICIES:
      raise ValueError(f"T5Config.remat_policy: {self.remat_policy!r} not in {_REMAT_POLICIES}")
    for name in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim",
                 "relative_attention_num_buckets", "relative_attention_max_distance"):
      if getattr(self, name) <= 0:
        raise ValueError(f"T5Config.{name} must be positive, got {getattr(self, name)}")
    if self.relative_attention_num_buckets % 2:
      raise ValueError("T5Config.relative_attention_num_buckets must be even (bidirectional split)")
    if self.dtype not in ("bfloat16", "float32", "float16"):
      raise ValueError(f"T5Config.dtype: {self.dtype!r} not in bfloat16/float32/float16")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate}")

  def replace(self, **overrides: Any) -> "T5Config":
    return dataclasses.replace(self, **overrides)


def _t5_1_1(emb, heads, layers, mlp, head_dim=64) -> T5Config:
  return T5Config(emb_dim=emb, num_heads=heads, num_encoder_layers=layers,
                  num_decoder_layers=layers, head_dim=head_dim, mlp_dim=mlp)


def _t5_original(emb, heads, layers, mlp, head_dim=64) -> T5Config:
  return T5Config(emb_dim=emb, num_heads=heads, num_encoder_layers=layers,
                  num_decoder_layers=layers, head_dim=head_dim, mlp_dim=mlp,
                  mlp_activations=("relu",), logits_via_embedding=True)


_TEST_TINY = T5Config(vocab_size=256, emb_dim=64, num_heads=4, num_encoder_layers=2,
                      num_decoder_layers=2, head_dim=16, mlp_dim=128, dtype="float32")

CONFIGS: dict[str, T5Config] = {
    "t5_1_1_small": _t5_1_1(512, 6, 8, 1024),
    "t5_1_1_base": _t5_1_1(768, 12, 12, 2048),
    "t5_1_1_large": _t5_1_1(1024, 16, 24, 2816),
    "t5_1_1_xl": _t5_1_1(2048, 32, 24, 5120),
    "t5_1_1_xxl": _t5_1_1(4096, 64, 24, 10240),
    "t5_small": _t5_original(512, 8, 6, 2048),
    "t5_base": _t5_original(768, 12, 12, 3072),
    "t5_large": _t5_original(1024, 16, 24, 4096),
    "t5_3b": _t5_original(1024, 32, 24, 16384, head_dim=128),
    "t5_11b": _t5_original(1024, 128, 24, 65536, head_dim=128),
    # ~230K parameters: the unit tests' network (dsbs.testing.tiny_config).
    "test_tiny": _TEST_TINY,
    # The same with a byte vocabulary (259 ids in 384 rows): the offline smoke run of both
    # engines, gin_configs/smoke_offline.gin (T5X's side in gin_configs/model_smoke.gin).
    "smoke": dataclasses.replace(_TEST_TINY, vocab_size=384),
    # The main job's student (gin_configs/default.gin): d_model 128, 2+2 layers, 4 heads of
    # 32, MLP 256, byte vocabulary in 384 rows; 0.89M parameters.
    "default_student": dataclasses.replace(_TEST_TINY, vocab_size=384, emb_dim=128,
                                           head_dim=32, mlp_dim=256),
    # T5 1.1 architecture at t5-small width with a byte-sized vocabulary: throughput benchmarks.
    "bench_small": T5Config(vocab_size=384, emb_dim=512, num_heads=6, num_encoder_layers=8,
                            num_decoder_layers=8, head_dim=64, mlp_dim=1024, dtype="float32"),
}
# Flan-T5 checkpoints use the T5 1.1 architecture unchanged.
for _size in ("small", "base", "large", "xl", "xxl"):
  CONFIGS[f"flan_t5_{_size}"] = CONFIGS[f"t5_1_1_{_size}"]


def get_config(name: str = "t5_1_1_small", **overrides: Any) -> T5Config:
  """Returns the named registered config with `overrides` applied (fields of T5Config)."""
  if name not in CONFIGS:
    raise KeyError(f"unknown T5 config {name!r}; known: {sorted(CONFIGS)}")
  bad = sorted(set(overrides) - {f.name for f in dataclasses.fields(T5Config)})
  if bad:
    raise TypeError(f"get_config({name!r}): unknown T5Config fields {bad}")
  return dataclasses.replace(CONFIGS[name], **overrides)


def from_dict(fields: dict[str, Any]) -> T5Config:
  """A T5Config from its `dataclasses.asdict` form (a run's model_config.json). Run dirs written
  before `param_dtype` was removed carry it as "float32", the only value it ever took."""
  fields = dict(fields)
  if fields.pop("param_dtype", "float32") != "float32":
    raise ValueError("model config: parameters are always float32")
  return T5Config(**fields)


gin.external_configurable(T5Config, module="dsbs.model")
get_config = gin.configurable(get_config, module="dsbs.model")

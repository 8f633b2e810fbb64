"""Public and exported checkpoints in HuggingFace or T5X format, whichever a path holds.

`load_hf_or_t5x(path)` recognises a HuggingFace dir (config.json) or a T5X / Orbax checkpoint
(checkpoint_N or its parent) and returns (config, params) in our tree; `export` writes either
format. The format-specific code lives in dsbs/model/hf_format.py and
dsbs/model/t5x_format.py. The built-in runner's own (Orbax) checkpoints are
dsbs/train_checkpoints.py's.
"""
from __future__ import annotations

from typing import Any, Mapping

from dsbs import fileio
from dsbs.model import hf_format, t5x_format
from dsbs.model.config import T5Config, get_config


def detect_format(path: str) -> str:
  """'hf' for a save_pretrained dir, else 't5x' (T5X msgpack+tensorstore or Orbax)."""
  return "hf" if fileio.exists(f"{path.rstrip('/')}/config.json") else "t5x"


def load_hf_or_t5x(path: str, config: T5Config | str | None = None,
                   **config_overrides: Any) -> tuple[T5Config, dict[str, Any]]:
  """Loads `path` into (config, nested float32 numpy params).

  HF dirs carry their config (`config` may override it). T5X checkpoints do not, so `config`
  (a T5Config or a registered name such as 't5_1_1_base') is required for them.
  """
  if isinstance(config, str):
    config = get_config(config)
  if config is not None and config_overrides:
    config = config.replace(**config_overrides)
  if detect_format(path) == "hf":
    return hf_format.load_hf_checkpoint(path, config, **({} if config else config_overrides))
  if config is None:
    raise ValueError(f"{path}: a T5X/Orbax checkpoint holds no model config; pass config= "
                     "(a T5Config or a registered name like 't5_1_1_base')")
  return config, t5x_format.load_t5x_checkpoint(path, config)


def export(params: Mapping[str, Any], config: T5Config, out_dir: str, fmt: str = "hf",
           step: int = 0, spm_path: str | None = None) -> str:
  """Writes a trained student as a HF dir (fmt='hf') or a T5X checkpoint (fmt='t5x')."""
  if fmt == "hf":
    hf_format.export_hf(params, config, out_dir, spm_path=spm_path)
    return out_dir
  if fmt == "t5x":
    return t5x_format.write_t5x_checkpoint(params, out_dir, step)
  raise ValueError(f"export format must be 'hf' or 't5x', got {fmt!r}")

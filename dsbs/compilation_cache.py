"""JAX's persistent compilation cache for the dsbs programs (`dsbs.train`, `dsbs.evaluate`).

Every process compiles its training step and decoders again: seconds on a CPU, minutes for a
large model on a TPU slice. Resuming a run, evaluating after training and a sweep over mixture
rates compile the same programs over and over. With the cache on, a process that meets a
program an earlier one compiled (same computation, shapes, compiler options, JAX and device)
loads the executable instead. JAX caches only programs that took at least
`jax_persistent_cache_min_compile_time_secs` (default 1 s) to compile.

Where, first match wins: the programs' `--compilation_cache_dir` flag (`add_flag`);
`$DSBS_COMPILATION_CACHE_DIR`; JAX's own `$JAX_COMPILATION_CACHE_DIR` (then JAX is left to set itself up); else
`$XDG_CACHE_HOME/dsbs/jax` (`~/.cache/dsbs/jax`). `none` (flag or variable) turns it off.
The cache keeps at most `MAX_BYTES`, dropping the least recently used programs (unless
`jax_compilation_cache_max_size` was set). `enable` is for programs: library code never changes
JAX's global configuration on import.
"""
from __future__ import annotations

import os
from typing import Any

import jax

OFF = "none"
ENV = "DSBS_COMPILATION_CACHE_DIR"
MAX_BYTES = 4 * 2**30


def add_flag(parser: Any) -> None:
  """The programs' `--compilation_cache_dir` flag, on an argparse parser."""
  parser.add_argument("--compilation_cache_dir", default=None,
                      help="JAX's persistent compilation cache ('none': off; default: see "
                      "dsbs/compilation_cache.py)")


def resolve(flag: str | None = None) -> str | None:
  """The cache directory `enable(flag)` would use, or None when the cache is off or left to
  JAX's own `$JAX_COMPILATION_CACHE_DIR`."""
  for choice in (flag, os.environ.get(ENV)):
    if choice:
      return None if choice.lower() == OFF else choice
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return None
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "dsbs", "jax")


def enable(flag: str | None = None) -> str | None:
  """Points JAX's persistent compilation cache at `resolve(flag)`; returns the directory (None:
  off, or JAX's own variable rules). Call before the first compile."""
  path = resolve(flag)
  if path is not None:
    jax.config.update("jax_compilation_cache_dir", path)
    if jax.config.values["jax_compilation_cache_max_size"] == -1 and _has_filelock():
      jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)  # JAX's default: unbounded
  return path


def _has_filelock() -> bool:
  """JAX bounds the cache's size only with the `filelock` package (a dsbs dependency)."""
  try:
    import filelock  # pylint: disable=g-import-not-at-top,unused-import  (the check itself)
  except ImportError:
    return False
  return True

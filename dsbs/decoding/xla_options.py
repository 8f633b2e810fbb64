"""The XLA options the decoders compile with, and `jit` (jax.jit with them).

On XLA:CPU the matmuls go to the YNNPACK library as whole dots while XLA's own emitters run the
small reductions and elementwise ops of a decoding step (as library fusions those wait on the
shared thread pool at every step; see docs/performance_notes.md). Training steps are faster
with the defaults, so this is for decoding only.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

_CPU_DECODE_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.lru_cache(maxsize=None)
def compiler_options(backend: str | None = None) -> tuple[tuple[str, str], ...]:
  """The XLA options `jit` compiles decoders with on `backend` (default: JAX's default).

  Empty off CPU, and on an XLA whose CPU compiler does not know the option (checked once by
  compiling a trivial function with it)."""
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return ()
  try:
    jax.jit(lambda x: x + 1, compiler_options=_CPU_DECODE_OPTIONS).lower(
        jnp.zeros((), jnp.float32)).compile()
  except Exception:  # pylint: disable=broad-except  (an XLA without the option)
    return ()
  return tuple(sorted(_CPU_DECODE_OPTIONS.items()))


def jit(fn: Callable[..., Any], **jit_kwargs: Any) -> Callable[..., Any]:
  """`jax.jit(fn)` with the decoders' XLA options (see `compiler_options`)."""
  return jax.jit(fn, compiler_options=dict(compiler_options()), **jit_kwargs)

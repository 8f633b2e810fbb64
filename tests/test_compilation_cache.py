"""dsbs.compilation_cache: where the cache goes, and a second process loads what the first
compiled (JAX's cache is process-global: each case runs in its own interpreter)."""
import json
import os
import subprocess
import sys

import pytest

from dsbs import compilation_cache

PROBE = r"""
import json, sys, time
import jax, jax.numpy as jnp
from dsbs import compilation_cache
path = compilation_cache.enable(sys.argv[1] if len(sys.argv) > 1 else None)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event.endswith("/cache_hits") else None)
def f(x):
  for i in range(40):
    x = jnp.tanh(x @ x.T + i)
  return x
t0 = time.perf_counter()
jax.jit(f).lower(jnp.ones((64, 64))).compile()
print(json.dumps({"path": path, "hits": len(hits), "compile_s": time.perf_counter() - t0,
                  "max_size": jax.config.values["jax_compilation_cache_max_size"]}))
"""


def _probe(env, *argv):
  proc = subprocess.run([sys.executable, "-c", PROBE, *argv], env=env, capture_output=True,
                        text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_where_the_cache_goes(monkeypatch, tmp_path):
  for var in (compilation_cache.ENV, "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  assert compilation_cache.resolve() == str(tmp_path / ".cache" / "dsbs" / "jax")
  monkeypatch.setenv("XDG_CACHE_HOME", "/x")
  assert compilation_cache.resolve() == "/x/dsbs/jax"
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/jax")  # JAX's own variable: left to JAX
  assert compilation_cache.resolve() is None
  monkeypatch.setenv(compilation_cache.ENV, "gs://bucket/cache")
  assert compilation_cache.resolve() == "gs://bucket/cache"
  assert compilation_cache.resolve("/flag") == "/flag"  # the flag first
  assert compilation_cache.resolve("none") is None
  monkeypatch.setenv(compilation_cache.ENV, "NONE")
  assert compilation_cache.resolve() is None and compilation_cache.resolve("/flag") == "/flag"


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if k not in (compilation_cache.ENV, "JAX_COMPILATION_CACHE_DIR")}
  env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
  first = _probe(env)
  cache = tmp_path / "xdg" / "dsbs" / "jax"
  assert first["path"] == str(cache) and first["max_size"] == compilation_cache.MAX_BYTES
  entries = sorted(os.listdir(cache))
  assert entries, "the first process wrote no cache entry"
  assert first["hits"] == 0
  second = _probe(env)
  assert second["hits"] >= 1 and sorted(os.listdir(cache)) == entries
  off = _probe(env, "none")
  assert off["path"] is None and off["hits"] == 0

"""The host allocator settings: page faults of a re-allocated large buffer, opt-out, state."""
import json
import os
import subprocess
import sys

import pytest

from dsbs import hostmem

_PROBE = r"""
import json, os, resource, sys
from dsbs import hostmem
applied = hostmem.tune_malloc() if sys.argv[1] == "tune" else hostmem.state()
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
faults = []
size = 256 * 1024 * 1024
for _ in range(3):  # allocate, touch and free 256 MiB, as XLA:CPU does with its temporaries
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  buf = libc.malloc(size)
  libc.memset(buf, 1, size)
  libc.free(buf)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""

glibc_only = pytest.mark.skipif(hostmem._glibc() is None,  # pylint: disable=protected-access
                                reason="needs Linux with glibc")


def _probe(mode: str, **env) -> dict:
  proc = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                        check=True, env={**os.environ, **env})
  return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc_only
def test_tuned_malloc_reuses_freed_pages():
  pages = 256 * 1024 * 1024 // 4096
  system = _probe("default")
  tuned = _probe("tune")
  assert system["applied"]["malloc"] == "system"
  assert tuned["applied"]["malloc"] == "tuned"
  assert tuned["applied"]["mmap_max"] == 0 and tuned["applied"]["arena_max"] == 1
  # glibc's default maps fresh pages for every large allocation (fewer faults where the
  # kernel backs them with huge pages); the tuned heap reuses them
  assert min(system["faults"][1:]) > pages // 1024
  assert max(tuned["faults"][1:]) < min(system["faults"][1:]) // 10 + 1
  assert max(tuned["faults"][1:]) < 64


@glibc_only
def test_opt_out_keeps_system_allocator():
  out = _probe("tune", DSBS_MALLOC="system")
  assert out["applied"] == {"malloc": "system", "reason": "DSBS_MALLOC=system"}
  assert min(out["faults"][1:]) > 256 * 1024 * 1024 // 4096 // 1024


def test_bad_setting_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(hostmem, "_applied", None)
  monkeypatch.setenv("DSBS_MALLOC", "jemalloc")
  with pytest.raises(ValueError, match="DSBS_MALLOC='jemalloc'"):
    hostmem.tune_malloc()


def test_library_import_changes_nothing(monkeypatch):
  monkeypatch.setattr(hostmem, "_applied", None)
  assert hostmem.state() == {"malloc": "system", "reason": "not requested"}

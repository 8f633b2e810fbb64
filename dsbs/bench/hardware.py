"""What the benchmark knows about the machine: datasheet peaks of accelerators, and on CPU the
measured matmul peak and memory bandwidth."""
from __future__ import annotations

import os
import platform
import resource
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dsbs.bench.timing import min_time

# Datasheet dense bf16 peaks (FLOP/s) by device_kind substring; first match wins.
PEAKS = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12),
         ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
         ("TPU v4", 275e12), ("TPU v3", 123e12))
# HBM bandwidth (bytes/s) of one device, for the decoding floor.
BANDWIDTH = (("H200", 4.8e12), ("H100", 3.35e12), ("A100", 2.0e12), ("TPU v6", 1.64e12),
             ("TPU v5p", 2.76e12), ("TPU v5 lite", 0.82e12), ("TPU v5e", 0.82e12),
             ("TPU v4", 1.2e12))


def lookup(table: Sequence[tuple[str, float]], kind: str) -> float | None:
  """The value of the first entry whose key is in `kind` (case-insensitive), else None."""
  for key, value in table:
    if key.lower() in kind.lower():
      return value
  return None


def measured_matmul_peak(n: int = 2048, reps: int = 5) -> dict[str, float]:
  """float32 matmul FLOP/s on this host, best of `reps`, by XLA, NumPy's BLAS and PyTorch.

  The best repetition, not the median: on a shared host it is the closest to the hardware.
  """
  a = np.random.default_rng(0).standard_normal((n, n), np.float32)
  dot = jax.jit(jnp.dot)
  x = jax.device_put(a, jax.devices()[0])
  dot(x, x).block_until_ready()
  xla = 2 * n**3 / min_time(lambda: dot(x, x).block_until_ready(), reps)
  np.dot(a, a)
  out = {"xla": xla, "numpy": 2 * n**3 / min_time(lambda: np.dot(a, a), reps)}
  try:  # PyTorch's CPU GEMM (oneDNN / MKL) is the fastest on some hosts; optional and heavy
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return out
  t = torch.from_numpy(a)
  torch.mm(t, t)
  out["torch"] = 2 * n**3 / min_time(lambda: torch.mm(t, t), reps)
  # One thread times the cores: on a host shared with other jobs a one-thread GEMM still gets
  # a whole core, where a many-thread one waits on its slowest thread.
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    out["torch_1thread_x_cores"] = (2 * n**3 / min_time(lambda: torch.mm(t, t), reps)
                                    * (os.cpu_count() or 1))
  finally:
    torch.set_num_threads(threads)
  return out


def measured_memory_bandwidth(mib: int = 512, reps: int = 10) -> float:
  """Bytes/s at which XLA reads a `mib` MiB float32 buffer (a sum; the buffer is many times a
  CPU's last-level cache), best of `reps`: the host's streaming-read bandwidth."""
  x = jnp.ones((mib * 2**18,), jnp.float32)
  total = jax.jit(jnp.sum)
  total(x).block_until_ready()
  return x.nbytes / min_time(lambda: total(x).block_until_ready(), reps)


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_facts() -> dict[str, Any]:
  """The backend, device kind, count and peak FLOP/s used for MFU (with its source)."""
  dev = jax.devices()[0]
  facts = {"backend": jax.default_backend(), "device_kind": dev.device_kind,
           "devices": jax.device_count(), "host": platform.node(), "cpu": cpu_name(),
           "cpu_count": os.cpu_count(), "jax": jax.__version__}
  if facts["backend"] == "cpu":
    peaks = measured_matmul_peak()
    facts.update(peak_flops=max(peaks.values()), peak_source="measured f32 matmul, best of "
                 + "/".join(sorted(peaks)), **{f"peak_flops_{k}": v for k, v in peaks.items()},
                 memory_bytes_per_s=measured_memory_bandwidth(),
                 memory_source="measured XLA streaming read")
  else:
    peak = lookup(PEAKS, dev.device_kind)
    bandwidth = lookup(BANDWIDTH, dev.device_kind)
    facts.update(peak_flops=None if peak is None else peak * jax.device_count(),
                 peak_source="datasheet bf16 dense" if peak else "unknown device kind",
                 memory_bytes_per_s=bandwidth,
                 memory_source="datasheet HBM" if bandwidth else "unknown device kind")
  return facts

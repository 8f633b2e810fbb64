"""Several hosts, one run: joining JAX's distributed runtime and what each process supplies.

A multi-host slice (a TPU pod) runs one process per host, all with the same command line:
`launch/` runs `python3 -m dsbs.train ...` on `--worker=all`. `jax.distributed.initialize`
joins them when

- `--multihost` is given (Cloud TPU, SLURM, Open MPI and the other environments JAX detects
  fill in the coordinator, the process count and this process's id), or
- the run is on a Cloud TPU VM slice with several workers (`TPU_WORKER_HOSTNAMES` lists more
  than one; the same detection), or
- `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` are given (any machines,
  e.g. several processes on one machine with `--xla_force_host_platform_device_count` in
  `XLA_FLAGS`; a loopback coordinator also binds to loopback only).

A host that stops (preempted, killed, crashed) stops the others: JAX's distributed runtime
declares a process dead when its heartbeats stop for `--heartbeat_timeout_seconds`, and every
other process then exits (SIGABRT) with "Terminating process because the JAX distributed service
detected fatal errors ... another task died" instead of waiting forever in a collective. When
process 0 (the coordinator) is the one that stops, the others notice at once. Relaunching the same
command on every host resumes from the last checkpoint.

Every process feeds the rows of a global batch that its devices hold (`local_rows`); the input
pipeline and the evaluation decoders build their per-process data from it.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import sys
import traceback
from typing import Any, Callable, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp

_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The multi-host flags of `dsbs.train` and `dsbs.evaluate`."""
  group = parser.add_argument_group(
      "multi-host", "Run the same command on every host. On a Cloud TPU VM slice with several "
      "workers the processes join automatically; elsewhere pass --multihost (JAX detects the "
      "cluster) or the three coordinator flags (e.g. two processes on one machine: "
      "--coordinator_address=127.0.0.1:PORT --num_processes=2 --process_id=0, then 1).")
  group.add_argument("--multihost", action="store_true",
                     help="call jax.distributed.initialize() with the settings JAX detects")
  group.add_argument("--coordinator_address", default=None,
                     help="HOST:PORT of process 0's coordinator service")
  group.add_argument("--num_processes", type=int, default=None, help="number of processes")
  group.add_argument("--process_id", type=int, default=None, help="this process, 0..N-1")
  group.add_argument("--heartbeat_timeout_seconds", type=int, default=100,
                     help="a process silent this long counts as dead and the others exit "
                     "(default: %(default)s, JAX's)")


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Exits with a usage error for an incomplete or inconsistent set of multi-host flags."""
  explicit = (args.coordinator_address, args.num_processes, args.process_id)
  if any(v is not None for v in explicit) and any(v is None for v in explicit):
    parser.error("--coordinator_address, --num_processes and --process_id go together "
                 "(or use --multihost and let JAX detect them)")
  if args.num_processes is not None:
    if args.num_processes < 1:
      parser.error(f"--num_processes must be >= 1, got {args.num_processes}")
    if not 0 <= args.process_id < args.num_processes:
      parser.error(f"--process_id must be in [0, {args.num_processes}), got {args.process_id}")
  if args.coordinator_address is not None and ":" not in args.coordinator_address:
    parser.error(f"--coordinator_address must be HOST:PORT, got {args.coordinator_address!r}")
  if args.heartbeat_timeout_seconds < 1:
    parser.error("--heartbeat_timeout_seconds must be >= 1")


def initialize(args: argparse.Namespace) -> bool:
  """Joins the processes of a multi-host run (before anything touches a device).

  Returns whether jax.distributed is initialised (a second call changes nothing).
  """
  if jax.distributed.is_initialized():
    return True
  auto = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
  explicit = args.coordinator_address is not None
  if not (args.multihost or explicit or auto):
    return False
  kwargs = {"heartbeat_timeout_seconds": args.heartbeat_timeout_seconds}
  if explicit:
    kwargs.update(coordinator_address=args.coordinator_address,
                  num_processes=args.num_processes, process_id=args.process_id)
    if args.coordinator_address.startswith(_LOOPBACK):  # JAX binds to every interface otherwise
      kwargs["coordinator_bind_address"] = args.coordinator_address
  jax.distributed.initialize(**kwargs)
  return True


@contextlib.contextmanager
def fail_fast(*expected: type[BaseException]) -> Iterator[None]:
  """Ends this process at once on an unexpected exception when several processes run.

  The traceback is printed and the process exits with code 1 without JAX's shutdown barrier,
  where it would wait for processes that are themselves waiting in a collective for it; they
  then stop within the heartbeat timeout. `expected` exceptions (raised alike on every process:
  a bad experiment, a NaN loss) propagate for the caller to report.
  """
  try:
    yield
  except expected:
    raise
  except Exception:  # pylint: disable=broad-except
    if not (jax.distributed.is_initialized() and jax.process_count() > 1):
      raise
    traceback.print_exc()
    print(f"error: process {jax.process_index()} failed (above); stopping it now so that the "
          "other processes stop too", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access


def describe(mesh: jax.sharding.Mesh | None = None) -> str:
  """One line: host count, this process, its devices, the mesh."""
  line = (f"process {jax.process_index()} of {jax.process_count()}: "
          f"{jax.local_device_count()} local {jax.default_backend()} devices of "
          f"{jax.device_count()}")
  if mesh is not None:
    line += f"; mesh {dict(mesh.shape)}"
  return line


def log_start(mesh: jax.sharding.Mesh, heartbeat_timeout_seconds: int | None = None) -> None:
  """Logs, on every process, where it runs (each host's log shows its own line)."""
  line = describe(mesh)
  if jax.process_count() > 1 and heartbeat_timeout_seconds:
    line += (f"; if a host stops, the others exit within about {heartbeat_timeout_seconds} s: "
             "relaunch the same command on every host to resume")
  logging.info("%s", line)


_barriers = itertools.count()


def barrier(name: str, timeout_s: int = 600) -> None:
  """Waits until every process gets here: a barrier of the distributed runtime's coordination
  service (no device collective). A no-op on one process."""
  if jax.process_count() > 1:
    ocp.multihost.sync_global_processes(f"dsbs-{name}-{next(_barriers)}", timeout=timeout_s,
                                        processes=set(range(jax.process_count())))


def compile_together(fn: Callable[..., Any], *args: Any, name: str) -> None:
  """Compiles the jitted `fn` for `args`, then waits for the other processes to do the same.

  Call it before the first call of a program with collectives. A process joins a device
  group's first collective only after compiling the program, and XLA:CPU's collectives (gloo)
  give up when the others arrive more than 30 s later: a loaded host or a compilation-cache
  miss on one process is enough. The call that follows finds the program compiled (JAX's
  in-memory cache). A no-op on one process.
  """
  if jax.process_count() > 1:
    fn.lower(*args).compile()
    barrier(f"compiled-{name}")


def checkpoint_options() -> dict[str, Any]:
  """Orbax CheckpointManagerOptions for this process group: on several processes, barriers of
  the coordination service rather than device collectives (see `compile_together`)."""
  if jax.process_count() == 1:
    return {}
  return {"multiprocessing_options": ocp.options.MultiprocessingOptions(
      active_processes=set(range(jax.process_count())))}


def global_array(value: Any, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array on `sharding` from a host value that every process holds in full."""
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def local_rows(sharding: jax.sharding.Sharding, num_rows: int) -> np.ndarray:
  """Global row indices of a `[num_rows, ...]` array that this process supplies.

  In the order `jax.make_array_from_process_local_data` reads them: the distinct row ranges
  of this process's devices, ascending. All rows when the rows are replicated over processes.
  """
  starts = set()
  for index in sharding.addressable_devices_indices_map((num_rows,)).values():
    sl = index[0]
    starts.add((sl.start or 0, num_rows if sl.stop is None else sl.stop))
  return np.concatenate([np.arange(a, b) for a, b in sorted(starts)]).astype(np.int64)

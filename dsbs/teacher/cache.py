"""A durable response cache: every completed sample is committed the moment it arrives.

SQLite in WAL mode with synchronous=FULL: a committed row survives a killed process or a power
cut, and a half-written transaction is rolled back by SQLite on the next open, so a crash never
leaves a partial record. Rows whose JSON does not decode (a damaged file) are ignored and
counted, and their requests are sent again.

A sample's key hashes everything that decides its text: API kind, rendered prompt, model,
sampling parameters and sample index. The endpoint URL is not part of the key: the same model
served elsewhere gives the same cached samples.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from typing import Any, Iterable, Mapping, Sequence

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
  key TEXT PRIMARY KEY,
  created REAL NOT NULL,
  record TEXT NOT NULL
)
"""
KEY_VERSION = 1


class CacheError(RuntimeError):
  """The cache file cannot be opened or read."""


def sample_key(api: str, prompt: Any, model: str, params: Mapping[str, Any], index: int) -> str:
  """The cache key of sample `index` of one prompt under one model and sampling setup."""
  blob = json.dumps({"v": KEY_VERSION, "api": api, "prompt": prompt, "model": model,
                     "params": params, "sample": index},
                    sort_keys=True, ensure_ascii=False, separators=(",", ":"))
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
  """Maps sample keys to records ({"text", "finish_reason", ...}); local file only."""

  def __init__(self, path: str):
    if "://" in path:
      raise CacheError(f"the response cache must be a local file, got {path!r} (use --cache_path)")
    self.path = path
    self.corrupt_rows = 0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
      self._db = sqlite3.connect(path, isolation_level=None, timeout=60.0)
      self._db.execute("PRAGMA journal_mode=WAL")
      self._db.execute("PRAGMA synchronous=FULL")
      self._db.execute(_SCHEMA)
    except sqlite3.DatabaseError as e:
      raise CacheError(f"{path}: not a usable response cache ({e})") from None

  def close(self) -> None:
    self._db.close()

  def __enter__(self) -> "ResponseCache":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __len__(self) -> int:
    return self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]

  def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The records present for `keys`; undecodable rows are counted in `corrupt_rows`."""
    out: dict[str, dict[str, Any]] = {}
    keys = list(dict.fromkeys(keys))
    for start in range(0, len(keys), 500):
      chunk = keys[start:start + 500]
      marks = ",".join("?" * len(chunk))
      try:
        rows = self._db.execute(
            f"SELECT key, record FROM samples WHERE key IN ({marks})", chunk).fetchall()
      except sqlite3.DatabaseError as e:
        raise CacheError(f"{self.path}: cannot read the response cache ({e})") from None
      for key, record in rows:
        try:
          value = json.loads(record)
          if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            raise ValueError("not a sample record")
        except ValueError:
          self.corrupt_rows += 1
          continue
        out[key] = value
    return out

  def put_many(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """Commits the records durably in one transaction (all or none)."""
    now = time.time()
    rows = [(k, now, json.dumps(dict(v), ensure_ascii=False, sort_keys=True)) for k, v in items]
    try:
      with self._db:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany(
            "INSERT OR REPLACE INTO samples (key, created, record) VALUES (?, ?, ?)", rows)
    except sqlite3.DatabaseError as e:
      raise CacheError(f"{self.path}: cannot write the response cache ({e})") from None

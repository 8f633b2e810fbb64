"""The provenance record of a teacher run: what produced `<split>.jsonl`, without any secret.

`<output_dir>/provenance.json` holds one entry per split, so generating train and test into one
directory keeps both; a rerun of a split replaces that split's entry.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import urllib.parse
from typing import Any

import dsbs
from dsbs import fileio

FILENAME = "provenance.json"


def sanitize_url(url: str) -> str:
  """The URL without user:password, query string or fragment (where keys tend to hide)."""
  parts = urllib.parse.urlsplit(url)
  host = parts.hostname or ""
  if ":" in host:  # IPv6 literal
    host = f"[{host}]"
  try:
    port = parts.port
  except ValueError:
    port = None
  netloc = host + (f":{port}" if port else "")
  return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def sha256_text(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def now_iso() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write(output_dir: str, split: str, entry: dict[str, Any]) -> str:
  """Merges this split's entry into `<output_dir>/provenance.json`; returns the path."""
  path = output_dir.rstrip("/") + "/" + FILENAME
  doc: dict[str, Any] = {}
  if fileio.exists(path):
    try:
      with fileio.open_text(path) as f:
        doc = json.load(f)
    except (OSError, ValueError):
      doc = {}
    if not isinstance(doc, dict):
      doc = {}
  doc["dsbs_version"] = dsbs.__version__
  doc.setdefault("splits", {})[split] = entry
  with fileio.atomic_write_text(path) as f:
    json.dump(doc, f, indent=2, sort_keys=True, ensure_ascii=False)
    f.write("\n")
  return path

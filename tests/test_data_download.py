"""Data-dir resolution and the release download, against a local HTTP server on 127.0.0.1."""
import contextlib
import functools
import hashlib
import http.server
import os
import threading
import zipfile

import pytest

from dsbs.data import datadir, load_examples, resolve_data_dir

SVAMP_FILES = ("svamp/svamp_test.json", "svamp/llm/test_CoT_0.json")


@contextlib.contextmanager
def _serve(directory):
  """A threaded HTTP server for `directory`; shut down when the block ends."""
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
  handler.log_message = lambda *a: None
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}"
  finally:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _zip(path, members, prefix="datasets/"):
  with zipfile.ZipFile(path, "w") as zf:
    for name, data in members.items():
      zf.writestr(prefix + name, data)
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _real_svamp(data_dir):
  out = {}
  for rel in SVAMP_FILES:
    with open(os.path.join(data_dir, rel), "rb") as f:
      out[rel] = f.read()
  return out


def test_download_over_http_verifies_zip_and_manifest(tmp_path, data_dir):
  digest = _zip(tmp_path / "datasets.zip", _real_svamp(data_dir))
  dest = str(tmp_path / "cache" / "data")
  with _serve(tmp_path) as base:
    out = datadir.download_release(dest, url=f"{base}/datasets.zip", sha256=digest)
  assert out == dest and sorted(os.listdir(dest)) == ["svamp"]
  exs = load_examples("svamp", "test", dest)
  assert len(exs) == 200 and exs[0].teacher_label == "( 10.0 * 45.0 )"
  assert not [n for n in os.listdir(tmp_path / "cache") if n.startswith(".dsbs-download")]


def test_manifest_mismatch_is_refused(tmp_path, data_dir):
  files = _real_svamp(data_dir)
  files["svamp/svamp_test.json"] = files["svamp/svamp_test.json"].replace(b"45", b"46", 1)
  _zip(tmp_path / "datasets.zip", files)
  dest = tmp_path / "data"
  with pytest.raises(datadir.DataDirError, match="checksum mismatch .*svamp/svamp_test.json"):
    datadir.download_release(str(dest), url=(tmp_path / "datasets.zip").as_uri())
  assert not dest.exists()


def test_zip_checksum_file_url_and_bad_archives(tmp_path):
  members = {"svamp/svamp_test.json": '{"input": "a\\nb?", "label": "( 1.0 + 2.0 )"}\n'}
  _zip(tmp_path / "d.zip", members)
  with pytest.raises(datadir.DataDirError, match="does not match the pinned"):
    datadir.download_release(str(tmp_path / "x"), url=(tmp_path / "d.zip").as_uri(), sha256="0" * 64)
  out = datadir.download_release(str(tmp_path / "y"), url=(tmp_path / "d.zip").as_uri(), manifest={})
  assert load_examples("svamp", "test", out)[0].label == "( 1.0 + 2.0 )"
  with pytest.raises(datadir.DataDirError, match="not empty"):
    datadir.download_release(out, url=(tmp_path / "d.zip").as_uri(), manifest={})
  (tmp_path / "bad.zip").write_bytes(b"not a zip")
  with pytest.raises(datadir.DataDirError, match="not a zip"):
    datadir.download_release(str(tmp_path / "z"), url=(tmp_path / "bad.zip").as_uri())
  _zip(tmp_path / "slip.zip", {"../../evil.json": "x"}, prefix="")
  with pytest.raises(datadir.DataDirError, match="unsafe path"):
    datadir.download_release(str(tmp_path / "w"), url=(tmp_path / "slip.zip").as_uri())
  _zip(tmp_path / "other.zip", {"readme.txt": "x"})
  with pytest.raises(datadir.DataDirError, match="holds none of"):
    datadir.download_release(str(tmp_path / "v"), url=(tmp_path / "other.zip").as_uri())


def test_resolve_order_and_cache_download(tmp_path, monkeypatch, data_dir):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  monkeypatch.delenv(datadir.ENV_DATA_DIR, raising=False)
  assert datadir.cache_dir() == str(tmp_path / "xdg" / "dsbs" / "data")
  assert resolve_data_dir(data_dir) == data_dir
  monkeypatch.setenv(datadir.ENV_DATA_DIR, data_dir)
  assert resolve_data_dir() == data_dir
  with pytest.raises(datadir.DataDirError, match="--data_dir='/nonexistent'"):
    resolve_data_dir("/nonexistent")
  monkeypatch.delenv(datadir.ENV_DATA_DIR)
  with pytest.raises(datadir.DataDirError, match="DSBS_DATA_DIR"):
    resolve_data_dir(download=False)
  digest = _zip(tmp_path / "datasets.zip", _real_svamp(data_dir))
  monkeypatch.setenv(datadir.ENV_SHA256, digest)
  with _serve(tmp_path) as base:
    monkeypatch.setenv(datadir.ENV_URL, f"{base}/datasets.zip")
    got = resolve_data_dir()
    assert got == datadir.cache_dir() and len(load_examples("svamp", "test")) == 200
    monkeypatch.setenv(datadir.ENV_URL, f"{base}/missing.zip")
    assert resolve_data_dir() == got  # cached: no second download


def test_failed_download_names_env_and_url(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  monkeypatch.delenv(datadir.ENV_DATA_DIR, raising=False)
  with _serve(tmp_path) as base:
    url = f"{base}/nothing-here.zip"
    monkeypatch.setenv(datadir.ENV_URL, url)
    with pytest.raises(datadir.DataDirError) as err:
      resolve_data_dir()
  assert url in str(err.value) and "DSBS_DATA_DIR" in str(err.value) and "404" in str(err.value)

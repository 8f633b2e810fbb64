"""Shared pytest fixtures: where the released data lives, tiny configs."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

# The programs the tests run in-process turn on JAX's persistent compilation cache; the suite
# keeps JAX's global state to itself (tests/test_compilation_cache.py runs its own processes).
os.environ["DSBS_COMPILATION_CACHE_DIR"] = "none"


def released_data_dir() -> str | None:
  """The released benchmark data: $DSBS_TEST_DATA_DIR, else ../shared/data/dsbs beside the repo."""
  for cand in (os.environ.get("DSBS_TEST_DATA_DIR"), REPO.parent / "shared" / "data" / "dsbs"):
    if cand and pathlib.Path(cand, "svamp").is_dir():
      return str(cand)
  return None


@pytest.fixture(scope="session")
def data_dir() -> str:
  d = released_data_dir()
  if d is None:
    pytest.skip("released data not found: set DSBS_TEST_DATA_DIR or place it at ../shared/data/dsbs")
  return d


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true",
                   help="also run the tests marked slow (skipped by default to keep CI short)")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: a long test, run with --runslow or -m slow")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--runslow") or "slow" in (config.getoption("-m") or ""):
    return
  skip = pytest.mark.skip(reason="slow: run with --runslow (or -m slow)")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)

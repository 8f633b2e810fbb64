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


# Tests marked `slow` (minutes each: a fresh venv, whole commands) run with --run-slow or
# DSBS_RUN_SLOW=1; the default run keeps their fast cases.
def pytest_addoption(parser):
  parser.addoption("--run-slow", action="store_true", default=False,
                   help="also run the tests marked slow")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: minutes of work; runs with --run-slow or "
                          "DSBS_RUN_SLOW=1")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--run-slow") or os.environ.get("DSBS_RUN_SLOW") == "1":
    return
  skip = pytest.mark.skip(reason="slow: run with --run-slow (or DSBS_RUN_SLOW=1)")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)

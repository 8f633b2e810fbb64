"""Shared pytest fixtures: where the released data lives, tiny configs."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


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

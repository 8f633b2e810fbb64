"""Nested train subsets: sizes, nesting, determinism, and what the tasks see."""
import dataclasses

import pytest
import seqio

from dsbs.tasks import fractions
import dsbs.tasks  # registers tasks  # noqa: F401


@dataclasses.dataclass
class _Row:
  id: str


def test_sizes_and_nesting():
  rows = [_Row(f"r{i}") for i in range(997)]
  previous = set()
  for pct in fractions.FRACTIONS:
    subset = fractions.nested_subset(rows, pct)
    ids = {r.id for r in subset}
    assert len(subset) == fractions.subset_size(997, pct)
    assert previous <= ids
    previous = ids
  assert len(previous) == 997
  assert fractions.subset_size(997, 0.5) == 5 and fractions.subset_size(30, 10) == 3
  assert fractions.subset_size(3, 0.5) == 1 and fractions.subset_size(0, 50) == 0


def test_independent_of_order():
  rows = [_Row(f"r{i}") for i in range(200)]
  a = {r.id for r in fractions.nested_subset(rows, 10)}
  b = {r.id for r in fractions.nested_subset(list(reversed(rows)), 10)}
  assert a == b
  kept = fractions.nested_subset(rows, 25)
  assert [r.id for r in kept] == sorted((r.id for r in kept), key=lambda s: int(s[1:]))


@pytest.mark.parametrize("pct", [0, -1, 101, float("nan"), 33.3333333])
def test_bad_fraction(pct):
  with pytest.raises(ValueError):
    fractions.nested_subset([_Row("a")], pct)


def test_suffix():
  assert fractions.fraction_suffix(100) == ""
  assert fractions.fraction_suffix(0.5) == "_pct0.5"
  assert fractions.fraction_suffix(10) == "_pct10"


def _ids(name, split):
  source = seqio.get_mixture_or_task(name).source
  return [x.decode() for x in source.get_dataset(split, shuffle=False)
          .map(lambda ex: ex["id"]).as_numpy_iterator()]


def test_task_subsets_nested_and_paired(data_dir, monkeypatch):
  monkeypatch.setenv("DSBS_DATA_DIR", data_dir)
  gt = {p: set(_ids(f"svamp_label_gt_pct{p}_byte", "train")) for p in (5, 20)}
  full = set(_ids("svamp_label_gt_byte", "train"))
  assert gt[5] <= gt[20] <= full
  assert len(gt[20]) == fractions.subset_size(len(full), 20)
  # label_llm and rationale subset BEFORE filtering on parse status: same inputs.
  llm = set(_ids("svamp_label_llm_pct20_byte", "train"))
  rationale = set(_ids("svamp_rationale_pct20_byte", "train"))
  assert llm == rationale and llm <= gt[20]
  # validation and test are never subset.
  for split in ("validation", "test"):
    assert _ids(f"svamp_label_gt_pct5_byte", split) == _ids("svamp_label_gt_byte", split)

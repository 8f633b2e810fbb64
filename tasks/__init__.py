"""SeqIO tasks and mixtures for distilling step-by-step (installed as `dsbs.tasks`).

Importing this package registers, for each built-in dataset (anli1, esnli, cqa, svamp and the
synthetic arith set) and for each user dataset listed in $DSBS_USER_DATASETS, every task and
mixture of the family described in `registry.py` (names, suffixes `_pct<p>`, `_rate<r>`,
`_byte`). Nothing is read from disk until a task's data is requested.

Environment, read at import: DSBS_VOCAB (default vocabulary: "t5", "byte" or a .model path),
DSBS_USER_DATASETS (JSON list of user datasets, see `user.py`), DSBS_SOURCE ("records" or "tfds",
see `sources.py`) with DSBS_TFDS_DIR; DSBS_DATA_DIR is read when data is first loaded.

Public API:
  register_dataset(name, train=..., validation=..., test=..., kind=..., label_space=...)
  mixture(dataset, method="dsbs", fraction=100, label_rate=0.5, vocab=None) -> name   (gin)
  task_name(...), mixture_name(...), datasets(), FRACTIONS, RATES
"""
from __future__ import annotations

import functools
import os

import dsbs.data
from dsbs.data import released
from dsbs.data.benchmarks import SPECS
from dsbs.tasks import registry
from dsbs.tasks import sources
from dsbs.tasks import user
from dsbs.tasks.fractions import FRACTIONS
from dsbs.tasks.registry import RATES, datasets, mixture, mixture_name, task_name
from dsbs.tasks.user import register_dataset, register_from_config, read_user_jsonl


def _builtin_loader(name: str):
  """$DSBS_SOURCE: "records" (default, dsbs.data.load_examples) or "tfds" (prepared TFDS)."""
  source = os.environ.get("DSBS_SOURCE", "records").strip() or "records"
  if source == "records":
    return functools.partial(dsbs.data.load_examples, name)
  if source == "tfds":
    return sources.TfdsLoader(name, os.environ.get("DSBS_TFDS_DIR") or None)
  raise ValueError(f"DSBS_SOURCE must be 'records' or 'tfds', got {source!r}")


def _register_builtins() -> None:
  for name in dsbs.data.ALL_DATASETS:
    if name in registry.datasets():
      continue
    space = dsbs.data.label_space(name)
    carved = name in SPECS and SPECS[name].files["validation"] is None
    registry.add_dataset(registry.DatasetDef(
        name=name,
        loader=_builtin_loader(name),
        splits=tuple(dsbs.data.SPLITS),
        kind=dsbs.data.kind(name),
        label_space=tuple(space) if space else None,
        validation_origin=f"validation is {released.VALIDATION_RULE}" if carved else None,
    ))


_register_builtins()
user.register_from_env()

__all__ = ["FRACTIONS", "RATES", "datasets", "mixture", "mixture_name", "read_user_jsonl",
           "register_dataset", "register_from_config", "task_name"]

"""Lists the tasks of a dataset with their example counts and skipped records.

  python -m dsbs.tasks --dataset=svamp [--fraction=10] [--vocab=byte] [--splits=train,test]

Reads the data (unlike `import dsbs.tasks`), so it shows exactly what each task trains and is
scored on: kept records per split and, per reason, the records a task skipped.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import seqio

from dsbs.tasks import registry


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m dsbs.tasks", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dataset", required=True)
  parser.add_argument("--fraction", type=float, default=100)
  parser.add_argument("--vocab", default=None, help="t5, byte or a .model path (default: env)")
  parser.add_argument("--splits", default="train,validation,test")
  args = parser.parse_args(argv)

  defn = registry.get_dataset_def(args.dataset)
  splits = [s for s in args.splits.split(",") if s in defn.splits]
  print(f"dataset {defn.name}: kind={defn.kind} label_space={defn.label_space} "
        f"splits={list(defn.splits)}")
  for variant in registry.TASK_VARIANTS:
    name = registry.mixture(args.dataset, variant, args.fraction, vocab=args.vocab)
    source = seqio.get_mixture_or_task(name).source
    cells = []
    for split in splits:
      try:
        n = source.num_input_examples(split)
      except Exception as e:  # pylint: disable=broad-except  # a missing split is reported
        cells.append(f"{split}: unavailable ({type(e).__name__}: {str(e).splitlines()[0][:80]})")
        continue
      skipped = source.skip_counts(split)
      note = f" (skipped {', '.join(f'{c} {why}' for why, c in sorted(skipped.items()))})"
      cells.append(f"{split}: {n}" + (note if skipped else ""))
    print(f"  {name:<40} " + "; ".join(cells))
  return 0


if __name__ == "__main__":
  sys.exit(main())

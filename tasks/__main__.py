"""Lists the tasks of a dataset with their example counts and skipped records.

  python -m dsbs.tasks --dataset=svamp [--fraction=10] [--vocab=byte] [--splits=train,test]

Reads the data (unlike `import dsbs.tasks`), so it shows exactly what each task trains and is
scored on: kept records per split and, per reason, the records a task skipped. A split that
cannot be read (a malformed row, a missing file) is one `error:` line with the whole message
(said once, however many splits and tasks read that file), and the exit status is 2.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from typing import Sequence

import seqio

from dsbs.tasks import registry, sources


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m dsbs.tasks", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dataset", required=True)
  parser.add_argument("--fraction", type=float, default=100)
  parser.add_argument("--vocab", default=None, help="t5, byte or a .model path (default: env)")
  parser.add_argument("--splits", default=None, help="comma list (default: the dataset's)")
  args = parser.parse_args(argv)

  known = sorted(registry.datasets())
  if args.dataset not in known:
    near = difflib.get_close_matches(args.dataset, known, n=3)
    print(f"error: --dataset={args.dataset}: not a registered dataset"
          + (f" (did you mean {', '.join(near)}?)" if near else "") + f"; registered: {known}",
          file=sys.stderr)
    return 2
  defn = registry.get_dataset_def(args.dataset)
  wanted = [s for s in args.splits.split(",") if s] if args.splits else list(defn.splits)
  print(f"dataset {defn.name}: kind={defn.kind} label_space={defn.label_space} "
        f"splits={list(defn.splits)}")
  if defn.validation_origin:
    print(f"  {defn.validation_origin}")
  status = 0
  splits, said = [], set()
  for split in wanted:
    if split not in defn.splits:
      print(f"error: {defn.name} has no split {split!r} (its splits: {list(defn.splits)})",
            file=sys.stderr)
      status = 2
      continue
    try:  # read once here: every task of the dataset reads the same records
      sources.load_split(defn.name, defn.loader, split)
    except Exception as e:  # pylint: disable=broad-except  (any reader's error, said in full)
      message = " ".join(str(e).split())
      if message not in said:  # splits read from one file fail alike: said once
        print(f"error: {defn.name} {split}: {message}", file=sys.stderr)
        said.add(message)
      status = 2
      continue
    splits.append(split)
  for variant in registry.TASK_VARIANTS:
    name = registry.mixture(args.dataset, variant, args.fraction, vocab=args.vocab)
    source = seqio.get_mixture_or_task(name).source
    cells = []
    for split in splits:
      n = source.num_input_examples(split)
      skipped = source.skip_counts(split)
      note = f" (skipped {', '.join(f'{c} {why}' for why, c in sorted(skipped.items()))})"
      cells.append(f"{split}: {n}" + (note if skipped else ""))
    print(f"  {name:<40} " + "; ".join(cells))
  return status


if __name__ == "__main__":
  sys.exit(main())

"""`python -m dsbs.data {stats,export,prepare}`: inspect, export and TFDS-build the datasets.

  python -m dsbs.data stats --dataset=svamp --split=train [--json] [--data_dir=DIR]
  python -m dsbs.data export --dataset=cqa --split=test --output=cqa_test.jsonl
  python -m dsbs.data prepare --dataset=svamp [--data_dir=DIR] [--tfds_dir=DIR]

Errors (missing split, malformed row, no data dir) print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from dsbs.data import benchmarks, datadir, loader, record, released, stats
from dsbs.data.record import RecordError


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m dsbs.data", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  for name, help_text in (("stats", "parse statuses, teacher accuracy, rationale lengths"),
                          ("export", "write canonical JSONL"),
                          ("prepare", "build the TFDS dataset")):
    s = sub.add_parser(name, help=help_text)
    s.add_argument("--dataset", required=True, choices=benchmarks.ALL_DATASETS)
    s.add_argument("--data_dir", default=None, help="released data (default: $DSBS_DATA_DIR or cache)")
    if name in ("stats", "export"):
      s.add_argument("--split", default="train", choices=benchmarks.SPLITS)
    if name == "stats":
      s.add_argument("--json", action="store_true", help="print one JSON object")
    if name == "export":
      s.add_argument("--output", required=True, help="JSONL path (local or gs://)")
    if name == "prepare":
      s.add_argument("--tfds_dir", default=None, help="TFDS data dir (default: TFDS's own)")
  return p


def _run(args: argparse.Namespace) -> None:
  if args.command == "prepare":
    # TensorFlow Datasets (seconds to import) only for this subcommand
    from dsbs.data import tfds_builders  # pylint: disable=g-import-not-at-top

    out = tfds_builders.prepare(args.dataset, tfds_dir=args.tfds_dir, data_dir=args.data_dir)
    print(f"built {tfds_builders.tfds_name(args.dataset)} in {out}")
    return
  examples = loader.load_examples(args.dataset, args.split, args.data_dir)
  if args.command == "export":
    n = record.write_jsonl(args.output, examples)
    print(f"wrote {n} records to {args.output}")
    return
  result = stats.compute_stats(examples, benchmarks.kind(args.dataset))
  if args.json:
    print(json.dumps({"dataset": args.dataset, "split": args.split, **result}, sort_keys=True))
  else:
    print(stats.format_table(f"{args.dataset}/{args.split}", result))


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

  try:
    _run(args)
  except (RecordError, released.MissingSplitError, datadir.DataDirError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Data layer: readers and parsers of the released benchmarks, the canonical record.

Public API: `DATASETS`, `SPECS`, `label_space`, `kind`, `load_examples`, `resolve_data_dir`,
`parse_output` / `parse_released`, `MissingSplitError`, and the record types. TensorFlow is
imported only by `dsbs.data.tfds_builders` (and by `dsbs.fileio` for remote paths).
"""
from dsbs.data.benchmarks import (ALL_DATASETS, DATASETS, SPECS, SPLITS, DatasetSpec, kind,
                                  label_space, parse_released)
from dsbs.data.datadir import DataDirError, resolve_data_dir
from dsbs.data.loader import load_examples
from dsbs.data.parse import ANSWER_KINDS, ParseResult, parse_output
from dsbs.data.record import Example, RecordError, read_jsonl, write_jsonl
from dsbs.data.released import MissingSplitError

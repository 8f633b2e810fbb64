"""Data layer: readers and parsers of the released benchmarks, the canonical record."""
from dsbs.data.record import Example, RecordError, read_jsonl, write_jsonl

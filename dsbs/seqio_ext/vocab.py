"""Vocabularies by name, and a command that trains a SentencePiece model on a dataset.

Specs accepted by `get_vocabulary`:
  "t5"            the public T5 / T5 1.1 SentencePiece model (`cc_all.32000.100extra`: 32k pieces
                  with the 100 sentinel ids already inside the model file, 32,100 ids in all, as
                  T5X's T5 1.1 gin files use it), read lazily from gs://t5-data on first
                  encode/decode, so registering tasks is offline.
  "byte"          `seqio.ByteVocabulary()`: no file, works offline (tests, tiny runs).
  "<path>.model"  any SentencePiece model, local or gs:// (e.g. one trained by the command below);
                  append "?extra_ids=N" to add N sentinel ids (default 0).
The default spec is $DSBS_VOCAB, else "t5".

Train one (ids follow T5: pad 0, eos 1, unk 2, no bos):

  python -m dsbs.seqio_ext.vocab train --dataset=arith --output=/tmp/arith.model --vocab_size=500
  python -m dsbs.seqio_ext.vocab train --jsonl=my_train.jsonl --output=gs://b/v.model
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
from typing import Iterable, Iterator, Sequence

import sentencepiece as spm

import dsbs.data
from dsbs import fileio

T5_SPM_PATH = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
T5_EXTRA_IDS = 0  # the .100extra model file already holds the sentinels
ENV_VAR = "DSBS_VOCAB"
DEFAULT_SPEC = "t5"


def default_spec() -> str:
  """The vocabulary spec used when none is given: $DSBS_VOCAB, else "t5"."""
  return os.environ.get(ENV_VAR, "").strip() or DEFAULT_SPEC


def _split_extra_ids(spec: str) -> tuple[str, int]:
  if "?extra_ids=" not in spec:
    return spec, 0
  path, _, n = spec.partition("?extra_ids=")
  try:
    extra = int(n)
  except ValueError:
    raise ValueError(f"vocabulary spec {spec!r}: extra_ids must be an integer") from None
  if extra < 0:
    raise ValueError(f"vocabulary spec {spec!r}: extra_ids must be >= 0")
  return path, extra


@functools.lru_cache(maxsize=None)
def _cached(spec: str):
  # SeqIO (~6 s to import) only when a vocabulary is built: the SentencePiece training command
  # of this module needs none
  import seqio  # pylint: disable=g-import-not-at-top

  if spec == "t5":
    return seqio.SentencePieceVocabulary(T5_SPM_PATH, extra_ids=T5_EXTRA_IDS)
  if spec == "byte":
    return seqio.ByteVocabulary()
  path, extra = _split_extra_ids(spec)
  if not path.endswith(".model"):
    raise ValueError(
        f"unknown vocabulary spec {spec!r}: expected 't5', 'byte' or a SentencePiece "
        "'.model' path (local or gs://)")
  if not fileio.is_remote(path) and not os.path.exists(path):
    raise FileNotFoundError(f"vocabulary spec {spec!r}: no such file {path}")
  if not fileio.is_remote(path):
    path = os.path.abspath(path)
  return seqio.SentencePieceVocabulary(path, extra_ids=extra)


def get_vocabulary(spec: str | None = None):
  """A `seqio.Vocabulary` for `spec` ("t5", "byte", a .model path); same object per spec."""
  return _cached((spec or default_spec()).strip())


def spec_suffix(spec: str) -> str:
  """Task-name suffix for a spec: "" for "t5", "_byte" for "byte"; paths have no suffix."""
  if spec == "t5":
    return ""
  if spec == "byte":
    return "_byte"
  raise ValueError(f"only 't5' and 'byte' have task-name suffixes, not {spec!r}")


# ---------------------------------------------------------------------------------------------
# Training a SentencePiece model on task text.


def corpus_lines(examples: Iterable[object]) -> Iterator[str]:
  """Every string the tasks feed the model: prefixed inputs, labels, rationales."""
  for ex in examples:
    yield "predict: " + ex.input
    yield "explain: " + ex.input
    for text in (ex.label, ex.teacher_label, ex.rationale):
      if text:
        yield text


def train_sentencepiece(lines: Iterable[str], output: str, vocab_size: int,
                        model_type: str = "unigram", character_coverage: float = 1.0,
                        byte_fallback: bool = False) -> str:
  """Trains a SentencePiece model with T5 ids (pad 0, eos 1, unk 2) and writes it to `output`.

  `byte_fallback` spells characters unseen in training as UTF-8 bytes instead of unk (adds 256
  pieces, so vocab_size must exceed 256 + the pieces wanted).
  """
  if not output.endswith(".model"):
    raise ValueError(f"--output must end with .model, got {output!r}")
  lines = [l.replace("\n", " ").strip() for l in lines]
  lines = [l for l in lines if l]
  if not lines:
    raise ValueError("no text to train a vocabulary on")
  with tempfile.TemporaryDirectory() as tmp:
    prefix = os.path.join(tmp, "spm")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=prefix, vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
        byte_fallback=byte_fallback,
        num_threads=min(4, os.cpu_count() or 1), minloglevel=2)
    with open(prefix + ".model", "rb") as f:
      blob = f.read()
  parent = os.path.dirname(output)
  if parent:
    fileio.makedirs(parent)
  with fileio.open_bytes(output, "wb") as f:
    f.write(blob)
  return output


def _examples_for(args: argparse.Namespace) -> list[object]:
  if args.jsonl:
    # dsbs.tasks imports this module (and SeqIO): imported here
    from dsbs.tasks import user  # pylint: disable=g-import-not-at-top

    out = []
    for path in args.jsonl:
      out.extend(user.read_user_jsonl(path))
    return out
  return list(dsbs.data.load_examples(args.dataset, args.split, data_dir=args.data_dir))


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m dsbs.seqio_ext.vocab", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  train = sub.add_parser("train", help="train a SentencePiece model on a dataset's text")
  src = train.add_mutually_exclusive_group(required=True)
  src.add_argument("--dataset", help="a dsbs dataset name (anli1, esnli, cqa, svamp, arith)")
  src.add_argument("--jsonl", action="append", help="canonical or plain JSONL file(s)")
  train.add_argument("--split", default="train")
  train.add_argument("--data_dir", default=None)
  train.add_argument("--output", required=True, help="path of the .model to write (local/gs://)")
  train.add_argument("--vocab_size", type=int, default=8000)
  train.add_argument("--model_type", default="unigram", choices=("unigram", "bpe", "char", "word"))
  train.add_argument("--character_coverage", type=float, default=1.0)
  train.add_argument("--byte_fallback", action="store_true",
                     help="spell unseen characters as bytes instead of unk")
  args = parser.parse_args(argv)

  examples = _examples_for(args)
  path = train_sentencepiece(corpus_lines(examples), args.output, args.vocab_size,
                             args.model_type, args.character_coverage, args.byte_fallback)
  vocab = get_vocabulary(path)
  print(f"wrote {path}: {vocab.vocab_size} ids from {len(examples)} examples; "
        f"use it as DSBS_VOCAB={path} or dsbs.tasks.mixture(..., vocab={path!r})")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Vocabulary specs and the SentencePiece training command."""
import seqio
import pytest

import dsbs.tasks
from dsbs.seqio_ext import vocab


def test_byte_and_t5_specs_offline():
  assert isinstance(vocab.get_vocabulary("byte"), seqio.ByteVocabulary)
  t5 = vocab.get_vocabulary("t5")  # constructing it must not touch gs://
  assert isinstance(t5, seqio.SentencePieceVocabulary)
  assert t5.sentencepiece_model_file == vocab.T5_SPM_PATH and t5.extra_ids == 0  # sentinels live in the .100extra file
  assert vocab.get_vocabulary("byte") is vocab.get_vocabulary("byte")


def test_default_from_env(monkeypatch):
  monkeypatch.setenv("DSBS_VOCAB", "byte")
  assert isinstance(vocab.get_vocabulary(), seqio.ByteVocabulary)
  monkeypatch.delenv("DSBS_VOCAB")
  assert vocab.default_spec() == "t5"


@pytest.mark.parametrize("spec", ["nope", "/no/such/file.model", "x.model?extra_ids=many"])
def test_bad_specs(spec):
  with pytest.raises((ValueError, FileNotFoundError)):
    vocab.get_vocabulary(spec)


def test_train_command_and_use_as_spec(tmp_path, capsys):
  out = str(tmp_path / "sub" / "arith.model")
  assert vocab.main(["train", "--dataset=arith", "--split=validation", f"--output={out}",
                     "--vocab_size=120"]) == 0
  assert "wrote" in capsys.readouterr().out
  v = vocab.get_vocabulary(out)
  assert (v.pad_id, v.eos_id, v.unk_id) == (0, 1, 2)
  text = "predict: Max has 16 shells. How many shells does Max have?"
  ids = v.encode(text)
  assert ids and v.decode(ids) == text
  with_extra = vocab.get_vocabulary(out + "?extra_ids=10")
  assert with_extra.vocab_size == v.vocab_size + 10
  # The trained model works as a task vocabulary, registered on demand.
  name = dsbs.tasks.mixture("arith", "finetune", fraction=1, vocab=out)
  assert name.startswith("arith_finetune_pct1_vocab")
  ex = next(seqio.get_mixture_or_task(name).get_dataset(
      {"inputs": 512, "targets": 8}, split="validation", shuffle=False).as_numpy_iterator())
  assert ex["inputs"][-1] == 1
  assert v.decode(ex["inputs"].tolist()) == ex["inputs_pretokenized"].decode()


def test_byte_fallback(tmp_path):
  out = str(tmp_path / "bf.model")
  lines = ["predict: Max has 16 shells.", "Start with 16."] * 50
  vocab.train_sentencepiece(lines, out, 300, byte_fallback=True)
  v = vocab.get_vocabulary(out)
  assert v.decode(v.encode("Wörld 42!")) == "Wörld 42!"


def test_train_rejects_bad_output(tmp_path):
  with pytest.raises(ValueError, match=".model"):
    vocab.train_sentencepiece(["a b c"], str(tmp_path / "x.spm"), 50)

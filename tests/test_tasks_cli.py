"""`python -m dsbs.tasks`: per-task counts and skip reasons."""
from dsbs.data import record
import dsbs.tasks
from dsbs.tasks import __main__ as cli


def test_lists_counts_and_skips(tmp_path, capsys):
  path = str(tmp_path / "t.jsonl")
  record.write_jsonl(path, [
      record.Example(id="a", input="x", label="1", teacher_label="1", rationale="r",
                     parse_status=record.OK),
      record.Example(id="b", input="y", label="2", parse_status=record.NO_ANSWER)])
  dsbs.tasks.register_dataset("toy_cli", train=path, kind="numeric", replace=True,
                              vocabs=("byte",), fractions=(100,), rates=())
  assert cli.main(["--dataset=toy_cli", "--vocab=byte"]) == 0
  out = capsys.readouterr().out
  assert "toy_cli_label_gt_byte" in out and "train: 2" in out
  assert "toy_cli_rationale_byte" in out and "train: 1 (skipped 1 parse_status=no_answer)" in out

"""`python -m dsbs.data`: stats JSON, readable table, export, one-line errors with exit code 2."""
import json
import os
import subprocess
import sys

from dsbs.data import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, env=None):
  return subprocess.run([sys.executable, "-m", "dsbs.data", *args], capture_output=True, text=True,
                        cwd=REPO, env={**os.environ, **(env or {})}, timeout=120, check=False)


def test_stats_json_and_table(data_dir):
  r = _cli("stats", "--dataset=svamp", "--split=test", "--json", f"--data_dir={data_dir}")
  assert r.returncode == 0, r.stderr
  out = json.loads(r.stdout)  # exactly one JSON object on stdout
  assert out["rows"] == 200 and out["dataset"] == "svamp" and out["split"] == "test"
  assert out["parse_failures"] == 7 and out["status_counts"]["ok"] == 193
  assert out["teacher_accuracy"] == 77.5  # svamp compares equation values
  assert set(out["rationale_len_chars"]) == {"p50", "p90", "p99"}
  r = _cli("stats", "--dataset=arith", "--split=validation")
  assert r.returncode == 0, r.stderr
  assert "arith/validation: 500 rows" in r.stdout and "rationale words" in r.stdout
  assert "p99=" in r.stdout and "teacher accuracy" in r.stdout


def test_export_writes_canonical_jsonl(tmp_path, data_dir):
  out = tmp_path / "cqa_test.jsonl"
  r = _cli("export", "--dataset=cqa", "--split=test", f"--output={out}", f"--data_dir={data_dir}")
  assert r.returncode == 0, r.stderr
  rows = list(read_jsonl(str(out)))
  assert len(rows) == 1221 and rows[0].label == "wooded area" and rows[0].meta["choices"]


def test_errors_are_one_line_exit_2(tmp_path, data_dir):
  r = _cli("stats", "--dataset=anli1", "--split=train", f"--data_dir={data_dir}")
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert r.stderr.startswith("error: anli1 split 'train' needs ") and r.stderr.count("\n") == 1
  bad = tmp_path / "svamp"
  (bad / "llm").mkdir(parents=True)
  (bad / "svamp_test.json").write_text('{"input": "a"}\n')
  r = _cli("stats", "--dataset=svamp", "--split=test", f"--data_dir={tmp_path}")
  assert r.returncode == 2 and "svamp_test.json:1: field 'label': missing required field" in r.stderr
  r = _cli("stats", "--dataset=svamp", "--split=test",
           env={"DSBS_DATA_DIR": str(tmp_path / "nowhere")})
  assert r.returncode == 2 and "DSBS_DATA_DIR" in r.stderr and "Traceback" not in r.stderr


def test_data_layer_import_stays_light():
  code = ("import sys, dsbs.data, dsbs.data.stats, dsbs.data.synthetic, dsbs.data.__main__; "
          "print(sorted(m for m in ('tensorflow', 'seqio', 'tensorflow_datasets', 'jax') "
          "if m in sys.modules))")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                     timeout=60, check=True)
  assert r.stdout.strip() == "[]"

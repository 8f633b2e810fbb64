"""launch/: sweep expansion and command rendering, and metric collection from local fake run dirs
(the TPU VM launcher: tests/test_launch_tpu.py)."""
from __future__ import annotations

import json
import pathlib
import shlex
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "launch"))

import collect  # pylint: disable=g-import-not-at-top,wrong-import-position
import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position


def _fake_name(dataset, method, data_pct=100, label_rate=None):
  ds = sweep.TASK_DATASET[dataset]
  return (f"{ds}_{method}" + (f"_pct{data_pct:g}" if data_pct != 100 else "")
          + (f"_rate{label_rate:g}" if label_rate not in (None, 0.5) else ""))


def _definition(**overrides):
  d = {"name": "t", "model_dir_root": "gs://b/sweeps", "zone": "us-central2-b",
       "accelerator": {"220m": "v4-8", "770m": "v4-32"},
       "axes": {"dataset": "anli", "size": ["220m", "770m"], "method": ["dsbs", "finetune"],
                "label_rate": [0.25, 0.5], "data_pct": [10, 100], "seed": [0, 1]}}
  d.update(overrides)
  return d


def _expand(d):
  return sweep.expand(d, "def.json", mixture_name=_fake_name,
                      uses_label_rate=lambda m: m.startswith("dsbs"))


# --- sweep.py ---------------------------------------------------------------------------------

def test_expand_grid_collapses_axes_a_method_ignores():
  jobs, collapsed = _expand(_definition())
  # dsbs: 2 sizes x 2 rates x 2 pcts x 2 seeds = 16; finetune ignores rate: 2 x 2 x 2 = 8.
  assert len(jobs) == 24 and collapsed == 8
  names = [j.name for j in jobs]
  assert len(set(names)) == len(names)
  ft = [j for j in jobs if j.cell["method"] == "finetune"]
  assert all(j.cell["label_rate"] is None for j in ft)
  job = next(j for j in jobs if j.cell == {**j.cell, "method": "dsbs", "label_rate": 0.25,
                                          "data_pct": 10, "size": "770m", "seed": 1})
  assert job.gin_file == "gin_configs/anli_770m.gin" and job.accelerator == "v4-32"
  assert job.bindings == ("MIXTURE_OR_TASK_NAME='anli1_dsbs_pct10_rate0.25'", "RANDOM_SEED=1")
  assert job.model_dir == f"gs://b/sweeps/t/{job.name}" and job.cell["task"] in job.bindings[0]


def test_expand_adds_alpha_and_extra_bindings():
  d = _definition(gin={"BATCH_SIZE": 128})
  d["axes"] = {"dataset": "svamp", "size": "220m", "method": "dsbs", "alpha": [0.3, 0.7]}
  jobs, _ = _expand(d)
  assert [j.bindings for j in jobs] == [
      ("MIXTURE_OR_TASK_NAME='svamp_dsbs'", "LOSS_ALPHA=0.3", "BATCH_SIZE=128"),
      ("MIXTURE_OR_TASK_NAME='svamp_dsbs'", "LOSS_ALPHA=0.7", "BATCH_SIZE=128")]


@pytest.mark.parametrize("patch,field", [
    ({"name": "Bad_Name"}, "name"),
    ({"model_dir_root": "/local"}, "model_dir_root"),
    ({"colour": 1}, "colour"),
    ({"accelerator": {"220m": "v4-8"}}, "accelerator"),
    ({"axes": {"dataset": "mnli", "size": "220m", "method": "dsbs"}}, "axes.dataset"),
    ({"axes": {"dataset": "anli", "size": "60m", "method": "dsbs"}}, "axes.size"),
    ({"axes": {"dataset": "anli", "size": "220m"}}, "axes.method"),
    ({"axes": {"dataset": "anli", "size": "220m", "method": "dsbs", "lr": [1]}}, "axes.lr"),
])
def test_bad_definitions_name_the_field(patch, field):
  with pytest.raises(sweep.SweepError) as e:
    _expand(_definition(**patch))
  assert e.value.field == field and "def.json" in str(e.value)


def test_render_tpu_vm_and_local_commands():
  d = _definition(data_dir="gs://b/data", spot=True)
  job = _expand(d)[0][0]
  argv = sweep.render(job, d)
  assert argv[0] == "launch/tpu_vm.sh" and f"--name=t-{job.name}" in argv
  assert f"--model_dir={job.model_dir}" in argv and "--spot" in argv
  assert "--data_dir=gs://b/data" in argv and f"--gin={job.bindings[0]}" in argv
  cell = json.loads(next(a for a in argv if a.startswith("--job_json="))[len("--job_json="):])
  assert cell["task"] == job.cell["task"] and cell["sweep"] == "t"
  local = _definition(target="local", model_dir_root="/tmp/sweeps", engine="dsbs")
  argv = sweep.render(_expand(local)[0][0], local)
  assert argv[1:3] == ["-m", "dsbs.train"] and argv[4].startswith("--model_dir=/tmp/sweeps/t/")


def test_long_vm_names_stay_unique_and_valid():
  d = _definition(name="a-very-long-sweep-name-that-goes-on-and-on")
  argvs = [sweep.render(j, d) for j in _expand(d)[0]]
  names = [a[1][len("--name="):] for a in argvs]
  assert len(set(names)) == len(names)
  assert all(len(n) <= 63 and sweep._NAME.match(n) for n in names)


def test_shipped_sweeps_dry_run_with_registered_names(capsys):
  seqio = pytest.importorskip("seqio")
  for path in sorted((REPO / "launch" / "sweeps").glob("*")):
    assert sweep.main([str(path), "--dry_run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines, path
    for line in lines:
      argv = shlex.split(line)
      task = next(a for a in argv if a.startswith("--gin=MIXTURE_OR_TASK_NAME="))
      seqio.get_mixture_or_task(task.split("=", 2)[2].strip("'"))  # raises if unregistered
      assert (REPO / next(a for a in argv if a.startswith("--gin_file="))[11:]).exists()


# --- collect.py -------------------------------------------------------------------------------

def _write_jsonl(path: pathlib.Path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _fake_sweep(root: pathlib.Path):
  for seed, accs in ((0, [40.0, 55.0, 50.0]), (1, [42.0, 51.0, 53.0])):
    run = root / f"anli1-dsbs-770m-s{seed}"
    run.mkdir(parents=True)
    (run / "dsbs_job.json").write_text(json.dumps(
        {"sweep": "t", "dataset": "anli", "size": "770m", "method": "dsbs", "seed": seed,
         "task": "anli1_dsbs", "label_rate": None}))
    _write_jsonl(run / "inference_eval" / "anli1_label_gt-metrics.jsonl",
                 [{"step": 1_000_000 + 500 * (i + 1), "accuracy": a} for i, a in enumerate(accs)])
    _write_jsonl(run / "test_eval" / "inference_eval" / "anli1_label_gt-metrics.jsonl",
                 [{"step": 1_001_500, "accuracy": accs[-1] - 1}])
  runner = root / "runner"
  _write_jsonl(runner / "metrics.jsonl", [
      {"step": 100, "kind": "train", "loss": 2.0},
      {"step": 100, "kind": "eval", "accuracy": 10.0, "loss": 1.5},
      {"step": 200, "kind": "eval", "accuracy": 20.0, "loss": 1.2}])
  (root / "pending").mkdir()
  (root / "pending" / "dsbs_job.json").write_text("{}")


def test_collect_reads_t5x_and_runner_run_dirs(tmp_path):
  _fake_sweep(tmp_path)
  runs = collect.find_run_dirs([str(tmp_path)])
  assert [pathlib.Path(r).name for r in runs] == ["anli1-dsbs-770m-s0", "anli1-dsbs-770m-s1",
                                                 "pending", "runner"]
  rows = [r for run in runs for r in collect.collect_run(run)]
  by = {(r["run"], r["source"]): r for r in rows}
  assert by[("anli1-dsbs-770m-s0", "t5x.train")]["accuracy"] == 50.0  # last step
  assert by[("anli1-dsbs-770m-s0", "t5x.train")]["step"] == 1_001_500
  assert by[("anli1-dsbs-770m-s0", "test_eval")]["accuracy"] == 49.0
  assert by[("runner", "dsbs.train")] ["accuracy"] == 20.0 and by[("runner", "dsbs.train")]["loss"] == 1.2
  best = collect.collect_run(runs[0], select="best", metric="accuracy")
  assert best[0]["accuracy"] == 55.0 and best[0]["step"] == 1_001_000
  assert collect.collect_run(runs[2]) == []


def test_collect_groups_seeds_and_renders_tables(tmp_path, capsys):
  _fake_sweep(tmp_path)
  assert collect.main([str(tmp_path), "--group_seeds", "--format=json"]) == 0
  out, err = capsys.readouterr()
  rows = json.loads(out)
  train = next(r for r in rows if r["source"] == "t5x.train")
  assert train["n"] == 2 and train["accuracy"] == pytest.approx(51.5)
  assert train["accuracy_std"] == pytest.approx(2.1213, abs=1e-3)
  assert "1 without metrics yet" in err and "pending" in err
  assert collect.main([str(tmp_path), "--format=markdown"]) == 0
  table = capsys.readouterr().out.splitlines()
  assert table[0].startswith("| run |") and len(table) == 2 + 5
  out_csv = tmp_path / "t.csv"
  assert collect.main([str(tmp_path), "--format=csv", f"--output={out_csv}"]) == 0
  assert out_csv.read_text().splitlines()[0].startswith("run,")


def test_collect_reports_malformed_metrics_with_file_and_line(tmp_path, capsys):
  run = tmp_path / "r"
  _write_jsonl(run / "inference_eval" / "x-metrics.jsonl", [{"step": 1, "accuracy": 1.0}])
  with open(run / "inference_eval" / "x-metrics.jsonl", "a") as f:
    f.write("{not json\n")
  assert collect.main([str(tmp_path)]) == 2
  assert "x-metrics.jsonl:2: malformed JSON" in capsys.readouterr().err
  assert collect.main([str(tmp_path / "missing")]) == 2

"""dsbs.report: Student t quantiles and intervals against known values and a hand computation,
the seeded bootstrap, the join of state, run records and test metrics (missing / failed /
running / corrupt cells listed, never a crash), the tables, and the plots."""
from __future__ import annotations

import csv
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from dsbs import report

# t_{0.975, df} from statistical tables (and scipy.stats.t.ppf), to 9+ digits.
T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105, 5: 2.570581836,
        10: 2.228138852, 30: 2.042272456, 100: 1.983971519}


@pytest.mark.parametrize("df,value", sorted(T975.items()))
def test_t_quantile_matches_tables(df, value):
  assert report.t_quantile(0.975, df) == pytest.approx(value, abs=2e-9)
  assert report.t_quantile(0.025, df) == pytest.approx(-value, abs=2e-9)


def test_t_cdf_and_quantile_basics():
  assert report.t_cdf(0.0, 7) == pytest.approx(0.5)
  assert report.t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
  assert report.t_quantile(0.95, 1e6) == pytest.approx(1.644854, abs=1e-5)  # -> normal
  with pytest.raises(ValueError):
    report.t_quantile(1.0, 3)


def test_t_interval_by_hand():
  mean, low, high = report.t_interval([40.0, 44.0, 45.0])
  # mean 43; sd = sqrt((9 + 1 + 4) / 2) = sqrt(7); half = t(0.975, 2) * sqrt(7) / sqrt(3).
  half = 4.302652729749464 * math.sqrt(7) / math.sqrt(3)
  assert mean == 43.0 and half == pytest.approx(6.5724, abs=1e-4)
  assert (low, high) == (pytest.approx(43 - half, abs=1e-9), pytest.approx(43 + half, abs=1e-9))
  with pytest.raises(ValueError):
    report.t_interval([1.0])


def test_bootstrap_is_seeded_and_sensible():
  correct = {"arith_label_gt": [True] * 60 + [False] * 40}
  a = report.bootstrap_interval(correct)
  assert a == report.bootstrap_interval(correct)  # same data, same seed: same interval
  assert a != report.bootstrap_interval(correct, seed=1)
  point, low, high = a
  # Binomial sd of a 60% accuracy on 100 examples is 4.9 points: the interval is about +-9.6.
  assert point == 60.0 and 49 < low < 53 and 67 < high < 71
  assert report.bootstrap_interval({"t": [True] * 10}) == (100.0, 100.0, 100.0)
  two = report.bootstrap_interval({"a": [True] * 10, "b": [False] * 30})
  assert two == (50.0, 50.0, 50.0)  # the mean of the tasks' accuracies, as evaluate reports it


# ---- a hand-made sweep dir -------------------------------------------------------------------

def _run(root, name, overrides, status="done", acc=None, metrics_text=None, predictions=None):
  run = root / "runs" / name
  (run / report.TEST_METRICS).parent.mkdir(parents=True)
  (run / "run_record.json").write_text(json.dumps(
      {"sweep": "hand", "cell": name, "overrides": overrides, "status": status,
       "git": {"commit": "c" * 40, "dirty": False}}))
  if metrics_text is not None:
    (run / report.TEST_METRICS).write_text(metrics_text)
  elif acc is not None:
    (run / report.TEST_METRICS).write_text(json.dumps(
        {"split": "test", "step": 100, "metrics": {"arith_label_gt/accuracy": acc,
                                                   "accuracy": acc}}))
  if predictions is not None:
    (run / report.TEST_PREDICTIONS).write_text("".join(
        json.dumps({"task": "arith_label_gt", "id": str(i), "correct": c}) + "\n"
        for i, c in enumerate(predictions)))
  return str(run)


FINETUNE = {25: [40.0, 44.0, 45.0], 100: [50.0, 52.0, 57.0]}
DSBS = {25: [48.0, 46.0, None], 100: [60.0, 61.0, 65.0]}  # seed 2 at 25%: corrupt metrics


@pytest.fixture()
def sweep_dir(tmp_path):
  cells = {}

  def add(name, overrides, status="done", **kw):
    run_dir = _run(tmp_path, name, overrides, status if status != "pending" else "done", **kw)
    cells[name] = {"order": len(cells), "overrides": overrides, "status": status,
                   "run_dir": run_dir, "attempts": 0 if status == "pending" else 1,
                   "exit_code": 3 if status == "failed" else None,
                   "reason": "phase train+test exited with 3" if status == "failed" else None,
                   "in_definition": True}

  base = {"dataset": "arith", "vocab": "byte", "student": "tiny"}
  for method, table in (("finetune", FINETUNE), ("dsbs", DSBS)):
    for frac, accs in table.items():
      for seed, acc in enumerate(accs):
        kw = {"acc": acc} if acc is not None else {"metrics_text": '{"metrics": {"accu'}
        add(f"arith-{method}-pct{frac}-s{seed}",
            {**base, "method": method, "fraction": float(frac), "seed": seed}, **kw)
  add("arith-dsbs_llm-pct100-s0", {**base, "method": "dsbs_llm", "fraction": 100.0, "seed": 0},
      acc=60.0, predictions=[True] * 60 + [False] * 40)
  add("arith-cot-pct100-s0", {**base, "method": "cot", "fraction": 100.0, "seed": 0}, acc=20.0)
  add("arith-cot-pct25-s0", {**base, "method": "cot", "fraction": 25.0, "seed": 0},
      metrics_text=json.dumps({"metrics": {"accuracy": "NaN"}}))
  add("arith-distill-pct25-s0", {**base, "method": "distill", "fraction": 25.0, "seed": 0},
      status="failed")
  add("arith-distill-pct100-s0", {**base, "method": "distill", "fraction": 100.0, "seed": 0},
      status="running")
  add("arith-distill-pct50-s0", {**base, "method": "distill", "fraction": 50.0, "seed": 0},
      status="pending")
  cells["old-cell"] = {"overrides": {}, "status": "done", "in_definition": False}
  (tmp_path / "state.json").write_text(json.dumps({"version": 1, "sweep": "hand",
                                                   "cells": cells}))
  return tmp_path


def _nonwhite_fraction(png: pathlib.Path) -> float:
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  img = matplotlib.image.imread(str(png))[..., :3]
  return float(np.mean(np.any(img < 0.95, axis=-1)))


def _has_colour(png: pathlib.Path, rgb: tuple[float, float, float]) -> bool:
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  img = matplotlib.image.imread(str(png))[..., :3]
  return bool(np.any(np.all(np.abs(img - np.asarray(rgb)) < 0.06, axis=-1)))


def test_report_of_a_sweep_dir(sweep_dir, capsys):
  assert report.main([str(sweep_dir)]) == 0
  out = sweep_dir / "report"
  md = (out / "report.md").read_text()
  assert capsys.readouterr().out.startswith("# Sweep report: hand")
  summary = json.loads((out / "report.json").read_text())
  groups = {(g["axes"]["method"], g["axes"]["fraction"]): g for g in summary["groups"]}
  ft = groups[("finetune", 25.0)]
  half = 4.302652729749464 * math.sqrt(7) / math.sqrt(3)
  assert ft["n"] == 3 and ft["method"] == "t" and ft["mean"] == 43.0
  assert ft["low"] == pytest.approx(43 - half) and ft["high"] == pytest.approx(43 + half)
  ds = groups[("dsbs", 25.0)]  # the corrupt seed is left out, and counted
  sd = math.sqrt(2.0)
  assert ds["n"] == 2 and ds["seeds"] == [0, 1] and ds["mean"] == 47.0
  assert ds["high"] - ds["mean"] == pytest.approx(12.706204736 * sd / math.sqrt(2), abs=1e-6)
  llm = groups[("dsbs_llm", 100.0)]
  assert llm["method"] == "bootstrap" and llm["mean"] == 60.0
  assert (llm["low"], llm["high"]) == pytest.approx(report.bootstrap_interval(
      {"arith_label_gt": [True] * 60 + [False] * 40})[1:])
  assert groups[("cot", 100.0)]["method"] == "none" and groups[("cot", 100.0)]["low"] is None
  assert summary["missing"] == ["arith-distill-pct50-s0"]
  assert summary["failed"] == ["arith-distill-pct25-s0"]
  assert summary["running"] == ["arith-distill-pct100-s0"]
  assert summary["unreadable"] == ["arith-dsbs-pct25-s2", "arith-cot-pct25-s0"]
  assert len(summary["cells"]) == 18  # old-cell is no longer in the definition
  # The pivot: methods x % of train data for the one (dataset, student, vocab) panel.
  assert "## dataset arith · student tiny · vocab byte" in md
  assert "| method | 25% | 100% |" in md
  assert f"| finetune | 43.0 ± {half:.1f} (n=3) | 53.0 ± " in md
  assert "| dsbs_llm | — | 60.0 [" in md and "]† (n=1) |" in md
  assert "| cot | — | 20.0 (n=1) |" in md
  assert "Student t over seeds" in md and "percentile bootstrap over the test examples" in md
  assert "## Missing (in the definition, never run) (1)\n\n- `arith-distill-pct50-s0`" in md
  assert "- `arith-distill-pct25-s0`: phase train+test exited with 3" in md
  assert "metrics.accuracy is 'NaN', not a number" in md
  assert "unreadable (JSONDecodeError" in md
  assert "18 in the definition; 13 with test metrics; 1 missing, 1 failed, 0 interrupted, " \
         "1 running, 2 unreadable" in md
  rows = list(csv.DictReader((out / "groups.csv").open()))
  assert len(rows) == 6 and {r["ci_method"] for r in rows} == {"t", "bootstrap", "none"}
  row = next(r for r in rows if r["method"] == "finetune" and r["fraction"] == "25.0")
  assert float(row["ci_low"]) == pytest.approx(43 - half) and row["seeds"] == "0 1 2"
  cells = list(csv.DictReader((out / "cells.csv").open()))
  assert len(cells) == 18 and cells[0]["git_commit"] == "c" * 40
  # Run dirs inside the input are shown relative to it: the report names no path of this machine.
  assert cells[0]["run_dir"] == "runs/arith-finetune-pct25-s0"
  assert all(not c["run_dir"].startswith(str(sweep_dir)) for c in summary["cells"])
  (plot,) = summary["plots"]
  png = out / plot
  assert plot == "plots/accuracy_vs_fraction-arith_tiny_byte.png"
  assert png.stat().st_size > 10_000 and _nonwhite_fraction(png) > 0.02
  assert _has_colour(png, (0.122, 0.467, 0.706))  # C0, the first method's line
  assert f"![accuracy vs % of train data]({plot})" in md
  # Paired by seed against finetune: dsbs - finetune per seed both have, t over the differences.
  paired = {(p["axes"]["method"], p["axes"]["fraction"]): p for p in summary["paired"]}
  assert paired[("dsbs", 25.0)]["seeds"] == [0, 1] and paired[("dsbs", 25.0)]["diffs"] == [8, 2]
  assert paired[("dsbs", 25.0)]["mean"] == 5.0  # seed 2 (corrupt) has no pair
  assert paired[("dsbs", 25.0)]["high"] - 5 == pytest.approx(12.706204736 * math.sqrt(18)
                                                             / math.sqrt(2), abs=1e-6)
  assert paired[("dsbs", 100.0)]["diffs"] == [10, 9, 8]
  d100 = 4.302652729749464 / math.sqrt(3)  # sd of the differences is 1
  assert paired[("dsbs", 100.0)]["low"] == pytest.approx(9 - d100)
  assert paired[("dsbs_llm", 100.0)]["diffs"] == [10.0] and paired[("dsbs_llm", 100.0)]["low"] is None
  assert paired[("cot", 100.0)]["mean"] == -30.0 and ("finetune", 25.0) not in paired
  assert "Difference from finetune (points), paired by seed" in md
  assert f"| dsbs | +5.0 ± 38.1 (n=2) | +9.0 ± {d100:.1f} (n=3) |" in md
  assert "| dsbs_llm | — | +10.0 (n=1) |" in md


def test_paired_differences_match_the_axes_finetune_has():
  """Axes finetune cells never carry (the label rate, a method's own gin axis) do not prevent a
  pair; an axis both carry with different values does."""
  def cell(seed, value, **axes):
    return report.Cell(name=f"c{seed}{sorted(axes.items())}", overrides={"seed": seed, **axes},
                       status="done", run_dir=None, value=value)
  cells = [cell(s, 50.0 + s, method="finetune", fraction=100.0) for s in (0, 1, 2)]
  cells += [cell(s, 40.0 + 2 * s, method="dsbs", fraction=100.0) for s in (0, 1, 2)]
  cells += [cell(s, 55.0 + s, method="dsbs", fraction=100.0, **{"gin.TRAIN_STEPS": 6000})
            for s in (0, 1, 2)]
  cells += [cell(0, 45.0, method="dsbs", fraction=100.0, label_rate=0.2)]
  cells += [cell(0, 99.0, method="dsbs", fraction=50.0)]  # no finetune at 50%
  cells += [cell(3, 99.0, method="dsbs", fraction=100.0, label_rate=0.2)]  # no finetune seed 3
  got = {tuple(sorted((k, v) for k, v in p.axes.items() if k != "method")): p
         for p in report.paired_differences(cells)}
  plain = got[(("fraction", 100.0),)]
  assert plain.diffs == [-10.0, -9.0, -8.0] and plain.mean == -9.0 and plain.n == 3
  longer = got[(("fraction", 100.0), ("gin.TRAIN_STEPS", 6000))]
  assert longer.diffs == [5.0, 5.0, 5.0] and longer.low == longer.high == 5.0
  rate = got[(("fraction", 100.0), ("label_rate", 0.2))]
  assert rate.diffs == [-5.0] and rate.seeds == [0] and rate.text() == "-5.0 (n=1)"
  assert len(got) == 3


def test_report_of_run_dirs_without_state_and_all_plots(tmp_path):
  for student, base in (("tiny", 20.0), ("t5_1_1_base", 50.0), ("t5_1_1_large", 60.0)):
    for method in ("finetune", "dsbs"):
      for seed in (0, 1):
        _run(tmp_path, f"{method}-{student}-s{seed}",
             {"dataset": "svamp", "student": student, "method": method, "seed": seed},
             acc=base + 5 * (method == "dsbs") + seed)
  for rate in (0.25, 0.5, 0.75):
    for alpha in (0.3, 0.7):
      _run(tmp_path, f"dsbs-r{rate}-a{alpha}",
           {"dataset": "svamp", "student": "tiny", "method": "dsbs", "label_rate": rate,
            "alpha": alpha, "seed": 0}, acc=float(k := int(20 + 40 * rate + 10 * alpha)),
           predictions=[True] * k + [False] * (100 - k))
  _run(tmp_path, "stale-predictions", {"dataset": "svamp", "student": "tiny", "method": "cot",
                                       "seed": 0}, acc=50.0, predictions=[True, False, False])
  (tmp_path / "runs" / "broken").mkdir()
  (tmp_path / "runs" / "broken" / "run_record.json").write_text("{oops")
  out = tmp_path / "out"
  cells, source = report.load(str(tmp_path))
  assert source["kind"] == "runs" and not source["knows_missing"]
  summary = report.build(cells, source, str(tmp_path), str(out))
  md = (out / "report.md").read_text()
  assert "no sweep state: never-run cells cannot be listed" in md
  assert summary["unreadable"] == ["broken"]
  bootstrapped = [g for g in summary["groups"] if "label_rate" in g["axes"]]
  assert len(bootstrapped) == 6 and {g["method"] for g in bootstrapped} == {"bootstrap"}
  assert all(g["low"] < g["mean"] < g["high"] for g in bootstrapped)
  stale = next(g for g in summary["groups"] if g["axes"]["method"] == "cot")
  assert stale["method"] == "none" and "scores 33.33, the metrics file 50.00" in md
  names = sorted(summary["plots"])
  assert [n.split("-")[0] for n in names] == [
      "plots/accuracy_vs_alpha", "plots/accuracy_vs_alpha", "plots/accuracy_vs_alpha",
      "plots/accuracy_vs_label_rate", "plots/accuracy_vs_label_rate",
      "plots/accuracy_vs_student"]
  for name in names:
    png = out / name
    assert png.stat().st_size > 10_000 and _nonwhite_fraction(png) > 0.02, name
  by = {(g.axes["method"], g.axes["student"]): g for g in report.group_cells(cells)
        if "label_rate" not in g.axes}
  assert by[("dsbs", "t5_1_1_large")].mean == 65.5 and by[("dsbs", "t5_1_1_large")].n == 2
  assert [s for s in sorted({"t5_1_1_large", "tiny", "t5_1_1_base"}, key=report.size_rank)] == [
      "tiny", "t5_1_1_base", "t5_1_1_large"]


def test_bad_inputs_are_reported_not_raised(tmp_path, capsys):
  assert report.main([str(tmp_path / "nowhere")]) == 2
  assert "no such directory" in capsys.readouterr().err
  (tmp_path / "state.json").write_text("[1, 2")
  assert report.main([str(tmp_path)]) == 2
  assert "unreadable sweep state" in capsys.readouterr().err
  empty = tmp_path / "empty"
  empty.mkdir()
  assert report.main([str(empty)]) == 0  # nothing to report is a report, not a crash
  assert "Cells: 0 found" in (empty / "report" / "report.md").read_text()


def test_local_reports_never_import_tensorflow(sweep_dir):
  code = ("import sys; from dsbs import report; rc = report.main([sys.argv[1], '--output', "
          "sys.argv[2]]); print('TF' if 'tensorflow' in sys.modules else 'no TF'); sys.exit(rc)")
  out = subprocess.run([sys.executable, "-c", code, str(sweep_dir), str(sweep_dir / "o")],
                       capture_output=True, text=True, timeout=120, check=True).stdout
  assert out.strip().endswith("no TF")


def test_validation_curves(sweep_dir):
  """Each cell's eval records (metrics.jsonl) -> the curves figure: mean over seeds, a subplot
  per fraction; a resumed run's repeated step keeps its last record, a partial line is skipped."""
  runs = sweep_dir / "runs"
  for seed in range(3):
    for method, slope in (("finetune", 1.0), ("dsbs", 2.0)):
      for frac in (25, 100):
        recs = [{"step": s, "kind": "train", "loss": 1.0} for s in (50, 100)]
        recs += [{"step": s, "kind": "eval", "accuracy": slope * s / 10 + seed + frac / 100}
                 for s in (100, 200, 300)]
        lines = [json.dumps(r) for r in recs]
        lines.insert(3, json.dumps({"step": 200, "kind": "eval", "accuracy": -1.0}))  # replaced
        (runs / f"arith-{method}-pct{frac}-s{seed}" / "metrics.jsonl").write_text(
            "\n".join(lines) + '\n{"step": 400, "kind": "ev')
  curve = report.read_curve(str(runs / "arith-dsbs-pct100-s1"), "accuracy")
  assert curve == [(100, 22.0), (200, 42.0), (300, 62.0)]
  assert report.read_curve(str(runs / "arith-cot-pct100-s0"), "accuracy") == []
  summary = report.build(*report.load(str(sweep_dir)), str(sweep_dir), str(sweep_dir / "out"))
  curves = [p for p in summary["plots"] if p.startswith("plots/validation_")]
  assert curves == ["plots/validation_accuracy_curves-arith_tiny_byte.png"]
  png = sweep_dir / "out" / curves[0]
  assert png.stat().st_size > 10_000 and _nonwhite_fraction(png) > 0.02
  assert _has_colour(png, (0.122, 0.467, 0.706))  # C0: finetune
  assert _has_colour(png, (0.580, 0.404, 0.741))  # C4: dsbs
  md = (sweep_dir / "out" / "report.md").read_text()
  assert "## Validation curves" in md and f"![validation accuracy]({curves[0]})" in md

"""The loop in minutes on a laptop CPU: 2 methods x 2 fractions x 2 seeds = 8 cells on the embedded
`arith` set, the main job's byte-level student (default_student), 20 steps each (about a minute per cell on 2 cores).
At this budget the accuracies are noise; the point is the loop: run, stop, resume, report.

  python -m launch.sweep run launch/sweeps/tiny_local.py --sweep_dir=/tmp/tiny_sweep
  python -m launch.sweep status /tmp/tiny_sweep
  python -m dsbs.report /tmp/tiny_sweep          # -> /tmp/tiny_sweep/report/report.md, plots/
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "tiny-local"
  c.description = "smoke sweep: finetune vs dsbs at 25% and 100% of arith, 2 seeds, 20 steps"
  c.engine = "dsbs"
  c.target = "local"
  c.gin = {"TRAIN_STEPS": 20, "EVAL_PERIOD": 10, "SAVING_PERIOD": 10}
  c.grid = {"dataset": "arith", "vocab": "byte", "student": "default_student",
            "method": ["finetune", "dsbs"], "fraction": [25, 100], "seed": [0, 1]}
  return c

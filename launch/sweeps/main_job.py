"""The README's main-job table: distilling step-by-step against standard finetuning on the
embedded `arith` set with the main job's settings as gin_configs/default.gin sets them (the
0.89M-parameter byte-level student from scratch, 25% of the training problems, batch 32 x 3000
steps, validation every 250), 3 seeds, each tested on the 500 test problems with its
best-on-validation checkpoint.

  python -m launch.sweep run launch/sweeps/main_job.py --sweep_dir=/tmp/dsbs_main_job
  python -m dsbs.report /tmp/dsbs_main_job      # -> /tmp/dsbs_main_job/report/report.md

Cell `arith-dsbs-s0` is the main job itself (`python -m dsbs.train --then_evaluate`). Each cell
trains what the 25% cells of launch/sweeps/arith_paper.py with the same method and seed train
(tests/test_launch_sweep.py checks the resolved experiments are equal), so that sweep's report
holds these numbers too.
"""
import ml_collections

TRAIN_STEPS = 3000  # default.gin's, stated here so that a copy can shrink it
EVAL_PERIOD = 250  # default.gin's
SEEDS = [0, 1, 2]


def get_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "name": "main-job",
      "description": "the main job (dsbs) and standard finetuning on arith, default.gin, 3 seeds",
      "engine": "dsbs", "target": "local",
      "gin": {"TRAIN_STEPS": TRAIN_STEPS, "EVAL_PERIOD": EVAL_PERIOD,
              "SAVING_PERIOD": EVAL_PERIOD},
      "grid": {"dataset": "arith", "method": ["dsbs", "finetune"], "seed": SEEDS},
  })

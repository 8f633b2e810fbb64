"""The paper's comparison in miniature, on 2 CPU cores: every method of the paper x 4 data fractions
x 3 seeds on the embedded `arith` set (48 cells), byte vocabulary, the tiny student, one shared
step budget for every method (equal rules: the same steps, evaluation period and best-on-
validation checkpoint selection), each cell tested on the test split.

  python -m launch.sweep run launch/sweeps/arith_paper.py --sweep_dir=sweeps/arith-paper
  python -m dsbs.report sweeps/arith-paper

STEP_BUDGET is the one number to set from convergence measurements: the validation curves in
each run dir's metrics.jsonl (kind "eval") must have flattened by then for every method and
fraction. The other settings come from gin_configs/default.gin (batch, lengths, learning rate).
"""
import ml_collections

STEP_BUDGET = 2000  # TRAIN_STEPS of every cell: set from the convergence measurements
EVAL_PERIOD = 250  # validation (and checkpoint) every this many steps: the curves and the best step


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "arith-paper"
  c.description = "finetune / distill / dsbs / dsbs_llm x 12.5-100% of arith x 3 seeds"
  c.engine = "dsbs"
  c.target = "local"
  c.gin = {"TRAIN_STEPS": STEP_BUDGET, "EVAL_PERIOD": EVAL_PERIOD, "SAVING_PERIOD": EVAL_PERIOD}
  c.grid = {"dataset": "arith", "vocab": "byte", "student": "tiny",
            "method": ["finetune", "distill", "dsbs", "dsbs_llm"],
            "fraction": [12.5, 25, 50, 100], "seed": [0, 1, 2]}
  return c

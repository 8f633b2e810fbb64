"""The paper's comparison in miniature, on 2 CPU cores: every method of the paper x 4 data fractions
x 3 seeds on the embedded `arith` set (48 cells, and 6 of finetune and dsbs at twice the steps on
100%: label-example parity, below), byte vocabulary, the main job's student (default_student), one shared
step budget for every method (equal rules: the same steps, evaluation period and best-on-
validation checkpoint selection), each cell tested on the test split.

  python -m launch.sweep run launch/sweeps/arith_paper.py --sweep_dir=sweeps/arith-paper \
      --max_parallel=2
  python -m dsbs.report sweeps/arith-paper

Cost, measured 2026-12-02/03 on 2 CPU cores with --max_parallel=2 (1.5x the throughput of one
at a time): 8 to 10 minutes a cell of 3000 steps, two at a time (about 20 for the label-example
parity cells), so about 5 hours for the 54. The sweep resumes where it stopped (the same
command). The fractions run one after another, each with every method and seed: 50% first,
then 25, 100, the parity cells and 12.5%; `--only='-pct50-'` runs one fraction alone.

TRAIN_STEPS is the one number to set from convergence measurements: the validation curves in
each run dir's metrics.jsonl (kind "eval") must have flattened by then for every method and
fraction. The other settings come from gin_configs/default.gin (batch, lengths, learning rate).
"""
import ml_collections

# Measured 2026-12-02 (launch.sweep probe, seed 0, 2 shared CPU cores, EVAL_PERIOD 250): validation
# accuracy of finetune on 100% of arith climbs until step 2500 and is flat to 3000 (89.0% at 2000,
# 90.0% at 2500-3000; test 90.6%, against 47.6% at the main job's 1000 steps); on 12.5% every
# method peaks by 1000-1750 and then overfits (best-on-validation selection keeps the peak).
TRAIN_STEPS = 3000  # of every cell
EVAL_PERIOD = 250  # validation (and checkpoint) every this many steps: the curves and the best step
# In the order they run: where seed 0 showed the methods apart (50%: dsbs 71.6 vs finetune 56.6;
# 25%: 35.8 vs 28.6) before where it showed them together (100%: 89.2 vs 90.6; 12.5%: all ~20%).
FRACTIONS = (50, 25, 100, 12.5)
# Label-example parity (run after 100%, before 12.5%): a dsbs step trains on half label
# (`predict:`) and half rationale (`explain:`) examples, so at equal steps dsbs has seen half the
# labels finetuning has. On 100% its validation curves still climbed at 3000 steps (seed 0: 63.5%
# at 2000, 88.0 at 2750; seed 1: 76.5 at 3000, its best) while finetuning was flat from 2500. These
# cells give dsbs on 100% twice the steps (as many label examples as finetuning at TRAIN_STEPS),
# and finetuning the same (equal steps again, at the longer budget: is it only the steps?).
PARITY_FRACTION = 100
PARITY_STEPS = 2 * TRAIN_STEPS
PARITY_METHODS = ["finetune", "dsbs"]


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "arith-paper"
  c.description = "finetune / distill / dsbs / dsbs_llm x 12.5-100% of arith x 3 seeds"
  c.engine = "dsbs"
  c.target = "local"
  c.gin = {"TRAIN_STEPS": TRAIN_STEPS, "EVAL_PERIOD": EVAL_PERIOD, "SAVING_PERIOD": EVAL_PERIOD}
  # One fraction after another, the most telling first, every seed of each: a run stopped early
  # (a session of a few hours on 2 cores holds about 24 cells) has whole 3-seed groups done.
  cells = [{"dataset": "arith", "vocab": "byte", "student": "default_student",
            "method": ["finetune", "distill", "dsbs", "dsbs_llm"], "fraction": fraction,
            "seed": [0, 1, 2]}
           for fraction in FRACTIONS]
  parity = {"dataset": "arith", "vocab": "byte", "student": "default_student",
            "method": PARITY_METHODS,
            "fraction": PARITY_FRACTION, "seed": [0, 1, 2], "gin": {"TRAIN_STEPS": PARITY_STEPS}}
  cells.insert(FRACTIONS.index(PARITY_FRACTION) + 1, parity)
  c.grid = {"chain": cells}
  return c

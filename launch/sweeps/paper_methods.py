"""The paper's main comparison: every method on every benchmark with T5 1.1 Base and Large (the
paper's 220M and 770M students) under T5X on Cloud TPU VMs, full train data, three seeds:
4 datasets x 2 students x 5 methods x 3 seeds = 120 cells.

  python -m launch.sweep run launch/sweeps/paper_methods.py --dry_run

Set the bucket (run_root, data_dir). Each cell trains gin_configs/<dataset>_<size>.gin (size
from the student).
"""
import ml_collections

ACCELERATOR = {"t5_1_1_base": "v4-8", "t5_1_1_large": "v4-32"}  # TPU type per student


def get_sweep() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="paper-methods",
      engine="t5x",
      target="tpu",
      run_root="gs://my-bucket/dsbs/sweeps/paper-methods",
      tpu=dict(zone="us-central2-b", accelerator=ACCELERATOR,
               data_dir="gs://my-bucket/dsbs/data"),
      grid=dict(dataset=["anli1", "cqa", "esnli", "svamp"], student=list(ACCELERATOR),
                method=["finetune", "distill", "cot", "dsbs", "dsbs_llm"], seed=[0, 1, 2]),
  ))

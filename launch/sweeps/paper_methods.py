"""The paper's main comparison: every method on every benchmark with T5 1.1 Base and Large (the
paper's 220M and 770M students) under T5X on Cloud TPU VMs, full train data, three seeds:
4 datasets x 2 students x 5 methods x 3 seeds = 120 cells.

  python -m launch.sweep run launch/sweeps/paper_methods.py --dry_run

Set YOUR_BUCKET. Each cell trains gin_configs/<dataset>_<size>.gin (size from the student).
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "paper-methods"
  c.engine = "t5x"
  c.target = "tpu"
  c.run_root = "gs://YOUR_BUCKET/dsbs/sweeps/paper-methods"
  c.tpu = {"zone": "us-central2-b", "accelerator": {"t5_1_1_base": "v4-8",
                                                    "t5_1_1_large": "v4-32"},
           "data_dir": "gs://YOUR_BUCKET/dsbs/data"}
  c.grid = {"dataset": ["anli1", "cqa", "esnli", "svamp"],
            "student": ["t5_1_1_base", "t5_1_1_large"],
            "method": ["finetune", "distill", "cot", "dsbs", "dsbs_llm"], "seed": [0, 1, 2]}
  return c

"""Label rate x % of train data for dsbs against finetuning on ANLI round 1, T5 1.1 Base and Large
under T5X on Cloud TPU VMs, 3 seeds (finetune ignores the label rate: its cells collapse).

  python -m launch.sweep run launch/sweeps/anli_rate_x_pct.py --dry_run
  python -m launch.sweep run launch/sweeps/anli_rate_x_pct.py --max_parallel=8

Set the bucket (run_root, data_dir). Each cell trains gin_configs/anli_<size>.gin (size from the
student) on its own spot TPU (the runtime image follows the TPU generation), recreated and
resumed after a preemption, then tests its best validation checkpoint there; see launch/README.md.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "anli-rate-pct"
  c.engine = "t5x"
  c.target = "tpu"
  c.run_root = "gs://my-bucket/dsbs/sweeps/anli-rate-pct"
  c.tpu = {"zone": "us-central2-b", "accelerator": {"t5_1_1_base": "v4-8",
                                                    "t5_1_1_large": "v4-32"},
           "provisioning": "spot", "max_retries": 5, "data_dir": "gs://my-bucket/dsbs/data"}
  c.grid = {"dataset": "anli1", "student": ["t5_1_1_base", "t5_1_1_large"],
            "method": ["dsbs", "finetune"], "label_rate": [0.25, 0.5, 0.75],
            "fraction": [10, 25, 50, 100], "seed": [0, 1, 2]}
  return c

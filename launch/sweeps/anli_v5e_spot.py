"""dsbs on ANLI round 1 at three label rates x three seeds, T5 1.1 Large under T5X, each cell on
its own v5e-64 spot slice through a queued resource (9 cells). A preempted cell's slice is
deleted, asked for again and the run resumes from its last checkpoint, up to 5 times.

  python -m launch.sweep run launch/sweeps/anli_v5e_spot.py --dry_run     # the gcloud calls
  python -m launch.sweep run launch/sweeps/anli_v5e_spot.py --max_parallel=9
  python -m launch.sweep status sweeps/anli-v5e-spot
  python -m launch.tpu cleanup --zone=us-west4-a --sweep=anli-v5e-spot   # anything left behind

Set the bucket (run_root, data_dir); see launch/README.md.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "anli-v5e-spot"
  c.engine = "t5x"
  c.target = "tpu"
  c.run_root = "gs://my-bucket/dsbs/sweeps/anli-v5e-spot"
  c.tpu = {"zone": "us-west4-a", "accelerator": "v5litepod-64", "provisioning": "spot",
           "queued": True, "max_retries": 5, "data_dir": "gs://my-bucket/dsbs/data"}
  c.grid = {"dataset": "anli1", "student": "t5_1_1_large", "method": "dsbs",
            "label_rate": [0.25, 0.5, 0.75], "seed": [0, 1, 2]}
  return c

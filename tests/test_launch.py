"""launch/tpu_vm.sh: the TPU VM job script (dry run and against a fake gcloud, no cloud calls).
The sweep runner and its definitions are tested in test_launch_sweep.py, the report in
test_report.py."""
from __future__ import annotations

import os
import pathlib
import shlex
import stat
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
TPU_VM = str(REPO / "launch" / "tpu_vm.sh")


# --- tpu_vm.sh --------------------------------------------------------------------------------

ARGS = ["--name=dsbs-test", "--zone=us-central2-b", "--accelerator=v4-32",
        "--model_dir=gs://b/run", "--gin_file=gin_configs/anli_770m.gin",
        "--gin=MIXTURE_OR_TASK_NAME='anli1_dsbs_pct10'", "--data_dir=gs://b/data"]


def _sh(args, env=None):
  return subprocess.run(["bash", TPU_VM, *args], capture_output=True, text=True, timeout=60,
                        env={**os.environ, **(env or {})}, check=False)


def test_tpu_vm_dry_run_prints_the_whole_job_in_order():
  proc = _sh(ARGS + ["--dry_run", "--spot"])
  assert proc.returncode == 0, proc.stderr
  cmds = [l[2:] for l in proc.stdout.splitlines() if l.startswith("+ ")]
  kinds = [" ".join(shlex.split(c)[:5]) for c in cmds]
  assert kinds[0].startswith("gcloud compute tpus tpu-vm create") and "--spot" in cmds[0]
  assert "--accelerator-type=v4-32" in cmds[0] and "--version=tpu-ubuntu2204-base" in cmds[0]
  assert kinds[1].startswith("gcloud compute tpus tpu-vm scp") and "--worker=all" in cmds[1]
  setup, train = shlex.split(cmds[2]), shlex.split(cmds[3])
  assert "--worker=all" in setup and "setup_worker.sh" in setup[-1]
  remote = train[-1][len("--command="):]
  remote_argv = shlex.split(remote.split("&&", 1)[1].split("2>&1")[0])
  assert remote_argv[:3] == ["python3", "-m", "t5x.train"]
  assert "--gin_file=gin_configs/anli_770m.gin" in remote_argv
  assert "--gin.MODEL_DIR='gs://b/run'" in remote_argv
  assert "--gin.MIXTURE_OR_TASK_NAME='anli1_dsbs_pct10'" in remote_argv
  assert "DSBS_DATA_DIR=gs://b/data" in remote
  assert kinds[-1].startswith("gcloud compute tpus tpu-vm delete") and "--quiet" in cmds[-1]


@pytest.mark.parametrize("drop,msg", [("--zone=", "--zone"), ("--model_dir=", "gs://"),
                                      ("--name=", "--name")])
def test_tpu_vm_rejects_missing_flags(drop, msg):
  proc = _sh([a for a in ARGS if not a.startswith(drop)] + ["--dry_run"])
  assert proc.returncode == 2 and msg in proc.stderr


def test_tpu_vm_deletes_the_vm_when_training_fails(tmp_path):
  """Against a fake gcloud/gsutil: the trap tears the VM down and the failure propagates."""
  log = tmp_path / "calls.log"
  for tool in ("gcloud", "gsutil"):
    fake = tmp_path / tool
    fake.write_text(f'#!/usr/bin/env bash\necho "{tool} $*" >> {log}\n'
                    'case "$*" in *t5x.train*) exit 7 ;; esac\nexit 0\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  proc = _sh(ARGS + ["--job_json={\"seed\": 0}"],
             env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
  assert proc.returncode == 7, proc.stderr
  calls = log.read_text().splitlines()
  assert calls[0].startswith("gcloud compute tpus tpu-vm create dsbs-test")
  assert any(c.startswith("gsutil -q cp") and c.endswith("gs://b/run/dsbs_job.json") for c in calls)
  assert any("t5x.train" in c for c in calls)
  assert calls[-1].startswith("gcloud compute tpus tpu-vm delete dsbs-test")
  assert sum("tpu-vm delete" in c for c in calls) == 1

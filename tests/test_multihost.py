"""Two processes on localhost (4 CPU devices each) against one process with 8: the same
training, validation decoding, evaluation files and checkpoints; one host SIGKILLed, then both
relaunched, ends where an uninterrupted run ends.

Every process runs in its own session, on 127.0.0.1 ports, under a time limit, and is killed
(its whole process group) when the test ends, passed or not.
"""
import json
import os
import time

import jax
import numpy as np
import pytest

import run_worker
import train_fixtures as support
from dsbs import evaluate, train, train_checkpoints

pytestmark = pytest.mark.timeout(900)
support.share_compilation_cache()

STEPS = 6
_EXTRA = """SAVING_PERIOD = 2
EVAL_PERIOD = 3
DROPOUT_RATE = 0.1
TrainConfig.eval_max_examples = 13
TrainConfig.async_checkpoints = True
"""
_LIMIT_S = 600  # one launch, both processes


def _gin(tmp) -> str:
  return support.tiny_gin(str(tmp / "mh.gin"), steps=STEPS, extra=_EXTRA)


def _train_argv(gin_file: str, run_dir, *binds: str) -> list[str]:
  return [f"--gin_file={gin_file}", f"--model_dir={run_dir}", "--then_evaluate",
          *(f"--gin.{b}" for b in binds)]


def _launch_two(tmp, name: str, gin_file: str, binds=(), options=(None, None)) -> run_worker.Group:
  port = run_worker.free_port()
  argvs = [run_worker.worker_argv(options[i] or {}, _train_argv(gin_file, tmp / name, *binds)
                                  + run_worker.multihost_argv(port, 2, i)) for i in range(2)]
  return run_worker.Group(argvs, support.subprocess_env(devices=4), str(tmp / f"{name}-logs"))


def _run_two(tmp, name, gin_file, binds=(), options=(None, None)) -> run_worker.Group:
  with _launch_two(tmp, name, gin_file, binds, options) as group:
    codes = group.wait(_LIMIT_S)
    assert codes == [0, 0], group.tail()
  return group


def _rows(run_dir, kind):
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["kind"] == kind]


def _eval_files(run_dir):
  out_dir = evaluate.default_output_dir(str(run_dir), "test")  # --then_evaluate writes there
  with open(os.path.join(out_dir, "metrics.json")) as f:
    metrics = json.load(f)
  with open(os.path.join(out_dir, "predictions.jsonl")) as f:
    return metrics, [json.loads(line) for line in f]


def _params(run_dir, step):
  return train_checkpoints.restore_params(os.path.join(run_dir, "checkpoints", str(step), "params"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """One process x 8 devices reading 2 input shards, and 2 processes x 4 devices (mesh 8 data),
  launched side by side."""
  tmp = tmp_path_factory.mktemp("mh")
  gin_file = _gin(tmp)
  t0 = time.monotonic()
  one = run_worker.Group([[support.PYTHON, "-m", "dsbs.train",
                           *_train_argv(gin_file, tmp / "one", "TrainConfig.mesh_data=8",
                                        "TrainConfig.input_shards=2")]],
                         support.subprocess_env(devices=8), str(tmp / "one-logs"))
  with one, _launch_two(tmp, "two", gin_file, ["TrainConfig.mesh_data=8"],
                        options=[{"shard_ids": str(tmp / "shards")}] * 2) as two:
    assert two.wait(_LIMIT_S) == [0, 0], two.tail()
    assert one.wait(_LIMIT_S) == [0], one.tail()
  print(f"one process x 8 and two processes x 4, side by side: {time.monotonic() - t0:.1f} s")
  return tmp, gin_file, two


def _assert_same_run(one, two, atol=1e-5):
  """Loss curves within `atol`; eval scalars alike; the same test metrics and predictions."""
  a, b = _rows(one, "train"), _rows(two, "train")
  assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
  np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], atol=atol, rtol=0)
  ea, eb = _rows(one, "eval"), _rows(two, "eval")
  assert [r["step"] for r in ea] == [r["step"] for r in eb] == [3, 6]
  for ra, rb in zip(ea, eb):
    assert set(ra) == set(rb)
    for k in set(ra) - {"kind"}:
      np.testing.assert_allclose(rb[k], ra[k], atol=atol, rtol=0, err_msg=k)
  assert ea[-1][f"{support.LABEL_TASK}/num_examples"] == 13
  ma, pa = _eval_files(one)
  mb, pb = _eval_files(two)
  assert mb["metrics"] == ma["metrics"] and mb["step"] == ma["step"]
  assert pb == pa  # complete, once, in input order
  assert [r["id"] for r in pb] == [f"test-{i}" for i in range(support.SIZES["test"])]


def test_two_hosts_equal_one_host(runs):
  tmp, _, two = runs
  # Each host read its own input shard; the shards are disjoint and together the whole split.
  shards = [json.loads((tmp / f"shards.{i}").read_text()) for i in range(2)]
  assert [s["shards"] for s in shards] == [[0], [1]] and shards[0]["num_shards"] == 2
  for task in (support.LABEL_TASK, support.RATIONALE_TASK):
    ids = [set(s["ids"][task]) for s in shards]
    assert len(ids[0]) + len(ids[1]) == support.SIZES["train"]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {f"train-{i}" for i in range(support.SIZES["train"])}
  # Same losses, validation metrics, test metrics and predictions as one process.
  _assert_same_run(tmp / "one", tmp / "two")
  # Both processes checkpointed: one copy of the arrays, each host's input position.
  steps = train_checkpoints.Checkpointer(str(tmp / "two" / "checkpoints")).all_steps()
  assert steps == [3, 4, 6]  # the latest 3 and the best
  for step in steps:
    files = sorted(f for f in os.listdir(tmp / "two" / "checkpoints" / str(step) / "input")
                   if f.startswith("shard-"))
    assert files == [f"shard-0000{s}-of-00002.{ext}" for s in (0, 1)
                     for ext in ("data-00000-of-00001", "index")], files
  # Every process says where it runs.
  for i in range(2):
    log = two.log(i)
    assert f"process {i} of 2: 4 local cpu devices of 8; mesh {{'data': 8, 'model': 1}}" in log
    assert "RESULT=" in log


@pytest.mark.slow
def test_two_hosts_fsdp_equal_one_host(runs):
  """Mesh 2 data x 4 model with FSDP over the two hosts: each host one data row."""
  tmp, gin_file, _ = runs
  _run_two(tmp, "fsdp", gin_file, ["TrainConfig.mesh_data=2", "TrainConfig.mesh_model=4",
                                   "TrainConfig.fsdp=True"])
  _assert_same_run(tmp / "one", tmp / "fsdp")
  prov = json.loads((tmp / "fsdp" / "provenance.json").read_text())
  assert prov["mesh"] == {"data": 2, "model": 4} and prov["fsdp"] and prov["processes"] == 2


@pytest.mark.slow
def test_one_host_killed_then_both_relaunched(runs):
  """Host 1 SIGKILLed after step 5: host 0 stops with JAX's message within the heartbeat
  timeout; relaunching both resumes from the last checkpoint and reaches the same parameters."""
  tmp, gin_file, _ = runs
  marker = str(tmp / "host1_at_step_5")
  with _launch_two(tmp, "killed", gin_file, ["TrainConfig.mesh_data=8"],
                   options=[None, {"stop_before": 5, "marker": marker}]) as group:
    assert run_worker.wait_for(marker, group, timeout=_LIMIT_S), group.tail()
    group.kill(1)
    t0 = time.monotonic()
    codes = group.wait(10 + 50, which=[0])  # heartbeat timeout 10 s, and some slack
    stopped_after = time.monotonic() - t0
    assert codes[0] is not None and codes[0] != 0, group.tail()
    assert "another task died" in group.log(0), group.tail()
  print(f"host 0 stopped {stopped_after:.1f} s after host 1 was killed")
  latest = train_checkpoints.Checkpointer(str(tmp / "killed" / "checkpoints")).latest_step()
  assert latest in (3, 4)
  _run_two(tmp, "killed", gin_file, ["TrainConfig.mesh_data=8"])
  a, b = _params(tmp / "two", STEPS), _params(tmp / "killed", STEPS)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
  steps = [r["step"] for r in _rows(tmp / "killed", "train")]
  assert steps[-1] == STEPS and steps.count(STEPS) == 1


@pytest.mark.parametrize("argv, message", [
    (["--coordinator_address=127.0.0.1:1"], "go together"),
    (["--coordinator_address=127.0.0.1", "--num_processes=2", "--process_id=0"], "HOST:PORT"),
    (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=2"],
     "--process_id must be in [0, 2)"),
    (["--heartbeat_timeout_seconds=0"], "--heartbeat_timeout_seconds"),
])
def test_multihost_flags_are_checked_before_anything_starts(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    train.parse_flags(argv)
  assert e.value.code == 2 and message in capsys.readouterr().err

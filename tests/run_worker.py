"""Test programs around `dsbs.train`: a worker with test-only input wrappers, and a launcher of
process groups on localhost that never leaves a process behind.

Worker (one process of a run; `python -m run_worker OPTIONS_JSON TRAIN_ARGV...`), options:
  stop_before: N    block when asked for local batch N + 1 of this launch (after N steps),
                    having written `marker`, until the harness kills the process
  marker: PATH      the file written when blocked
  shard_ids: PATH   before training, write this process's input shards and the example ids one
                    epoch of each holds, per task, to PATH.<process index> (JSON)
The worker then runs `dsbs.train.main(TRAIN_ARGV)` (multi-host flags included) and prints
`RESULT=<json>`.
"""
from __future__ import annotations

if __name__ == "__main__":  # a worker: the programs' console (logging set up) before TensorFlow
  from dsbs import console
  console.start()

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Iterator, Sequence

import train_fixtures as support


def free_port() -> int:
  """A free TCP port on the loopback interface."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def multihost_argv(port: int, num: int, index: int) -> list[str]:
  return [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num}",
          f"--process_id={index}", "--heartbeat_timeout_seconds=10"]


class Group:
  """Processes started in their own sessions, logs to files; every one is killed on exit."""

  def __init__(self, argvs: Sequence[Sequence[str]], env: dict[str, str], log_dir: str):
    os.makedirs(log_dir, exist_ok=True)
    self.logs = [os.path.join(log_dir, f"proc-{i}.log") for i in range(len(argvs))]
    self.procs: list[subprocess.Popen] = []
    for argv, log in zip(argvs, self.logs):
      with open(log, "w") as f:
        self.procs.append(subprocess.Popen(list(argv), env=env, stdout=f, stderr=subprocess.STDOUT,
                                           start_new_session=True))

  def __enter__(self) -> "Group":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.kill_all()

  def kill(self, i: int) -> None:
    """SIGKILL to process i's whole process group (a preempted host)."""
    with contextlib.suppress(ProcessLookupError):
      os.killpg(self.procs[i].pid, signal.SIGKILL)

  def kill_all(self) -> None:
    for i, p in enumerate(self.procs):
      self.kill(i)
      with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=30)

  def wait(self, timeout: float, which: Sequence[int] | None = None) -> list[int | None]:
    """Exit codes of the processes `which` (default all); None for one still running."""
    deadline = time.monotonic() + timeout
    which = range(len(self.procs)) if which is None else which
    for i in which:
      with contextlib.suppress(subprocess.TimeoutExpired):
        self.procs[i].wait(timeout=max(deadline - time.monotonic(), 0.01))
    return [self.procs[i].poll() for i in which]

  def log(self, i: int) -> str:
    with open(self.logs[i], errors="replace") as f:
      return f.read()

  def tail(self, chars: int = 3000) -> str:
    return "\n".join(f"--- process {i} ---\n{self.log(i)[-chars:]}" for i in range(len(self.logs)))


def wait_for(path: str, group: Group, timeout: float) -> bool:
  """Waits until `path` exists (False when a process ends first or the time is up)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if os.path.exists(path):
      return True
    if any(p.poll() is not None for p in group.procs):
      return os.path.exists(path)
    time.sleep(0.02)
  return False


def worker_argv(options: dict[str, Any], train_argv: Sequence[str]) -> list[str]:
  return [support.PYTHON, "-m", "run_worker", json.dumps(options), *train_argv]


# ---- the worker side ------------------------------------------------------------------------


def _stop_before(n: int, marker: str):
  def wrap(batches: Iterator[dict]) -> Iterator[dict]:
    for i, batch in enumerate(batches):
      if i == n:
        with open(marker, "w") as f:
          f.write(str(n))
        while True:  # the harness SIGKILLs this process here
          time.sleep(1)
      yield batch
  return wrap


def _write_shard_ids(path: str, train_argv: Sequence[str]) -> None:
  """This process's input shards and the ids one epoch of each holds, per task."""
  import gin  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from dsbs import experiment, input_pipeline, multihost, train
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  args, bindings = train.parse_flags(list(train_argv))
  exp = experiment.load(args.gin_file, bindings).experiment
  cfg = train.TrainConfig()
  mesh = train._mesh(cfg)  # pylint: disable=protected-access
  rows = multihost.local_rows(NamedSharding(mesh, P("data")), exp.batch_size)
  num_shards = cfg.input_shards or jax.process_count()
  shards = input_pipeline.shards_for_rows(rows, exp.batch_size, num_shards)
  out: dict[str, Any] = {"shards": shards, "num_shards": num_shards, "ids": {}}
  for task in (support.LABEL_TASK, support.RATIONALE_TASK):
    in_cfg = input_pipeline.InputConfig(task, exp.task_feature_lengths, exp.batch_size, None,
                                        seed=exp.seed)
    out["ids"][task] = [
        ex["id"].decode() for s in shards
        for ex in input_pipeline.examples(in_cfg, (s, num_shards)).as_numpy_iterator()]
  gin.clear_config()
  with open(f"{path}.{jax.process_index()}", "w") as f:
    json.dump(out, f)


def main(argv: Sequence[str]) -> int:
  options = json.loads(argv[0])
  train_argv = list(argv[1:])
  from dsbs import train  # pylint: disable=g-import-not-at-top
  wrap = None
  if options.get("stop_before") is not None:
    wrap = _stop_before(int(options["stop_before"]), options["marker"])
  if options.get("shard_ids"):
    # The process group must exist before anything reads devices: join it through the
    # trainer's own flags first.
    args, _ = train.parse_flags(train_argv)
    from dsbs import multihost  # pylint: disable=g-import-not-at-top
    multihost.initialize(args)  # train.main's own call then finds it done
    _write_shard_ids(options["shard_ids"], train_argv)
  from dsbs import multihost  # pylint: disable=g-import-not-at-top
  with multihost.fail_fast():
    result = train.main(train_argv, wrap_input=wrap)
  print("RESULT=" + json.dumps(result, default=str), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

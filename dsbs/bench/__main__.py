"""`python -m dsbs.bench`: the command line of the benchmark (see dsbs/bench/__init__.py)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Sequence

from dsbs import bench, hostmem
from dsbs.bench import report
from dsbs.bench.configs import CONFIGS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m dsbs.bench",
                                   description=bench.__doc__.split("\n")[0])
  parser.add_argument("--config", default="bench_small", choices=sorted(CONFIGS))
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("--markdown", action="store_true", help="print the README table")
  parser.add_argument("--peers", default="", help="comma list of torch,t5x")
  parser.add_argument("--host_devices", type=int, default=None,
                      help="CPU: split the host into N XLA devices, data-parallel step")
  parser.add_argument("--train_steps", type=int, default=None)
  parser.add_argument("--json_out", default=None, help="also write the full JSON result here")
  parser.add_argument("--t5x_python", default=None,
                      help="an interpreter that can import t5x, for --peers=t5x (default: "
                      "$DSBS_T5X_PYTHON, else this one if it can)")
  parser.add_argument("--input_resume", type=int, default=None, metavar="N",
                      help="only measure resuming the config's input pipeline at batch N: "
                      "re-reading the consumed batches vs restoring the saved iterator state")
  args = parser.parse_args(argv)
  bad = set(filter(None, args.peers.split(","))) - {"torch", "t5x"}
  if bad:
    parser.error(f"unknown peers {sorted(bad)}; choose from torch, t5x")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  malloc = hostmem.tune_malloc()  # before jax starts its threads; peers share it
  if args.host_devices:
    if "jax" in sys.modules:
      raise RuntimeError("--host_devices must be set before jax is imported")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                               f"device_count={args.host_devices}").strip()
  # JAX (and with it the harness) is imported only now: the allocator setting and the host
  # device count above must be in place before it starts.
  from dsbs.bench import harness  # pylint: disable=g-import-not-at-top
  bc = CONFIGS[args.config]
  if args.input_resume is not None:
    if not bc.input_task:
      raise SystemExit(f"--input_resume: config {args.config} has no input task")
    result = harness.input_resume_times(bc, args.input_resume)
    print(json.dumps(result, indent=1))
    return result
  if args.train_steps:
    bc = dataclasses.replace(bc, train_steps=args.train_steps)
  result = harness.run(bc, [p for p in args.peers.split(",") if p], name=args.config,
                       t5x_python=args.t5x_python)
  result["host_malloc"] = malloc
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(result, f, indent=1)
  if args.json:
    print(json.dumps(result))
  elif args.markdown:
    print(report.markdown(result))
  else:
    print(report.markdown(result))
    print(json.dumps(report.scalars(result), indent=1))
  return result


if __name__ == "__main__":
  main()

r"""Throughput benchmark of the dsbs student: training step, decoding, input pipeline, MFU.

  python -m dsbs.bench --config=bench_small [--json | --markdown] [--peers=torch,t5x]
      [--host_devices=2] [--t5x_python=/path/to/t5x/venv/bin/python]

Measures, on the real `dsbs.train.make_train_step` (with the runner's own train state and
shardings, `dsbs.train_state`) and `dsbs.decoding` functions: training step time (median over
steps after compile), tokens/s and sequences/s, analytic model FLOPs per step and the
utilisation against the device's peak (CPU: a measured float32 matmul peak; GPU / TPU: the
datasheet bf16 peak), the compiled step's memory, input-pipeline throughput, and greedy and beam
decoding throughput (new tokens/s, every sequence decodes exactly `decode_new_tokens` tokens),
each engine's decoding also as a fraction of its roofline floor (`roofline.decode_floor_s`: the
peak above and the memory bandwidth, measured on CPU, datasheet HBM on accelerators).

Peers run the same config in the same process (or, for T5X, a side interpreter, after the
others), alternating with dsbs so that a shared machine's drift hits both, each engine's turn
opening with one untimed step; every engine trains and decodes once before it is timed. The
processes run with `dsbs.hostmem.tune_malloc()`, which the in-process PyTorch peer shares and
the T5X interpreter sets too (`DSBS_MALLOC=system` measures all with glibc's defaults). `torch`
is transformers' PyTorch T5 (its Adafactor, `generate`); `t5x` is T5X's own T5 1.1 network,
model loss, Adafactor and decoding, run by the interpreter `--t5x_python` or
`$DSBS_T5X_PYTHON` names (else this one, if it can import t5x). A peer that cannot be imported
is reported unavailable, never estimated. `--host_devices=N` (CPU only) splits the host into N
XLA devices and runs the step data-parallel over them; it must be decided before jax starts, so
it is a flag of this entry point.

Modules: `configs` (the settings), `roofline` (FLOP and byte model, decoding floor),
`hardware` (peak tables and probes), `timing`, `workload` (model config and batches),
`harness` (the dsbs engines and the alternating run), `peers.torch`, `peers.t5x`, `report`
(the README table), `__main__` (the command line).
"""

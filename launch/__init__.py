"""Launching experiments: Cloud TPU VM jobs (`python -m launch.tpu`), sweep definitions, the sweep
runner with its state, run records and targets (this machine; Cloud TPU VMs).

Run from the repository root (`python -m launch.sweep ...`); this package is not installed (see
launch/README.md).
"""

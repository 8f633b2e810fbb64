"""Launching experiments: sweep definitions, the sweep runner with its state, run records,
targets (this machine; Cloud TPU VMs). Run from the repository root: `python -m launch.sweep`."""

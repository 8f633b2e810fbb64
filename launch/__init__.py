"""launch/: Cloud TPU VM jobs (`python -m launch.tpu`), sweeps and result collection.

Run from the repository root; this package is not installed (see launch/README.md).
"""

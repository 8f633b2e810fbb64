"""The experiment gin files (not Python code).

This file makes `gin_configs` a regular package when the repository root is on sys.path (as
under `python -m ...` from the root, or with PYTHONPATH set): gin's package-resource reader then
resolves `include 'gin_configs/...'` to these files instead of failing on a namespace package.
"""

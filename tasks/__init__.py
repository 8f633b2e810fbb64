"""SeqIO tasks and mixtures for distilling step-by-step (installed as `dsbs.tasks`).

Importing this package registers every task and mixture; see `registry.py`.
"""

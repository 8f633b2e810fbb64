"""SeqIO extensions for distilling step-by-step.

Modules (import the one you need; none is imported here, so `import dsbs.seqio_ext` stays cheap):
  feature_converters  `DsbsEncDecFeatureConverter`: the two-task loss weights (see its docstring).
  vocab               `get_vocabulary(spec)` ("t5", "byte", a .model path) and the
                      `python -m dsbs.seqio_ext.vocab train` command.
  preprocessors       record fields -> `inputs` / `targets` / `task_kind` for each task variant.
  postprocessors      decoded text -> label, per label-space kind; CoT answer extraction.
  metrics             accuracy metrics returning {"accuracy": percent}.
  arith               `safe_eval(expr)`: a hardened evaluator for SVAMP equations.
"""

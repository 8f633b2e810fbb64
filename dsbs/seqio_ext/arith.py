"""Scoring generated SVAMP equations: the hardened evaluator lives in `dsbs.data.arithmetic`.

Model outputs are untrusted text: `safe_eval` never calls `eval`/`exec`, accepts only numbers,
`+ - * /`, unary signs and parentheses, bounds the input length, the token count and the nesting
depth, and returns None (scored as wrong) for anything else. One parser serves the teacher-output
parser, the data statistics and the metrics, so they can never disagree on what an equation is.
"""
from dsbs.data.arithmetic import MAX_CHARS, MAX_DEPTH, MAX_TOKENS, safe_eval, values_match

__all__ = ["MAX_CHARS", "MAX_DEPTH", "MAX_TOKENS", "safe_eval", "values_match"]

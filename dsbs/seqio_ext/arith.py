"""A hardened arithmetic evaluator for scoring generated SVAMP equations.

Model outputs are untrusted text: `safe_eval` never calls `eval`/`exec`, accepts only numbers,
`+ - * /`, unary minus/plus and parentheses, bounds the input length, the token count and the
nesting depth, and returns None (scored as wrong) for anything else: garbage, division by zero,
overflow to inf/nan, or limits exceeded. It never raises.

Grammar (recursive descent, left-associative, usual precedence):
  expr  := term (("+" | "-") term)*
  term  := unary (("*" | "/") unary)*
  unary := ("-" | "+") unary | atom
  atom  := NUMBER | "(" expr ")"
  NUMBER: digits with an optional decimal part (".5", "3.", "1,200.5" with thousands commas).
"""
from __future__ import annotations

import math

MAX_CHARS = 1000
MAX_TOKENS = 400
MAX_DEPTH = 64

_OPS = frozenset("+-*/()")


class _Invalid(Exception):
  """Internal: the text is not an acceptable expression."""


def _read_number(text: str, i: int) -> tuple[float, int]:
  """Reads a number starting at text[i]; returns (value, index after it)."""
  n = len(text)
  j = i
  digits = []
  group_len = 0
  saw_comma = False
  while j < n and (text[j].isdigit() and text[j].isascii() or text[j] == ","):
    if text[j] == ",":
      # A thousands separator must follow 1-3 digits (first group) or exactly 3, and be
      # followed by exactly three digits.
      if group_len == 0 or (saw_comma and group_len != 3) or group_len > 3:
        raise _Invalid()
      group = text[j + 1:j + 4]
      if len(group) != 3 or not (group.isascii() and group.isdigit()):
        raise _Invalid()
      saw_comma = True
      group_len = 0
    else:
      digits.append(text[j])
      group_len += 1
    j += 1
  if saw_comma and group_len != 3:
    raise _Invalid()
  if j < n and text[j] == ".":
    digits.append(".")
    j += 1
    while j < n and text[j].isdigit() and text[j].isascii():
      digits.append(text[j])
      j += 1
  literal = "".join(digits)
  if literal in ("", "."):
    raise _Invalid()
  value = float(literal)  # plain decimal literal: no exponent, no sign, no words
  if not math.isfinite(value):
    raise _Invalid()
  return value, j


def tokenize(text: str) -> list[object]:
  """Splits `text` into floats and operator characters; raises _Invalid on anything else."""
  tokens: list[object] = []
  i, n = 0, len(text)
  while i < n:
    c = text[i]
    if c.isspace():
      i += 1
    elif c in _OPS:
      tokens.append(c)
      i += 1
    elif (c.isdigit() and c.isascii()) or c == ".":
      value, i = _read_number(text, i)
      tokens.append(value)
    else:
      raise _Invalid()
    if len(tokens) > MAX_TOKENS:
      raise _Invalid()
  return tokens


class _Parser:
  """Evaluates while parsing; every intermediate value must stay finite."""

  def __init__(self, tokens: list[object]):
    self.tokens = tokens
    self.pos = 0

  def _peek(self) -> object:
    return self.tokens[self.pos] if self.pos < len(self.tokens) else None

  def _take(self) -> object:
    tok = self._peek()
    if tok is None:
      raise _Invalid()
    self.pos += 1
    return tok

  def expr(self, depth: int) -> float:
    value = self.term(depth)
    while self._peek() in ("+", "-"):
      op = self._take()
      right = self.term(depth)
      value = _finite(value + right if op == "+" else value - right)
    return value

  def term(self, depth: int) -> float:
    value = self.unary(depth)
    while self._peek() in ("*", "/"):
      op = self._take()
      right = self.unary(depth)
      if op == "*":
        value = _finite(value * right)
      else:
        if right == 0:
          raise _Invalid()
        value = _finite(value / right)
    return value

  def unary(self, depth: int) -> float:
    if depth > MAX_DEPTH:
      raise _Invalid()
    tok = self._peek()
    if tok == "-":
      self._take()
      return -self.unary(depth + 1)
    if tok == "+":
      self._take()
      return self.unary(depth + 1)
    return self.atom(depth)

  def atom(self, depth: int) -> float:
    tok = self._take()
    if tok == "(":
      value = self.expr(depth + 1)
      if self._take() != ")":
        raise _Invalid()
      return value
    if isinstance(tok, float):
      return tok
    raise _Invalid()


def _finite(x: float) -> float:
  if not math.isfinite(x):
    raise _Invalid()
  return x


def safe_eval(expr: object) -> float | None:
  """The value of an arithmetic expression string, or None if it is not one (never raises)."""
  if not isinstance(expr, str) or len(expr) > MAX_CHARS:
    return None
  try:
    tokens = tokenize(expr)
    if not tokens:
      return None
    parser = _Parser(tokens)
    value = parser.expr(0)
    if parser.pos != len(tokens):
      return None
    return float(value)
  except (_Invalid, OverflowError, ValueError, ZeroDivisionError, RecursionError):
    return None


def values_match(a: float | None, b: float | None, *, rel_tol: float = 1e-6,
                 abs_tol: float = 1e-6) -> bool:
  """True when both values exist and agree within tolerance (None never matches)."""
  if a is None or b is None:
    return False
  return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)

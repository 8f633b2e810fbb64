"""Safe arithmetic expressions: parse, evaluate and print in the SVAMP gold format.

SVAMP gold labels are fully parenthesised equations over floats ("( 10.0 - ( 6.0 + 3.0 ) )") and
the teacher answers with expressions such as "(10 - (3 + 6))". Both are parsed here by a small
recursive-descent parser (numbers, + - * /, unary minus, parentheses; never `eval`), so that the
teacher label can be written in the gold format and compared to the gold label by VALUE.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Union

MAX_DEPTH = 64  # nesting limit: deeper input is rejected, never a RecursionError
MAX_CHARS = 1000  # safe_eval: longer text is not an answer a model should be credited for
MAX_TOKENS = 400
# ASCII digits only: "١٢" is not a number here.
_TOKEN = re.compile(r"\s*(?:(\d+(?:,\d{3})+(?:\.\d*)?|\d+\.?\d*|\.\d+)|([-+*/()]))", re.ASCII)


class ExpressionError(ValueError):
  """The text is not a well-formed arithmetic expression."""


@dataclasses.dataclass(frozen=True)
class BinOp:
  op: str
  left: "Node"
  right: "Node"


@dataclasses.dataclass(frozen=True)
class Neg:
  operand: "Node"


Node = Union[float, BinOp, Neg]


def _tokenize(text: str) -> list[str]:
  tokens, pos = [], 0
  text = text.strip()
  while pos < len(text):
    m = _TOKEN.match(text, pos)
    if not m or m.end() == pos:
      raise ExpressionError(f"unexpected character {text[pos:].strip()[:1]!r} in {text!r}")
    tokens.append(m.group(1).replace(",", "") if m.group(1) else m.group(2))
    pos = m.end()
    while pos < len(text) and text[pos].isspace():
      pos += 1
  if not tokens:
    raise ExpressionError("empty expression")
  return tokens


class _Parser:
  """expr := term (('+'|'-') term)*; term := unary (('*'|'/') unary)*; unary := '-' unary | atom."""

  def __init__(self, tokens: list[str], text: str):
    self.tokens, self.pos, self.text, self.depth = tokens, 0, text, 0

  def peek(self) -> str | None:
    return self.tokens[self.pos] if self.pos < len(self.tokens) else None

  def take(self) -> str:
    tok = self.peek()
    if tok is None:
      raise ExpressionError(f"unexpected end of expression in {self.text!r}")
    self.pos += 1
    return tok

  def expr(self) -> Node:
    node = self.term()
    while self.peek() in ("+", "-"):
      op = self.take()
      node = BinOp(op, node, self.term())
    return node

  def term(self) -> Node:
    node = self.unary()
    while self.peek() in ("*", "/"):
      op = self.take()
      node = BinOp(op, node, self.unary())
    return node

  def unary(self) -> Node:
    sign, signs = 1, 0
    while self.peek() in ("-", "+"):
      sign = -sign if self.take() == "-" else sign
      signs += 1
      if signs > MAX_DEPTH:
        raise ExpressionError(f"more than {MAX_DEPTH} signs in a row")
    node = self.atom()
    return Neg(node) if sign < 0 else node

  def atom(self) -> Node:
    tok = self.take()
    if tok == "(":
      self.depth += 1
      if self.depth > MAX_DEPTH:
        raise ExpressionError(f"more than {MAX_DEPTH} nested parentheses")
      node = self.expr()
      if self.take() != ")":
        raise ExpressionError(f"missing ')' in {self.text!r}")
      self.depth -= 1
      return node
    if tok in "+-*/)":
      raise ExpressionError(f"unexpected {tok!r} in {self.text!r}")
    value = float(tok)
    if not math.isfinite(value):
      raise ExpressionError(f"number out of range: {tok[:20]}...")
    return value


def parse_expression(text: str) -> Node:
  """Parses `text` into a tree; raises ExpressionError on anything but plain arithmetic."""
  parser = _Parser(_tokenize(text), text)
  node = parser.expr()
  if parser.peek() is not None:
    raise ExpressionError(f"unexpected {parser.peek()!r} after a complete expression in {text!r}")
  return node


def evaluate_node(node: Node) -> float:
  if isinstance(node, float):
    return node
  if isinstance(node, Neg):
    return -evaluate_node(node.operand)
  a, b = evaluate_node(node.left), evaluate_node(node.right)
  if node.op == "+":
    return a + b
  if node.op == "-":
    return a - b
  if node.op == "*":
    return a * b
  if b == 0:
    raise ExpressionError("division by zero")
  return a / b


def evaluate(text: str) -> float:
  """The value of an arithmetic expression string; raises ExpressionError if malformed."""
  return evaluate_node(parse_expression(text))


def _fmt_number(x: float) -> str:
  return repr(float(x))


def to_gold_format(node: Node) -> str:
  """Prints a tree like the SVAMP gold labels: every binary op in "( a op b )", floats as "84.0"."""
  if isinstance(node, float):
    return _fmt_number(node)
  if isinstance(node, Neg):
    inner = node.operand
    if isinstance(inner, float):
      return _fmt_number(-inner)
    return f"( 0.0 - {to_gold_format(inner)} )"
  return f"( {to_gold_format(node.left)} {node.op} {to_gold_format(node.right)} )"


def canonical_expression(text: str) -> str:
  """Re-writes an expression string in the SVAMP gold format; raises ExpressionError."""
  return to_gold_format(parse_expression(text))


def safe_eval(expr: object) -> float | None:
  """The value of an untrusted expression string (a model's output), or None; never raises.

  Accepts only what `parse_expression` does, within MAX_CHARS / MAX_TOKENS / MAX_DEPTH; division
  by zero, overflow to inf or nan, and anything else give None, which metrics score as wrong.
  """
  if not isinstance(expr, str) or len(expr) > MAX_CHARS:
    return None
  try:
    tokens = _tokenize(expr)
    if len(tokens) > MAX_TOKENS:
      return None
    parser = _Parser(tokens, expr)
    node = parser.expr()
    if parser.peek() is not None:
      return None
    value = evaluate_node(node)
  except (ExpressionError, OverflowError, ValueError, ZeroDivisionError, RecursionError):
    return None
  return value if math.isfinite(value) else None


def values_match(a: float | None, b: float | None, *, rel_tol: float = 1e-6,
                 abs_tol: float = 1e-6) -> bool:
  """True when both values exist and agree within tolerance (None never matches)."""
  if a is None or b is None:
    return False
  return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def values_equal(a: float, b: float, *, rel_tol: float = 1e-4, abs_tol: float = 1e-4) -> bool:
  return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def expressions_equal(a: str, b: str) -> bool:
  """True when both expressions are well formed and have the same value (False otherwise)."""
  try:
    return values_equal(evaluate(a), evaluate(b))
  except ExpressionError:
    return False

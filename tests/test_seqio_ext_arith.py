"""safe_eval: correct on well-formed expressions, None on everything else, never raises/executes."""
import builtins
import fractions
import math

import hypothesis
from hypothesis import strategies as st
import pytest

from dsbs.seqio_ext import arith

# A number literal and its exact value: integers and up to two decimals, as in SVAMP.
_numbers = st.builds(
    lambda whole, cents, style: (
        (f"{whole}" if style == 0 else f"{whole}.{cents:02d}" if style == 1 else f"{whole}.0"),
        fractions.Fraction(whole) + (fractions.Fraction(cents, 100) if style == 1 else 0)),
    st.integers(0, 5000), st.integers(0, 99), st.integers(0, 2))


def _spaces():
  return st.sampled_from(["", " ", "  "])


@st.composite
def _expr(draw, depth=0):
  """(text, exact value or None for a division by zero anywhere)."""
  kind = draw(st.sampled_from(["num", "num", "bin", "bin", "neg"]) if depth < 4 else st.just("num"))
  if kind == "num":
    return draw(_numbers)
  if kind == "neg":
    text, value = draw(_expr(depth + 1))
    return f"-({text})", (None if value is None else -value)
  lt, lv = draw(_expr(depth + 1))
  rt, rv = draw(_expr(depth + 1))
  op = draw(st.sampled_from("+-*/"))
  s1, s2, s3, s4 = (draw(_spaces()) for _ in range(4))
  text = f"({s1}{lt}{s2}{op}{s3}{rt}{s4})"
  if lv is None or rv is None:
    return text, None
  if op == "+":
    return text, lv + rv
  if op == "-":
    return text, lv - rv
  if op == "*":
    return text, lv * rv
  return text, (None if rv == 0 else lv / rv)


def _forbidden(*args, **kwargs):
  raise AssertionError("eval/exec/compile called")


def safe_eval(text):
  """arith.safe_eval with Python's eval/exec/compile disabled for the duration of the call."""
  saved = {name: getattr(builtins, name) for name in ("eval", "exec", "compile")}
  try:
    for name in saved:
      setattr(builtins, name, _forbidden)
    return arith.safe_eval(text)
  finally:
    for name, fn in saved.items():
      setattr(builtins, name, fn)


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(_expr())
def test_matches_exact_reference(case):
  text, value = case
  got = safe_eval(text)
  if value is None:
    assert got is None
  else:
    assert got is not None and math.isclose(got, float(value), rel_tol=1e-9, abs_tol=1e-9), (
        text, got, float(value))


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(st.text(alphabet=st.sampled_from(list("0123456789.,+-*/() xe_abc'\"[]%^")),
                          max_size=60))
def test_never_raises_on_symbol_soup(text):
  got = safe_eval(text)
  assert got is None or (isinstance(got, float) and math.isfinite(got))


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.text(max_size=80))
def test_never_raises_on_any_text(text):
  got = safe_eval(text)
  assert got is None or math.isfinite(got)


@pytest.mark.parametrize("text,value", [
    ("( 84.0 / 2.0 )", 42.0), ("( 10.0 - ( 6.0 + 3.0 ) )", 1.0), ("2 + 3 * 4", 14.0),
    ("(2 + 3) * 4", 20.0), ("8 / 4 / 2", 1.0), ("10 - 4 - 3", 3.0), ("-3", -3.0), ("--3", 3.0),
    ("+4", 4.0), (".5 + 1.", 1.5), ("1,200 + 1", 1201.0), ("  7  ", 7.0), ("-(2*-3)", 6.0),
])
def test_known_values(text, value):
  assert safe_eval(text) == value


@pytest.mark.parametrize("text", [
    "", "   ", "1/0", "(1 - 1) / (2 - 2)", "1 +", "(1", "1)", "()", "1 2", "2x", "x",
    "__import__('os').system('true')", "1e5", "1_000", "2**3", "9" * 400, "1,20", "1,2345",
    "(" * 70 + "1" + ")" * 70, "-" * 200 + "1", "1" + "+1" * 500, "١٢", "3 ^ 2", None, 12,
    "99999999999999999999 * 99999999999999999999 * 1" + "0" * 280,
])
def test_rejects(text):
  assert safe_eval(text) is None


def test_overflow_is_none():
  big = "*".join(["1" + "0" * 300] * 3)
  assert safe_eval(big) is None


def test_depth_limit_allows_reasonable_nesting():
  text = "(" * 30 + "1" + ")" * 30
  assert safe_eval(text) == 1.0


def test_values_match():
  assert arith.values_match(0.1 + 0.2, 0.3)
  assert not arith.values_match(None, 1.0)
  assert not arith.values_match(1.0, 1.01)

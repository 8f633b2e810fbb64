"""Teacher-output parser and arithmetic helper: pure-function tests on hand-written texts."""
import pytest

from dsbs.data import ParseResult, arithmetic, parse_output, parse_released
from dsbs.data.parse import cut_followups, format_number
from dsbs.data.record import (EMPTY_RATIONALE, NO_ANSWER, NO_TEACHER, OK, PARSE_STATUSES,
                              UNMAPPED_LABEL)

NLI = ["entailment", "neutral", "contradiction"]
CHOICES = ["british columbia", "body of water", "wooded area", "pay debts", "zoo"]


def test_nli_answer_and_followup_cut():
  text = ("The premise says the store opened in London. London is in Europe. So the answer is "
          "entailment.\n\nPremise: X\nHypothesis: Y\nAnswer: So the answer is contradiction.")
  r = parse_output(text, label_space=NLI)
  assert r.status == OK
  assert r.label == "entailment"
  assert r.rationale == "The premise says the store opened in London. London is in Europe."
  assert r.answer_text == "entailment."


def test_esnli_answer_line():
  r = parse_output("A choir singing is not a crack.\nAnswer: neutral\n\nPremise: ...", label_space=NLI)
  assert (r.status, r.label, r.rationale) == (OK, "neutral", "A choir singing is not a crack.")


@pytest.mark.parametrize("text,label", [
    ("Because. The answer is Contradiction!", "contradiction"),
    ("Because. Therefore, the final answer is: neutral", "neutral"),
    ("Because. So the answer is \"entailment\".", "entailment"),
    ("Because. So the answer is entails.", "entailment"),  # alias via parse_released
    ("Because. So the answer is neutral, since nothing is said.", "neutral"),
])
def test_nli_variants(text, label):
  r = parse_released("anli1", text, {})
  assert (r.status, r.label) == (OK, label)


def test_last_answer_phrase_wins_and_rationale_keeps_earlier_one():
  r = parse_output("So the answer is 71. Then 71 > 70. So the answer is entailment.", label_space=NLI)
  assert r.label == "entailment"
  assert r.rationale == "So the answer is 71. Then 71 > 70."


def test_answer_only_in_followup_is_no_answer():
  r = parse_output("Some reasoning without a verdict.\nQ: next question? So the answer is neutral.",
                   label_space=NLI)
  assert r.status == NO_ANSWER and r.label is None


def test_every_status_reachable():
  got = {
      parse_output(None, label_space=NLI).status,
      parse_output("reasoning only", label_space=NLI).status,
      parse_output("Hmm. So the answer is maybe.", label_space=NLI).status,
      parse_output("So the answer is neutral.", label_space=NLI).status,
      parse_output("Why. So the answer is neutral.", label_space=NLI).status,
  }
  assert got == set(PARSE_STATUSES)
  r = parse_output("So the answer is neutral.", label_space=NLI)
  assert (r.status, r.label, r.rationale) == (EMPTY_RATIONALE, "neutral", None)
  assert parse_output(None, kind="arithmetic") == ParseResult(None, None, NO_TEACHER, None)


def test_not_label_prefix_does_not_map():
  # "not entailment" must not become "entailment"; "neutrality" is not "neutral".
  assert parse_output("x. So the answer is not entailment.", label_space=NLI).status == UNMAPPED_LABEL
  assert parse_output("x. So the answer is neutrality.", label_space=NLI).status == UNMAPPED_LABEL


@pytest.mark.parametrize("text", [
    "", "   ", "\n\n\nSo the answer is neutral.", "So the answer is", "the answer is .",
    "\x00\x01 garbage \ufffd", "answer" * 10000, "So the answer is " + "(" * 5000,
    "So the answer is " + "(" * 5000 + "1" + ")" * 5000, "So the answer is " + "-" * 5000 + "1",
])
def test_hostile_texts_never_raise(text):
  r = parse_output(text, label_space=NLI)
  assert r.status in PARSE_STATUSES
  r = parse_output(text, kind="arithmetic")
  assert r.status in PARSE_STATUSES
  r = parse_output(text, kind="multiple_choice", choices=CHOICES)
  assert r.status in PARSE_STATUSES


def test_open_label_space_returns_answer_text():
  r = parse_output("It is red. So the answer is crimson red.", label_space=None)
  assert (r.status, r.label) == (OK, "crimson red")


@pytest.mark.parametrize("answer,label", [
    ("(c) wooded area.", "wooded area"),
    ("(C) something else entirely.", "wooded area"),  # the letter wins over a mistyped text
    ("wooded area.", "wooded area"),
    ("c.", "wooded area"),
    ("the zoo, of course.", "zoo"),
])
def test_multiple_choice_maps(answer, label):
  r = parse_output(f"Beavers need wood. So the answer is {answer}", kind="multiple_choice",
                   choices=CHOICES)
  assert (r.status, r.label) == (OK, label)


@pytest.mark.parametrize("answer", [
    "either (b) body of water or (c) wooded area.", "one of these four.", "(f) nowhere.",
    "a forest.",
])
def test_multiple_choice_unmapped(answer):
  r = parse_output(f"Hmm. So the answer is {answer}", kind="multiple_choice", choices=CHOICES)
  assert r.status == UNMAPPED_LABEL and r.label is None and r.answer_text


def test_multiple_choice_longest_contained_choice():
  r = parse_output("x. So the answer is the state park.", kind="multiple_choice",
                   choices=["park", "state park", "zoo"])
  assert r.label == "state park"


def test_multiple_choice_needs_choices():
  with pytest.raises(ValueError, match="choices"):
    parse_output("x", kind="multiple_choice")


@pytest.mark.parametrize("answer,gold,value", [
    ("(10 * 45).", "( 10.0 * 45.0 )", 450.0),
    ("(10 - (3 + 6)).", "( 10.0 - ( 3.0 + 6.0 ) )", 1.0),
    ("(12 - 2) - 7.", "( ( 12.0 - 2.0 ) - 7.0 )", 3.0),
    ("450.", "450.0", 450.0),
    ("$ 1,200.", "1200.0", 1200.0),
    ("(2).", "2.0", 2.0),
    ("10 - 9 = 1.", "( 10.0 - 9.0 )", 1.0),
    ("450 seeds.", "450.0", 450.0),
    ("(10 * 45) seeds in all.", "( 10.0 * 45.0 )", 450.0),
])
def test_arithmetic_labels_are_gold_format_expressions(answer, gold, value):
  r = parse_output(f"Work. The answer is {answer}", kind="arithmetic")
  assert (r.status, r.label) == (OK, gold)
  assert arithmetic.evaluate(r.label) == pytest.approx(value)


@pytest.mark.parametrize("answer", [
    "(23 + x).", "(14, 21).", "x + 2 seeds.", "seeds.", "(8 / 4) and (6 / 4).", "((491 - 21",
    "(some - 8).", "(5 / 0).",
])
def test_arithmetic_unmapped(answer):
  assert parse_output(f"Work. The answer is {answer}", kind="arithmetic").status == UNMAPPED_LABEL


def test_numeric_kind_gives_value_strings():
  assert parse_output("3 + 4 = 7. So the answer is 7.", kind="numeric").label == "7"
  assert parse_output("x. So the answer is (5 / 2).", kind="numeric").label == "2.5"
  assert format_number(3.0) == "3" and format_number(1 / 3) == "0.333333"


def test_unknown_kind_and_bad_alias():
  with pytest.raises(ValueError, match="unknown kind"):
    parse_output("x", kind="regression")
  with pytest.raises(ValueError, match="alias"):
    parse_output("x. So the answer is yes.", label_space=NLI, aliases={"yes": "true"})


def test_cut_followups():
  assert cut_followups("a\nb\n\nQ: c") == "a\nb"
  assert cut_followups("a\nQuestion: b") == "a"
  assert cut_followups("a\nAnswer: b") == "a\nAnswer: b"


def test_arithmetic_module():
  assert arithmetic.evaluate("( 10.0 - ( 6.0 + 3.0 ) )") == 1.0
  assert arithmetic.evaluate("-3 * -(2 + 1)") == 9.0
  assert arithmetic.evaluate("2 + 3 * 4") == 14.0
  assert arithmetic.evaluate("(" * 64 + "1" + ")" * 64) == 1.0
  assert arithmetic.canonical_expression("-(2 + 1)") == "( 0.0 - ( 2.0 + 1.0 ) )"
  assert arithmetic.expressions_equal("( 84.0 / 2.0 )", "(84/2)")
  assert not arithmetic.expressions_equal("( 84.0 / 2.0 )", "(84*2)")
  assert not arithmetic.expressions_equal("( 84.0 / 2.0 )", "__import__('os')")
  for bad in ("", "2 +", "(2", "2)", "2 2", "x", "2 ** 3", "1e5", "(" * 65 + "1" + ")" * 65):
    with pytest.raises(arithmetic.ExpressionError):
      arithmetic.evaluate(bad)

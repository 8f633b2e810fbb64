"""Parses a teacher's chain-of-thought continuation into (rationale, label, status).

Few-shot LLM continuations rarely stop after the answer: PaLM's released outputs run on into
invented follow-up examples ("\\n\\nPremise: ...", "Q: ..."). The parser

1. cuts the text at the first blank line or at a line that opens a new example
   (`Q:`, `Question:`, `Premise:`, `Hypothesis:`, `Context:`, `Input:`, `Answer Choices:`);
2. finds the LAST answer phrase left: "So the answer is X", "The (final|correct) answer is X",
   "Therefore/Thus/Hence, the answer is X", or a line "Answer: X";
3. takes the rationale as the stripped text before that phrase (minus a leading "A:" /
   "Reasoning(s):" / "Explanation:" tag), and maps X into the label space by `kind`:
   - "classification": X must equal (or start with) a label word or an alias, case-insensitive;
     with `label_space=None` the answer text itself is the label (open label space).
   - "multiple_choice": one letter "(c)" picks `choices[2]`; else X must equal (or, uniquely,
     contain) one choice text. Several letters ("either (b) lake or (d) pond") are ambiguous.
   - "arithmetic": X must be a plain arithmetic expression or number ("(10 - (3 + 6))", "450",
     "1,200", "$ 5", "450 seeds", "(10 - 9) = 1" -> "(10 - 9)"); the label is that expression
     in the SVAMP gold format ("( 10.0 - ( 3.0 + 6.0 ) )"),
     whose VALUE is the teacher's answer (compare with `dsbs.data.arithmetic.expressions_equal`).
     Variables, words, several answers or unbalanced brackets do not map.
   - "numeric": as arithmetic, but the label is the value as a number string ("12", "2.5").

Unparseable outputs policy (statuses from `dsbs.data.record`; nothing is dropped silently):
  NO_TEACHER       no text at all (None);
  NO_ANSWER        no answer phrase before the first follow-up example, or an empty answer;
  UNMAPPED_LABEL   an answer phrase whose text does not map into the label space (ambiguous
                   choices, unknown words, non-arithmetic); `answer_text` keeps it for audit;
  EMPTY_RATIONALE  a mapped answer with nothing before it; the label is kept, rationale is None;
  OK               both a rationale and a mapped label.
Only OK records train the rationale and teacher-label tasks; the others are kept in the data,
counted per status by `python -m dsbs.data stats`, and reported.
"""
from __future__ import annotations

import dataclasses
import re
import string
from typing import Mapping, Sequence

from dsbs.data import arithmetic
from dsbs.data.record import EMPTY_RATIONALE, NO_ANSWER, NO_TEACHER, OK, UNMAPPED_LABEL

# The label-space kinds whose answers the teacher-output parser maps (a task may also have
# free-text labels: see `dsbs.seqio_ext.postprocessors.LABEL_KINDS`).
ANSWER_KINDS = ("classification", "multiple_choice", "arithmetic", "numeric")

_FOLLOW_UP = re.compile(
    r"\n[ \t]*\n|\n(?=[ \t]*(?:Q|Question|Premise|Hypothesis|Context|Input|Answer Choices|Passage)"
    r"[ \t]*:)",
    re.IGNORECASE,
)
_ANSWER = re.compile(
    r"(?:\b(?:so|therefore|thus|hence)\b,?\s+)?\bthe\s+(?:final\s+|correct\s+)?answer\s+"
    r"(?:is|would\s+be|will\s+be|must\s+be)\b\s*:?\s*"
    r"|(?:^|\n)[ \t]*(?:final\s+)?answer[ \t]*:[ \t]*",
    re.IGNORECASE,
)
_LEADING_TAG = re.compile(r"^\s*(?:A|Reasonings?|Explanation|Rationale)\s*:\s*", re.IGNORECASE)
_LETTER = re.compile(r"\(([a-zA-Z])\)")
_TRAILING_UNITS = re.compile(r"^([\d\s.,+\-*/()]*\d[\d\s.,+\-*/()]*?)\s+[A-Za-z][A-Za-z\s'-]*$")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")


@dataclasses.dataclass(frozen=True)
class ParseResult:
  """What the parser made of one teacher text.

  Attributes:
    rationale: the reasoning before the answer phrase (stripped), or None.
    label: the answer mapped into the label space, or None.
    status: a parse status from `dsbs.data.record`.
    answer_text: the raw answer after the answer phrase (to the end of its line), or None.
  """

  rationale: str | None
  label: str | None
  status: str
  answer_text: str | None


def cut_followups(text: str) -> str:
  """The text before the first invented follow-up example (blank line or a new `Q:` etc.)."""
  m = _FOLLOW_UP.search(text)
  return text[: m.start()] if m else text


def _normalize(text: str) -> str:
  text = text.lower().strip()
  text = text.strip(string.punctuation + string.whitespace + "“”‘’")
  return re.sub(r"\s+", " ", text)


def _answer_head(answer: str) -> str:
  """The answer up to its first sentence end ("entailment. It ..." -> "entailment")."""
  m = _SENTENCE_END.search(answer)
  return (answer[: m.start()] if m else answer).strip()


def _map_classification(
    answer: str, label_space: Sequence[str] | None, aliases: Mapping[str, str] | None
) -> str | None:
  head = _answer_head(answer)
  if label_space is None:
    return head.strip().rstrip(".") or None
  table = {_normalize(label): label for label in label_space}
  for alias, label in (aliases or {}).items():
    if label not in label_space:
      raise ValueError(f"alias {alias!r} maps to {label!r}, which is not in {list(label_space)}")
    table.setdefault(_normalize(alias), label)
  norm = _normalize(head)
  if norm in table:
    return table[norm]
  # "neutral, because ..." / "contradiction (the premise ...)": a label word, then a non-word char.
  starts = {table[k] for k in table if re.match(re.escape(k) + r"(?![\w-])", norm)}
  return starts.pop() if len(starts) == 1 else None


def _map_choice(answer: str, choices: Sequence[str]) -> str | None:
  letters = {c.lower() for c in _LETTER.findall(answer)}
  if len(letters) == 1:
    idx = ord(letters.pop()) - ord("a")
    return choices[idx] if 0 <= idx < len(choices) else None
  if letters:
    return None  # several letters: ambiguous
  head = _normalize(_answer_head(answer))
  if len(head) == 1 and head.isalpha():
    idx = ord(head) - ord("a")
    return choices[idx] if 0 <= idx < len(choices) else None
  by_text = {_normalize(c): c for c in choices}
  if head in by_text:
    return by_text[head]
  contained = {c for n, c in by_text.items() if n and re.search(r"\b" + re.escape(n) + r"\b", head)}
  # Keep the longest when one match is part of another ("park" inside "state park").
  maximal = {c for c in contained
             if not any(c != o and _normalize(c) in _normalize(o) for o in contained)}
  return maximal.pop() if len(maximal) == 1 else None


def _candidate_expressions(answer: str) -> list[str]:
  """Spans of the answer that may hold the expression, most specific first."""
  line = answer.strip()
  cands = [_answer_head(line), line.rstrip(". ")]
  out = []
  for c in cands:
    c = c.replace("$", "").strip().rstrip(".").strip()
    if "=" in c:  # "(10 - 9) = 1": the left side is the expression.
      c = c.split("=", 1)[0].strip()
    if c and c not in out:
      out.append(c)
    units = _TRAILING_UNITS.match(c)  # "450 seeds", "(10 * 45) flowers in all"
    if units and units.group(1).strip() not in out:
      out.append(units.group(1).strip())
  return out


def _map_arithmetic(answer: str) -> tuple[arithmetic.Node, str] | None:
  for cand in _candidate_expressions(answer):
    try:
      node = arithmetic.parse_expression(cand)
      arithmetic.evaluate_node(node)
      return node, cand
    except arithmetic.ExpressionError:
      continue
  return None


def format_number(value: float) -> str:
  """A number as a label string: "12" for integral values, else up to 6 significant decimals."""
  if float(value).is_integer():
    return str(int(value))
  return f"{value:.6f}".rstrip("0").rstrip(".")


def map_answer(
    answer: str,
    *,
    kind: str,
    label_space: Sequence[str] | None = None,
    choices: Sequence[str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> str | None:
  """Maps a raw answer text into the label space of `kind`; None when it does not map."""
  if kind == "classification":
    return _map_classification(answer, label_space, aliases)
  if kind == "multiple_choice":
    if not choices:
      raise ValueError("kind='multiple_choice' needs the row's choices")
    return _map_choice(answer, choices)
  if kind in ("arithmetic", "numeric"):
    found = _map_arithmetic(answer)
    if found is None:
      return None
    node, _ = found
    if kind == "arithmetic":
      return arithmetic.to_gold_format(node)
    return format_number(arithmetic.evaluate_node(node))
  raise ValueError(f"unknown kind {kind!r}; expected one of {ANSWER_KINDS}")


def parse_output(
    text: str | None,
    *,
    label_space: Sequence[str] | None = None,
    choices: Sequence[str] | None = None,
    kind: str = "classification",
    aliases: Mapping[str, str] | None = None,
) -> ParseResult:
  """Parses one teacher continuation; see the module docstring for the rules and statuses.

  Args:
    text: the raw continuation after the prompt (None when there is no teacher output).
    label_space: the allowed labels for kind="classification" (None: any answer text).
    choices: the row's answer choices for kind="multiple_choice".
    kind: one of ANSWER_KINDS.
    aliases: extra answer words mapped to labels (e.g. {"contradicts": "contradiction"}).

  Returns:
    A ParseResult; never raises on odd text, only on an invalid call.
  """
  if kind not in ANSWER_KINDS:
    raise ValueError(f"unknown kind {kind!r}; expected one of {ANSWER_KINDS}")
  if kind == "multiple_choice" and not choices:
    raise ValueError("kind='multiple_choice' needs the row's choices")
  if text is None:
    return ParseResult(None, None, NO_TEACHER, None)
  if not isinstance(text, str):
    raise TypeError(f"teacher text must be a string or None, got {type(text).__name__}")
  body = cut_followups(text.replace("\r\n", "\n"))
  matches = list(_ANSWER.finditer(body))
  if not matches:
    return ParseResult(None, None, NO_ANSWER, None)
  m = matches[-1]
  answer = body[m.end():].split("\n", 1)[0].strip()
  if not _normalize(answer):
    return ParseResult(None, None, NO_ANSWER, answer or None)
  rationale = _LEADING_TAG.sub("", body[: m.start()]).strip() or None
  label = map_answer(answer, kind=kind, label_space=label_space, choices=choices, aliases=aliases)
  if label is None:
    return ParseResult(rationale, None, UNMAPPED_LABEL, answer)
  if rationale is None:
    return ParseResult(None, label, EMPTY_RATIONALE, answer)
  return ParseResult(rationale, label, OK, answer)

"""Few-shot chain-of-thought prompts: the JSON spec, its validation and chat/completions rendering.

A prompt file (`tasks/prompts/<dataset>.json`, or a user's via `--prompt_file`) holds:

  name          a short name, for logs;
  kind          how answers are parsed: classification | multiple_choice | arithmetic | numeric
                (see `dsbs.data.parse`);
  instruction   the task description (the system message for chat, the preamble otherwise);
  label_space   the allowed labels (classification), or null for an open label space;
  aliases       optional extra answer words mapped to labels;
  answer_format the sentence that ends every answer, with `{answer}`: "So the answer is {answer}.";
  exemplars     [{input, rationale, answer, label?, choices?}], written in the same input format
                as the data (`Example.input`); `label` is what `answer` must parse to (default:
                `answer`), `choices` the options of a multiple-choice exemplar;
  stop          optional stop sequences (at most 4: OpenAI's limit) cutting invented follow-ups;
  chat_style    optional: "turns" (each exemplar a user/assistant pair) or "block" (one message).

Loading a spec parses every exemplar's rendered answer with the same parser that reads the
teacher's output, so a prompt can never teach an answer format the parser does not read.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
from typing import Any, Sequence

from dsbs import fileio
from dsbs.data import arithmetic, parse

CHAT_STYLES = ("turns", "block")
_DEFAULT_STOP = ("\n\nQ:", "\nQ:")
_FIELDS = {"name", "description", "kind", "instruction", "label_space", "aliases",
           "answer_format", "exemplars", "stop", "chat_style", "question_prefix", "answer_prefix"}
_EXEMPLAR_FIELDS = {"input", "rationale", "answer", "label", "choices"}

Messages = list[dict[str, str]]


class PromptError(ValueError):
  """A prompt file is malformed; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class Exemplar:
  input: str
  rationale: str
  answer: str
  label: str
  choices: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class PromptSpec:
  """A validated few-shot prompt; `sha256` identifies the file it came from."""

  name: str
  kind: str
  instruction: str
  exemplars: tuple[Exemplar, ...]
  label_space: tuple[str, ...] | None = None
  aliases: dict[str, str] = dataclasses.field(default_factory=dict)
  answer_format: str = "So the answer is {answer}."
  stop: tuple[str, ...] = _DEFAULT_STOP
  chat_style: str = "turns"
  question_prefix: str = "Q: "
  answer_prefix: str = "A:"
  path: str = ""
  sha256: str = ""

  def answer_text(self, rationale: str, answer: str) -> str:
    """The full answer an exemplar teaches: rationale, then the answer sentence."""
    return f"{rationale.strip()} {self.answer_format.format(answer=answer)}"

  def parse(self, text: str | None, choices: Sequence[str] | None = None) -> parse.ParseResult:
    """Parses a teacher continuation with this prompt's kind and label space."""
    return parse.parse_output(text, label_space=self.label_space, choices=choices,
                              kind=self.kind, aliases=self.aliases or None)

  def _question(self, text: str) -> str:
    return f"{self.question_prefix}{text.strip()}"

  def _few_shot_block(self, text: str) -> str:
    """Exemplars as Q/A pairs, then the question and the bare answer tag to continue from."""
    parts = [f"{self._question(ex.input)}\n{self.answer_prefix} "
             f"{self.answer_text(ex.rationale, ex.answer)}" for ex in self.exemplars]
    parts.append(f"{self._question(text)}\n{self.answer_prefix}")
    return "\n\n".join(parts)

  def render_completion(self, text: str) -> str:
    """One text prompt for /completions: instruction, exemplars, the question, the answer tag."""
    block = self._few_shot_block(text)
    return f"{self.instruction.strip()}\n\n{block}" if self.instruction.strip() else block

  def render_chat(self, text: str, style: str | None = None) -> Messages:
    """Chat messages for /chat/completions, exemplars as turns or as one block."""
    style = style or self.chat_style
    if style not in CHAT_STYLES:
      raise ValueError(f"chat style must be one of {CHAT_STYLES}, got {style!r}")
    messages: Messages = []
    if self.instruction.strip():
      messages.append({"role": "system", "content": self.instruction.strip()})
    if style == "turns":
      for ex in self.exemplars:
        messages.append({"role": "user", "content": self._question(ex.input)})
        messages.append({"role": "assistant",
                         "content": self.answer_text(ex.rationale, ex.answer)})
      messages.append({"role": "user", "content": self._question(text)})
    else:
      messages.append({"role": "user", "content": self._few_shot_block(text)})
    return messages


def _fail(path: str, field: str, msg: str) -> PromptError:
  return PromptError(f"{path}: field {field!r}: {msg}")


def _str(row: dict[str, Any], key: str, path: str, where: str, required: bool = True) -> str:
  value = row.get(key)
  if value is None and not required:
    return ""
  if not isinstance(value, str) or (required and not value.strip()):
    raise _fail(path, f"{where}{key}", "expected a non-empty string")
  return value


def _labels_match(kind: str, got: str | None, want: str) -> bool:
  if got is None:
    return False
  if kind == "arithmetic":
    return arithmetic.expressions_equal(got, want)
  if kind == "numeric":
    try:
      return abs(float(got) - float(want)) <= 1e-6 * max(1.0, abs(float(want)))
    except ValueError:
      return False
  return got == want


def from_dict(doc: Any, *, path: str = "<dict>", sha256: str = "") -> PromptSpec:
  """Validates a parsed prompt document; raises PromptError naming the field."""
  if not isinstance(doc, dict):
    raise PromptError(f"{path}: expected a JSON object")
  unknown = sorted(set(doc) - _FIELDS)
  if unknown:
    raise _fail(path, unknown[0], f"unknown field (known: {sorted(_FIELDS)})")
  kind = doc.get("kind", "classification")
  if kind not in parse.ANSWER_KINDS:
    raise _fail(path, "kind", f"{kind!r} not in {parse.ANSWER_KINDS}")
  label_space = doc.get("label_space")
  if label_space is not None:
    if (not isinstance(label_space, list) or not label_space
        or not all(isinstance(x, str) and x for x in label_space)):
      raise _fail(path, "label_space", "expected a non-empty list of strings or null")
    label_space = tuple(label_space)
  aliases = doc.get("aliases") or {}
  if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
    raise _fail(path, "aliases", "expected an object of strings")
  if label_space is not None and any(v not in label_space for v in aliases.values()):
    raise _fail(path, "aliases", "every alias must map to a label in label_space")
  answer_format = doc.get("answer_format", "So the answer is {answer}.")
  if not isinstance(answer_format, str) or "{answer}" not in answer_format:
    raise _fail(path, "answer_format", "expected a string containing {answer}")
  stop = doc.get("stop", list(_DEFAULT_STOP))
  if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
    raise _fail(path, "stop", "expected a list of at most 4 non-empty strings")
  chat_style = doc.get("chat_style", "turns")
  if chat_style not in CHAT_STYLES:
    raise _fail(path, "chat_style", f"{chat_style!r} not in {CHAT_STYLES}")
  raw = doc.get("exemplars")
  if not isinstance(raw, list):
    raise _fail(path, "exemplars", "expected a list (it may be empty for zero-shot prompts)")
  spec = PromptSpec(
      name=_str(doc, "name", path, ""), kind=kind,
      instruction=_str(doc, "instruction", path, "", required=False),
      exemplars=(), label_space=label_space, aliases=dict(aliases),
      answer_format=answer_format, stop=tuple(stop), chat_style=chat_style,
      question_prefix=doc.get("question_prefix", "Q: "),
      answer_prefix=doc.get("answer_prefix", "A:"), path=path, sha256=sha256)
  exemplars = []
  for i, ex in enumerate(raw):
    where = f"exemplars[{i}]."
    if not isinstance(ex, dict):
      raise _fail(path, f"exemplars[{i}]", "expected an object")
    extra = sorted(set(ex) - _EXEMPLAR_FIELDS)
    if extra:
      raise _fail(path, where + extra[0], f"unknown field (known: {sorted(_EXEMPLAR_FIELDS)})")
    choices = ex.get("choices")
    if choices is not None:
      if not isinstance(choices, list) or not all(isinstance(c, str) and c for c in choices):
        raise _fail(path, where + "choices", "expected a list of strings")
      choices = tuple(choices)
    if kind == "multiple_choice" and not choices:
      raise _fail(path, where + "choices", "a multiple_choice exemplar needs its choices")
    answer = _str(ex, "answer", path, where)
    label = ex.get("label", answer)
    if not isinstance(label, str):
      raise _fail(path, where + "label", "expected a string")
    e = Exemplar(input=_str(ex, "input", path, where), rationale=_str(ex, "rationale", path, where),
                 answer=answer, label=label, choices=choices)
    if "\n\n" in e.rationale or "\n\n" in e.input:
      raise _fail(path, where + "rationale",
                  "blank lines are not allowed: the parser reads a blank line as the answer's end")
    got = spec.parse(spec.answer_text(e.rationale, e.answer), choices=choices)
    if not _labels_match(kind, got.label, e.label) or got.rationale is None:
      raise _fail(path, where + "answer",
                  f"the taught answer {spec.answer_format.format(answer=e.answer)!r} parses to "
                  f"label {got.label!r} (status {got.status}), expected {e.label!r}")
    exemplars.append(e)
  return dataclasses.replace(spec, exemplars=tuple(exemplars))


def load(path: str) -> PromptSpec:
  """Reads and validates a prompt file (local or remote path)."""
  if not fileio.exists(path):
    raise PromptError(f"{path}: prompt file not found")
  with fileio.open_bytes(path) as f:
    data = f.read()
  try:
    doc = json.loads(data.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise PromptError(f"{path}: not valid JSON ({e})") from None
  return from_dict(doc, path=path, sha256=hashlib.sha256(data).hexdigest())


def prompts_dir() -> str:
  """`tasks/prompts`, found without importing `dsbs.tasks` (which registers SeqIO tasks)."""
  spec = importlib.util.find_spec("dsbs.tasks")
  if spec is None or not spec.submodule_search_locations:
    raise PromptError("package dsbs.tasks not found; is dsbs installed (pip install -e .)?")
  return os.path.join(list(spec.submodule_search_locations)[0], "prompts")


def builtin_names() -> list[str]:
  d = prompts_dir()
  return sorted(f[:-5] for f in os.listdir(d) if f.endswith(".json")) if os.path.isdir(d) else []


def load_builtin(name: str) -> PromptSpec:
  """The shipped prompt for a dataset (`tasks/prompts/<name>.json`)."""
  path = os.path.join(prompts_dir(), f"{name}.json")
  if not os.path.exists(path):
    raise PromptError(f"no built-in prompt for {name!r} (have: {builtin_names()}); pass "
                      "--prompt_file (start from tasks/prompts/generic.json)")
  return load(path)

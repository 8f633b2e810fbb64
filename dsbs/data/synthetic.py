"""`arith`: synthetic multi-step arithmetic word problems with a programmatic, noisy teacher.

The default dataset: it needs no download, and a ~1M-parameter byte-level T5 learns it on CPU in
minutes, so the whole pipeline (teacher text -> parser -> two-task student) runs anywhere.

Each problem is two steps (`num_steps`) of add / subtract / "k packs of n" (add k * n) over
single-digit numbers, short enough for a small byte-level student (inputs up to 72 characters,
answers 1..27):
  "Mia has 7 cards, finds 5, then gives away 4. How many now?"
The teacher writes a step-by-step rationale with every intermediate result and an answer phrase,
sometimes running on into an invented follow-up example, exactly like a few-shot LLM:
  "7 + 5 = 12. 12 - 4 = 8. So the answer is 8.\\n\\nQ: ..."
That TEXT goes through `dsbs.data.parse.parse_output(kind="numeric")` like any teacher output.

Noise (rates in ArithConfig): `wrong_rate` of teacher outputs make one arithmetic slip and carry
the wrong value on consistently (a wrong but self-consistent rationale and answer);
`unparseable_rate` are broken (truncated, a non-number answer, or no rationale), so every parse
status but NO_TEACHER occurs. The gold label is the true answer as a string ("8").

Determinism: everything follows from `seed`. Splits are drawn test, validation, train (each from
its own seeded stream), and a problem text never appears in two splits.
"""
from __future__ import annotations

import dataclasses
import functools
import random

from dsbs.data import parse
from dsbs.data.record import Example

_NAMES = ("Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Ben", "Eli", "Ana", "Tom", "Kim")
_ITEMS = ("apples", "cards", "marbles", "stickers", "pens", "shells", "coins", "books", "cookies",
          "stamps")
_ADD = ("finds {n}", "gets {n} more", "buys {n}", "wins {n}")
_SUB = ("gives away {n}", "loses {n}", "sells {n}", "gives {n} away")
_MUL = ("buys {k} packs of {n}", "gets {k} boxes of {n}")
_QUESTION = ("How many now?", "How many in the end?")
_FOLLOW_UPS = ("\n\nQ: {name} has 3 {item}. {name} finds 2. How many now?\nA: 3 + 2 = 5.",
               "\n\nQ: How many {item} are in 2 packs of 4?\nA: 2 * 4 = 8. So the answer is 8.")


_MAX_MISSES = 5000  # consecutive repeats before giving up: the problem space is exhausted


@dataclasses.dataclass(frozen=True)
class ArithConfig:
  """Sizes, noise and seed of the synthetic set (the defaults are what `load_examples` serves)."""

  seed: int = 0
  train_size: int = 5000
  validation_size: int = 500
  test_size: int = 500
  wrong_rate: float = 0.10  # teacher answers with one consistent arithmetic slip
  unparseable_rate: float = 0.02  # truncated / non-number answer / no rationale
  follow_up_rate: float = 0.3  # outputs that run on into an invented next example
  num_steps: tuple[int, ...] = (2,)  # steps per problem, drawn uniformly from this tuple
  max_start: int = 9
  max_operand: int = 9  # add / subtract operands are 1..max_operand
  max_packs: int = 3  # "k packs of n": k in 2..max_packs, n in 2..max_pack_size
  max_pack_size: int = 3
  max_input_chars: int = 72  # longer draws are redrawn: short inputs keep it CPU-learnable

  def __post_init__(self):
    for name in ("wrong_rate", "unparseable_rate", "follow_up_rate"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"ArithConfig.{name} must be in [0, 1], got {getattr(self, name)}")
    if self.wrong_rate + self.unparseable_rate > 1.0:
      raise ValueError("wrong_rate + unparseable_rate must be <= 1")
    if min(self.train_size, self.validation_size, self.test_size) < 0:
      raise ValueError("split sizes must be >= 0")
    if not self.num_steps or min(self.num_steps) < 1:
      raise ValueError(f"ArithConfig.num_steps must be a non-empty tuple of ints >= 1, "
                       f"got {self.num_steps}")
    if self.max_start < 2 or self.max_operand < 1 or self.max_packs < 2 or self.max_pack_size < 2:
      raise ValueError("ArithConfig: need max_start >= 2, max_operand >= 1, max_packs >= 2 and "
                       "max_pack_size >= 2")


@dataclasses.dataclass(frozen=True)
class Problem:
  text: str
  start: int
  steps: tuple[tuple[str, int, int], ...]  # (op, a, b): "+" a, "-" a, "*" k packs of a -> + k*a
  answer: int


def _make_problem(rng: random.Random, cfg: ArithConfig) -> Problem:
  name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
  value = start = rng.randint(2, cfg.max_start)
  steps, phrases = [], []
  for _ in range(rng.choice(cfg.num_steps)):
    op = rng.choice(("+", "-", "*")) if value > 1 else rng.choice(("+", "*"))
    if op == "+":
      n = rng.randint(1, cfg.max_operand)
      phrases.append(rng.choice(_ADD).format(n=n))
      steps.append(("+", n, 0))
      value += n
    elif op == "-":
      n = rng.randint(1, min(cfg.max_operand, value - 1))
      phrases.append(rng.choice(_SUB).format(n=n))
      steps.append(("-", n, 0))
      value -= n
    else:
      k, n = rng.randint(2, cfg.max_packs), rng.randint(2, cfg.max_pack_size)
      phrases.append(rng.choice(_MUL).format(k=k, n=n))
      steps.append(("*", n, k))
      value += k * n
  actions = ", ".join(phrases[:-1]) + ", then " + phrases[-1] if len(phrases) > 1 else phrases[0]
  question = rng.choice(_QUESTION).format(item=item)
  text = f"{name} has {start} {item}, {actions}. {question}"
  return Problem(text, start, tuple(steps), value)


def _running_values(problem: Problem) -> list[int]:
  """The true value after each step."""
  values, value = [], problem.start
  for op, a, k in problem.steps:
    value = value + k * a if op == "*" else value + a if op == "+" else value - a
    values.append(value)
  return values


def _rationale(problem: Problem, slip_step: int | None, rng: random.Random) -> tuple[str, int]:
  """Step-by-step working; with `slip_step`, that step's result is off and later steps follow it."""
  value = problem.start
  parts = []
  for i, (op, a, k) in enumerate(problem.steps):
    if op == "*":
      result = value + k * a
      parts.append(f"{k} * {a} = {k * a}. {value} + {k * a} = {result}.")
    else:
      result = value + a if op == "+" else value - a
      parts.append(f"{value} {op} {a} = {result}.")
    if i == slip_step:
      # Later steps add constants, so the slip shifts every later value by delta: keep all >= 0.
      lowest = min(_running_values(problem)[i:])
      wrong = result + rng.choice([d for d in (-2, -1, 1, 2) if lowest + d >= 0])
      parts[-1] = parts[-1][: parts[-1].rfind("=")] + f"= {wrong}."
      result = wrong
    value = result
  return " ".join(parts), value


def teacher_text(problem: Problem, rng: random.Random, cfg: ArithConfig) -> tuple[str, str]:
  """The programmatic teacher's raw continuation and which noise it carries."""
  u = rng.random()
  if u < cfg.unparseable_rate:
    rationale, value = _rationale(problem, None, rng)
    mode = rng.choice(("truncated", "no_number", "no_rationale"))
    if mode == "truncated":
      return rationale[: max(8, len(rationale) // 2)], mode
    if mode == "no_number":
      return f"{rationale} So the answer is a lot of them.", mode
    return f"So the answer is {value}.", mode
  slip = rng.randrange(len(problem.steps)) if u < cfg.unparseable_rate + cfg.wrong_rate else None
  rationale, value = _rationale(problem, slip, rng)
  text = f"{rationale} So the answer is {value}."
  if rng.random() < cfg.follow_up_rate:
    text += rng.choice(_FOLLOW_UPS).format(name=rng.choice(_NAMES), item=rng.choice(_ITEMS))
  return text, "wrong" if slip is not None else "clean"


def _split_examples(split: str, size: int, cfg: ArithConfig, seen: set[str]) -> list[Example]:
  rng = random.Random(f"dsbs-arith:{cfg.seed}:{split}")
  out: list[Example] = []
  misses = 0
  while len(out) < size:
    problem = _make_problem(rng, cfg)
    if len(problem.text) > cfg.max_input_chars:
      continue
    if problem.text in seen:
      misses += 1
      if misses > _MAX_MISSES:
        raise ValueError(f"arith: could not draw {size} distinct {split} problems "
                         f"({len(out)} after {_MAX_MISSES} repeats in a row); lower the size")
      continue
    misses = 0
    seen.add(problem.text)
    text, noise = teacher_text(problem, rng, cfg)
    result = parse.parse_output(text, kind="numeric")
    meta = {"steps": len(problem.steps), "teacher_noise": noise}
    if result.answer_text is not None:
      meta["teacher_answer"] = result.answer_text[:300]
    out.append(Example(
        id=f"arith-{split}-{len(out)}", input=problem.text, label=str(problem.answer),
        teacher_label=result.label, rationale=result.rationale, parse_status=result.status,
        meta=meta))
  return out


@functools.lru_cache(maxsize=4)
def generate(cfg: ArithConfig = ArithConfig()) -> dict[str, tuple[Example, ...]]:
  """All three splits for a config (cached; generation takes well under a second)."""
  seen: set[str] = set()
  test = _split_examples("test", cfg.test_size, cfg, seen)
  validation = _split_examples("validation", cfg.validation_size, cfg, seen)
  train = _split_examples("train", cfg.train_size, cfg, seen)
  return {"train": tuple(train), "validation": tuple(validation), "test": tuple(test)}


def load_split(split: str, cfg: ArithConfig = ArithConfig()) -> list[Example]:
  """One split of `arith` as canonical examples."""
  splits = generate(cfg)
  if split not in splits:
    raise ValueError(f"unknown split {split!r}; expected one of {sorted(splits)}")
  return list(splits[split])

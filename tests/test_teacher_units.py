"""Pure-function tests of the teacher: prompts, vote, filters, cache, retry headers, inputs."""
import asyncio
import email.utils
import json
import re
import sqlite3
import time

import pytest

from dsbs.data import benchmarks, load_examples
from dsbs.data import record
from dsbs.data.parse import ParseResult
from dsbs.data.record import RecordError
from dsbs.teacher import cache as cache_lib
from dsbs.teacher import client as client_lib
from dsbs.teacher import filters
from dsbs.teacher import inputs
from dsbs.teacher import prompts
from dsbs.teacher import provenance
from dsbs.teacher import ratelimit
from dsbs.teacher import vote

# -- prompts --------------------------------------------------------------------------------


def test_every_builtin_prompt_loads_and_covers_every_dataset():
  names = prompts.builtin_names()
  for ds in benchmarks.ALL_DATASETS + ("generic",):
    assert ds in names
  for name in names:
    spec = prompts.load_builtin(name)
    assert len(spec.exemplars) >= 2, name
    assert len(spec.sha256) == 64
    assert 1 <= len(spec.stop) <= 4


@pytest.mark.parametrize("ds", benchmarks.ALL_DATASETS)
def test_builtin_prompt_matches_dataset_definition(ds):
  spec = prompts.load_builtin(ds)
  assert spec.kind == benchmarks.kind(ds)
  space = benchmarks.label_space(ds)
  assert (list(spec.label_space) if spec.label_space else None) == space


def test_taught_answers_parse_back_to_their_labels():
  for name in prompts.builtin_names():
    spec = prompts.load_builtin(name)
    for ex in spec.exemplars:
      r = spec.parse(spec.answer_text(ex.rationale, ex.answer), choices=ex.choices)
      assert r.status == record.OK, (name, ex.answer)
      assert r.rationale == ex.rationale.strip()


def _input_shape(text: str) -> str:
  """Field tags of a formatted input ("premise: ... hypothesis: ...")."""
  return " ".join(re.findall(r"\b(premise|hypothesis|question|answer choices):", text))


@pytest.mark.parametrize("ds", ["anli1", "esnli", "cqa"])
def test_exemplar_inputs_use_the_data_layer_input_format(ds, data_dir):
  split = "validation" if ds in ("anli1", "esnli") else "test"
  real = benchmarks.SPECS[ds]
  example = load_examples(ds, split, data_dir=data_dir)[0]
  for ex in prompts.load_builtin(ds).exemplars:
    assert _input_shape(ex.input) == _input_shape(example.input), real.name
  if ds == "cqa":
    for ex in prompts.load_builtin(ds).exemplars:
      assert benchmarks.format_choices(list(ex.choices)) in ex.input


def _doc(**over):
  doc = {"name": "t", "kind": "classification", "label_space": ["yes", "no"],
         "instruction": "Answer.", "exemplars": [
             {"input": "is it?", "rationale": "Because it is.", "answer": "yes"}]}
  doc.update(over)
  return doc


def test_prompt_whose_answer_format_the_parser_cannot_read_is_rejected():
  with pytest.raises(prompts.PromptError, match=r"exemplars\[0\]\.answer"):
    prompts.from_dict(_doc(answer_format="Verdict -> {answer}"), path="p.json")
  with pytest.raises(prompts.PromptError, match="answer_format"):
    prompts.from_dict(_doc(answer_format="So the answer is it."), path="p.json")
  bad = _doc()
  bad["exemplars"][0]["answer"] = "maybe"  # not in the label space
  with pytest.raises(prompts.PromptError, match=r"p\.json.*exemplars\[0\]\.answer"):
    prompts.from_dict(bad, path="p.json")
  with pytest.raises(prompts.PromptError, match="unknown field"):
    prompts.from_dict(_doc(colour="red"), path="p.json")
  blank = _doc()
  blank["exemplars"][0]["rationale"] = "One.\n\nTwo."
  with pytest.raises(prompts.PromptError, match="blank lines"):
    prompts.from_dict(blank, path="p.json")


def test_prompt_file_errors_name_the_file(tmp_path):
  p = tmp_path / "mine.json"
  p.write_text("{not json")
  with pytest.raises(prompts.PromptError, match="mine.json: not valid JSON"):
    prompts.load(str(p))
  with pytest.raises(prompts.PromptError, match="not found"):
    prompts.load(str(tmp_path / "absent.json"))
  with pytest.raises(prompts.PromptError, match="no built-in prompt"):
    prompts.load_builtin("nope")


def test_rendering_chat_turns_block_and_completion():
  spec = prompts.from_dict(_doc())
  text = spec.render_completion("is that so?")
  assert text == ("Answer.\n\nQ: is it?\nA: Because it is. So the answer is yes.\n\n"
                  "Q: is that so?\nA:")
  turns = spec.render_chat("is that so?")
  assert [m["role"] for m in turns] == ["system", "user", "assistant", "user"]
  assert turns[2]["content"] == "Because it is. So the answer is yes."
  assert turns[-1]["content"] == "Q: is that so?"
  block = spec.render_chat("is that so?", "block")
  assert [m["role"] for m in block] == ["system", "user"]
  assert block[1]["content"] == text[len("Answer.\n\n"):]


# -- vote and filters ------------------------------------------------------------------------


def _r(label, rationale="r", status=None):
  status = status or (record.OK if label and rationale else
                      record.EMPTY_RATIONALE if label else record.NO_ANSWER)
  return ParseResult(rationale if label else None, label, status, label)


def test_majority_vote_winner_agreement_and_rationale():
  v = vote.majority_vote([_r("a", "ra0"), _r("b", "rb"), _r("a", "ra2"), _r(None)])
  assert (v.label, v.rationale, v.chosen) == ("a", "ra0", 0)
  assert v.votes == {"a": 2, "b": 1}
  assert v.valid == 3 and v.num_samples == 4
  assert v.agreement == pytest.approx(2 / 3)
  assert v.status == record.OK


def test_vote_tie_goes_to_the_label_seen_first():
  assert vote.majority_vote([_r("b"), _r("a"), _r("a"), _r("b")]).label == "b"
  assert vote.majority_vote([_r(None), _r("c"), _r("d")]).label == "c"


def test_vote_keeps_the_first_winning_sample_with_a_rationale():
  v = vote.majority_vote([_r("a", None), _r("a", "second"), _r("b")])
  assert (v.rationale, v.chosen, v.status) == ("second", 1, record.OK)
  v = vote.majority_vote([_r("a", None)])
  assert v.status == record.EMPTY_RATIONALE and v.rationale is None


def test_vote_with_no_valid_sample_and_value_equality():
  v = vote.majority_vote([_r(None), ParseResult("x", None, record.UNMAPPED_LABEL, "zz")])
  assert v.label is None and v.agreement == 0.0 and v.status == record.NO_ANSWER
  same = lambda a, b: float(a) == float(b)
  v = vote.majority_vote([_r("2.0"), _r("3"), _r("2")], same=same)
  assert v.label == "2.0" and v.votes == {"2.0": 2, "3": 1}


def test_filter_policy_parsing_and_reasons():
  p = filters.FilterPolicy.parse("default")
  assert p.enabled == frozenset(filters.DEFAULT)
  assert filters.FilterPolicy.parse("none").enabled == frozenset()
  assert filters.FilterPolicy.parse("all").enabled == frozenset(filters.OPTIONAL)
  with pytest.raises(ValueError, match="unknown filter 'typo'"):
    filters.FilterPolicy.parse("unparsed,typo")
  p = filters.FilterPolicy.parse("disagree,low_agreement,too_long", max_rationale_chars=5,
                                 min_agreement=0.6)
  f = filters.Facts(False, True, "too long text", 0.5, False)
  assert p.failing(f) == ["too_long", "low_agreement", "disagree"]
  assert p.drop_reason(p.failing(f)) == "too_long"
  keep_all = filters.FilterPolicy.parse("none")
  assert keep_all.drop_reason(keep_all.failing(f)) is None
  failed = filters.Facts(True, False, None, 0.0, None)
  assert keep_all.drop_reason(keep_all.failing(failed)) == filters.FAILED


# -- cache ------------------------------------------------------------------------------------


def test_sample_key_depends_on_everything_that_decides_the_text():
  base = dict(api="chat", prompt=[{"role": "user", "content": "q"}], model="m",
              params={"temperature": 0.7}, index=0)
  k = cache_lib.sample_key(**base)
  assert k == cache_lib.sample_key(**base)
  for field, value in [("api", "completions"), ("prompt", "q"), ("model", "m2"),
                       ("params", {"temperature": 0.8}), ("index", 1)]:
    assert cache_lib.sample_key(**{**base, field: value}) != k


def test_cache_survives_reopen_and_ignores_damaged_rows(tmp_path):
  path = str(tmp_path / "c.sqlite")
  with cache_lib.ResponseCache(path) as c:
    c.put_many([("k1", {"text": "one"}), ("k2", {"text": "two"})])
  con = sqlite3.connect(path)
  con.execute("INSERT INTO samples VALUES ('k3', 0, '{\"text\": \"trunc')")
  con.commit()
  con.close()
  with cache_lib.ResponseCache(path) as c:
    got = c.get_many(["k1", "k2", "k3", "k4"])
    assert set(got) == {"k1", "k2"} and got["k2"]["text"] == "two"
    assert c.corrupt_rows == 1


def test_cache_rejects_a_file_that_is_not_a_database(tmp_path):
  p = tmp_path / "c.sqlite"
  p.write_bytes(b"this is not sqlite" * 100)
  with pytest.raises(cache_lib.CacheError, match="c.sqlite"):
    cache_lib.ResponseCache(str(p))
  with pytest.raises(cache_lib.CacheError, match="local"):
    cache_lib.ResponseCache("gs://bucket/c.sqlite")


# -- client helpers ----------------------------------------------------------------------------


def test_retry_after_seconds_and_http_date():
  assert client_lib.parse_retry_after("3") == 3.0
  assert client_lib.parse_retry_after(" 0.5 ") == 0.5
  now = time.time()
  date = email.utils.formatdate(now + 10, usegmt=True)
  assert client_lib.parse_retry_after(date, now=now) == pytest.approx(10, abs=1.01)
  assert client_lib.parse_retry_after(email.utils.formatdate(now - 50, usegmt=True)) == 0.0
  assert client_lib.parse_retry_after("soon") is None
  assert client_lib.parse_retry_after(None) is None


def test_sanitize_url_strips_credentials_query_and_fragment():
  url = "https://user:s3cret@api.example.com:8443/v1beta/openai/?key=abc#frag"
  assert provenance.sanitize_url(url) == "https://api.example.com:8443/v1beta/openai/"


def test_endpoint_config_validation_and_key_not_in_repr():
  cfg = client_lib.EndpointConfig("http://h/v1", "m", api_key="sk-secret-xyz")
  assert "sk-secret-xyz" not in repr(cfg)
  assert cfg.url == "http://h/v1/chat/completions"
  assert client_lib.EndpointConfig("http://h/v1/", "m", api="completions").url == (
      "http://h/v1/completions")
  with pytest.raises(ValueError, match="api"):
    client_lib.EndpointConfig("http://h/v1", "m", api="grpc")
  with pytest.raises(ValueError, match="base_url"):
    client_lib.EndpointConfig("h/v1", "m")


def test_rate_limiter_spaces_request_starts():
  clock = [0.0]
  starts = []

  async def fake_sleep(s):
    clock[0] += s

  async def go():
    lim = ratelimit.RateLimiter(rpm=120, clock=lambda: clock[0], sleep=fake_sleep)
    for _ in range(5):
      await lim.acquire()
      starts.append(clock[0])
    lim.pause_until(clock[0] + 10)
    await lim.acquire()
    starts.append(clock[0])

  asyncio.run(go())
  assert starts[:5] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
  assert starts[5] == pytest.approx(12.0)


# -- inputs ------------------------------------------------------------------------------------


def test_user_jsonl_reading_and_errors(tmp_path):
  p = tmp_path / "mine.jsonl"
  p.write_text('{"input": "a?", "label": "yes"}\n\n{"id": 7, "input": "b?"}\n')
  exs = inputs.read_user_jsonl(str(p), label_space=["yes", "no"])
  assert [(e.id, e.label) for e in exs] == [("mine-1", "yes"), ("7", None)]
  cases = [
      ('{"input": "a", "label": "maybe"}', "label"),
      ('{"input": ""}', "input"),
      ('{"input": "a", "colour": 1}', "colour"),
      ('{"id": "x", "input": "a"}\n{"id": "x", "input": "b"}', "id"),
      ('[1, 2]', None),
      ('{"input": "a"', None),
  ]
  for text, field in cases:
    p.write_text(text + "\n")
    with pytest.raises(RecordError) as e:
      inputs.read_user_jsonl(str(p), label_space=["yes", "no"])
    assert "mine.jsonl:" in str(e.value) and e.value.field == field
  p.write_text('{"input": "a"}\n')
  with pytest.raises(RecordError, match="choices"):
    inputs.read_user_jsonl(str(p), needs_choices=True)
  p.write_text(json.dumps({"input": "a", "choices": ["x", "y"], "label": "y"}) + "\n")
  assert inputs.read_user_jsonl(str(p), needs_choices=True)[0].meta == {"choices": ["x", "y"]}

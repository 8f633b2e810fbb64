"""End-to-end teacher runs against the fake OpenAI-compatible server, with injected faults."""
import asyncio
import dataclasses
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from dsbs.data import load_examples, record
from dsbs.data.record import Example
from dsbs.teacher import __main__ as cli
from dsbs.teacher import client as client_lib
from dsbs.teacher import filters
from dsbs.teacher import generate
from dsbs.teacher import inputs
from dsbs.teacher import prompts
from dsbs.teacher.fake_server import FakeOpenAIServer

PROMPT_DOC = {
    "name": "yesno", "kind": "classification", "label_space": ["yes", "no"],
    "instruction": "Answer yes or no.",
    "exemplars": [{"input": "Is snow cold?", "rationale": "Snow is frozen water.", "answer": "yes"},
                  {"input": "Is fire cold?", "rationale": "Fire burns hot.", "answer": "no"}],
}
PROMPT = prompts.from_dict(PROMPT_DOC, path="yesno.json")
SECRET = "sk-dsbs-leakcheck-5c1f0e9a7d"


def answer(question, index):
  del index
  return f"Thinking about {question} carefully. So the answer is yes."


def _examples(n, label="yes"):
  return [Example(id=f"e{i}", input=f"q{i}", label=label) for i in range(n)]


def _cfg(tmp_path, server, *, api="chat", num_samples=1, policy="default", sample_mode="repeat",
         **endpoint):
  ep = dict(base_url=server.base_url, model="fake-model", api=api, timeout=2.0, max_retries=3,
            backoff_base=0.01, concurrency=4)
  ep.update(endpoint)
  return generate.RunConfig(
      output_dir=str(tmp_path / "out"), split="train",
      endpoint=client_lib.EndpointConfig(**ep), prompt=PROMPT,
      sampling=generate.SamplingConfig(num_samples=num_samples, temperature=0.7,
                                       sample_mode=sample_mode),
      policy=policy if isinstance(policy, filters.FilterPolicy) else filters.FilterPolicy.parse(
          policy), progress=False)


def _rows(path):
  return list(record.read_jsonl(str(path)))


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_run_with_faults_retries_filters_and_rerun_sends_nothing(tmp_path, api):
  faults = {"q0": ["500", "500"], "q1": ["malformed"], "q2": ["truncated"]}
  with FakeOpenAIServer(answer, faults=faults, max_seconds=30) as srv:
    cfg = _cfg(tmp_path, srv, api=api)
    res = generate.run(cfg, _examples(4))
    assert len(srv.requests_for("q0")) == 3 and len(srv.requests_for("q1")) == 2
    body = srv.requests_for("q3")[0].body
    assert ("messages" in body) == (api == "chat") and ("prompt" in body) == (api != "chat")
    assert body["stop"] == ["\n\nQ:", "\nQ:"] and body["model"] == "fake-model"
    assert (res.kept, res.dropped, res.failed) == (3, 1, 0)
    assert res.tally["dropped"]["unparsed"] == 1
    p = res.provenance
    assert p["requests"]["sent"] == 7 and p["requests"]["retries"] == 3
    assert p["requests"]["by_status"] == {"200": 5, "500": 2, "malformed": 1}
    assert p["usage"]["prompt_tokens"] > 0 and p["usage"]["completion_tokens"] > 0
    assert p["teacher"]["api"] == api and p["prompt"]["name"] == "yesno"
    kept = _rows(res.records_path)
    assert [r.id for r in kept] == ["e0", "e1", "e3"]
    assert all(r.parse_status == record.OK and r.teacher_label == "yes" for r in kept)
    assert kept[0].rationale == "Thinking about q0 carefully."
    assert kept[0].meta["teacher"]["votes"] == {"yes": 1}
    dropped = _rows(res.filtered_path)
    assert [(r.id, r.parse_status, r.meta["teacher"]["drop_reason"]) for r in dropped] == [
        ("e2", record.NO_ANSWER, "unparsed")]
    assert dropped[0].meta["teacher"]["finish_reasons"] == ["length"]  # hit max_tokens
    before = srv.request_count
    first = pathlib.Path(res.records_path).read_bytes()
    res2 = generate.run(cfg, _examples(4))
    assert srv.request_count == before  # identical rerun: every sample comes from the cache
    assert res2.provenance["cache"]["hits"] == 4 and res2.provenance["requests"]["sent"] == 0
    assert pathlib.Path(res2.records_path).read_bytes() == first
  prov = json.loads(pathlib.Path(res.provenance_path).read_text())
  assert prov["splits"]["train"]["cache"]["hits"] == 4 and prov["dsbs_version"]


def test_retry_after_is_honoured_in_seconds_and_as_http_date(tmp_path):
  faults = {"q0": ["429:1"], "q1": ["429date:2"]}
  with FakeOpenAIServer(answer, faults=faults, max_seconds=30) as srv:
    res = generate.run(_cfg(tmp_path, srv, concurrency=1), _examples(2))
    for q, at_least in (("q0", 0.95), ("q1", 0.95)):
      reqs = srv.requests_for(q)
      assert [r.outcome for r in reqs][-1] == "ok"
      gap = reqs[1].time - reqs[0].time
      assert gap >= at_least, (q, gap)  # backoff alone would wait ~0.01 s
  assert res.kept == 2 and res.provenance["requests"]["by_status"]["429"] == 2


def test_timeouts_are_retried_failures_counted_and_a_rerun_retries_only_those(tmp_path):
  faults = {"q0": ["timeout"], "q1": ["500"] * 3}
  with FakeOpenAIServer(answer, faults=faults, hang_seconds=1.0, max_seconds=30) as srv:
    cfg = _cfg(tmp_path, srv, timeout=0.3, max_retries=2)
    res = generate.run(cfg, _examples(3))
    assert res.provenance["requests"]["by_status"]["timeout"] == 1
    assert (res.kept, res.failed) == (2, 1)
    assert res.provenance["requests"]["failed_requests"] == 1
    failed = _rows(res.filtered_path)
    assert [(r.id, r.parse_status, r.meta["teacher"]["drop_reason"]) for r in failed] == [
        ("e1", record.NO_TEACHER, "failed")]
    before = srv.request_count
    res2 = generate.run(cfg, _examples(3))
    assert srv.request_count == before + 1 and [r.question for r in srv.log[before:]] == ["q1"]
    assert (res2.kept, res2.failed) == (3, 0)


def test_self_consistency_vote_and_every_filter_counts(tmp_path):
  plan = {
      "q0": ["yes", "no", "yes", "yes", "no"],  # agreement 0.6 -> low_agreement
      "q1": ["no", "no", "no", "yes", None],  # teacher no, gold yes -> disagree
      "q2": ["yes"] * 5,  # long rationale -> too_long
      "q3": ["no", "yes", "yes", None, None],  # yes 2/3: kept
  }

  def responder(question, index):
    word = plan[question][index]
    if word is None:
      return "I am not sure what to say here."
    pad = " It is a long story." * 10 if question == "q2" else ""
    return f"Sample {index} on {question}.{pad} So the answer is {word}."

  policy = filters.FilterPolicy.parse("all", max_rationale_chars=120, min_agreement=0.65)
  with FakeOpenAIServer(responder, max_seconds=30) as srv:
    res = generate.run(_cfg(tmp_path, srv, num_samples=5, policy=policy, concurrency=1),
                       _examples(4))
    assert srv.request_count == 20
  assert res.tally["dropped"] == {"failed": 0, "unparsed": 0, "empty": 0, "too_long": 1,
                                  "low_agreement": 1, "disagree": 1}
  kept = _rows(res.records_path)
  assert [r.id for r in kept] == ["e3"]
  t = kept[0].meta["teacher"]
  assert (kept[0].teacher_label, t["votes"], t["valid_samples"], t["num_samples"]) == (
      "yes", {"no": 1, "yes": 2}, 3, 5)
  assert t["agreement"] == pytest.approx(2 / 3, abs=1e-6) and t["chosen_sample"] == 1
  assert kept[0].rationale == "Sample 1 on q3."
  by_id = {r.id: r for r in _rows(res.filtered_path)}
  assert by_id["e0"].meta["teacher"]["drop_reason"] == "low_agreement"
  assert by_id["e1"].teacher_label == "no"
  assert by_id["e1"].meta["teacher"]["agrees_with_gold"] is False


@pytest.mark.parametrize("honour_n", [True, False])
def test_n_parameter_mode_fills_samples_a_server_leaves_out(tmp_path, honour_n):
  with FakeOpenAIServer(answer, honour_n=honour_n, max_seconds=30) as srv:
    res = generate.run(_cfg(tmp_path, srv, num_samples=3, sample_mode="n"), _examples(2))
    assert srv.request_count == (2 if honour_n else 6)
    assert srv.log[0].body["n"] == 3
  assert res.kept == 2
  assert all(r.meta["teacher"]["valid_samples"] == 3 for r in _rows(res.records_path))


# -- the command line ----------------------------------------------------------------------------


def _write_inputs(tmp_path, n):
  (tmp_path / "prompt.json").write_text(json.dumps(PROMPT_DOC))
  with open(tmp_path / "in.jsonl", "w") as f:
    for i in range(n):
      f.write(json.dumps({"id": f"e{i}", "input": f"q{i}", "label": "yes"}) + "\n")


def _argv(tmp_path, srv, out, *extra):
  return ["generate", "--input_file", str(tmp_path / "in.jsonl"), "--prompt_file",
          str(tmp_path / "prompt.json"), "--output_dir", str(out), "--base_url", srv.base_url,
          "--model", "fake-model", "--backoff_base", "0.01", "--timeout", "2", "--quiet", *extra]


def _cli_env(**extra):
  env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
  env.update(extra)
  return env


def test_cli_usage_errors_are_one_line_with_status_2(tmp_path, capsys):
  _write_inputs(tmp_path, 1)
  cases = [
      (["generate", "--output_dir", "o", "--base_url", "http://x/v1", "--model", "m"],
       "--dataset with --split, or --input_file"),
      (_argv(tmp_path, type("S", (), {"base_url": "http://127.0.0.1:9/v1"}), tmp_path / "o",
             "--filter", "bogus"), "unknown filter 'bogus'"),
      (_argv(tmp_path, type("S", (), {"base_url": "ftp://x"}), tmp_path / "o"), "base_url"),
  ]
  (tmp_path / "bad.jsonl").write_text('{"input": "a"}\n{"input": "b", "label": 3.5}\n')
  cases.append((["generate", "--input_file", str(tmp_path / "bad.jsonl"), "--prompt_file",
                 str(tmp_path / "prompt.json"), "--output_dir", "o", "--base_url", "http://x/v1",
                 "--model", "m"], "bad.jsonl:2: field 'label'"))
  for argv, message in cases:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dsbs.teacher: error:") and message in err[0], err


def test_cli_never_leaks_the_api_key(tmp_path):
  _write_inputs(tmp_path, 3)
  out = tmp_path / "out"
  env = _cli_env(DSBS_TEST_KEY=SECRET)
  with FakeOpenAIServer(answer, faults={"q0": ["500"], "q1": ["malformed"]},
                        max_seconds=60) as srv:
    ok = subprocess.run([sys.executable, "-m", "dsbs.teacher",
                         *_argv(tmp_path, srv, out, "--api_key_env", "DSBS_TEST_KEY")],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert all(r.authorized for r in srv.log)
    assert srv.log[0].body.get("api_key") is None
  # A server that refuses the key and echoes it back: exit 2, one line, key redacted.
  with FakeOpenAIServer(answer, faults={"q0": ["401"]}, max_seconds=60) as srv:
    bad = subprocess.run([sys.executable, "-m", "dsbs.teacher",
                          *_argv(tmp_path, srv, tmp_path / "out401", "--api_key_env",
                                 "DSBS_TEST_KEY", "--concurrency", "1")],
                         capture_output=True, text=True, env=env, timeout=60)
  assert bad.returncode == 2
  lines = bad.stderr.strip().splitlines()
  assert lines[-1].startswith("dsbs.teacher: error: the endpoint refused the request: HTTP 401")
  assert "Traceback" not in bad.stderr and "<redacted>" in lines[-1], bad.stderr
  texts = [ok.stdout, ok.stderr, bad.stdout, bad.stderr]
  for root in (out, tmp_path / "out401"):
    for f in pathlib.Path(root).rglob("*"):
      if f.is_file():
        texts.append(f.read_bytes().decode("utf-8", "replace"))
  assert len(texts) > 6  # records, filtered, provenance, cache (+ WAL) were all read
  for t in texts:
    assert SECRET not in t


def _cache_rows(path):
  con = sqlite3.connect(path)
  try:
    return con.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
  finally:
    con.close()


def test_kill_and_resume_loses_and_repeats_nothing(tmp_path):
  n = 24
  _write_inputs(tmp_path, n)
  killed_out, clean_out = tmp_path / "killed", tmp_path / "clean"
  with FakeOpenAIServer(answer, latency=0.04, max_seconds=90) as srv:
    proc = subprocess.Popen([sys.executable, "-m", "dsbs.teacher",
                             *_argv(tmp_path, srv, killed_out, "--concurrency", "1")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_cli_env())
    deadline = time.monotonic() + 30
    while srv.ok_count < 8 and time.monotonic() < deadline and proc.poll() is None:
      time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    answered = srv.ok_count
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed_out / "in.jsonl").exists()  # no output was written by the killed run
    cached = _cache_rows(str(killed_out / "teacher_cache.sqlite"))
    sent_first = srv.request_count
    # With one request in flight, at most that one is lost (answered but not yet committed).
    assert 6 <= cached < n and answered - cached <= 1 and sent_first - cached <= 1

    resumed = subprocess.run([sys.executable, "-m", "dsbs.teacher",
                              *_argv(tmp_path, srv, killed_out)],
                             capture_output=True, text=True, env=_cli_env(), timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert srv.request_count - sent_first == n - cached  # nothing completed is asked again
    questions = [r.question for r in srv.log]
    assert len(set(questions)) == n

    clean = subprocess.run([sys.executable, "-m", "dsbs.teacher", *_argv(tmp_path, srv, clean_out)],
                           capture_output=True, text=True, env=_cli_env(), timeout=60)
    assert clean.returncode == 0, clean.stderr
  assert (killed_out / "in.jsonl").read_bytes() == (clean_out / "in.jsonl").read_bytes()
  assert len(_rows(killed_out / "in.jsonl")) == n
  prov = json.loads((killed_out / "provenance.json").read_text())["splits"]["in"]
  assert prov["source"]["sha256"] == inputs.file_sha256(str(tmp_path / "in.jsonl"))
  assert prov["cache"]["hits"] == cached and prov["requests"]["sent"] == n - cached


def test_cli_on_released_and_synthetic_benchmarks(tmp_path, data_dir, capsys):
  # The default responder answers like the prompt's first exemplar: "(b) trunk of the car" for
  # cqa (so the row's second choice) and "16" for arith.
  with FakeOpenAIServer(max_seconds=60) as srv:
    common = ["--base_url", srv.base_url, "--model", "fake", "--quiet", "--limit", "3"]
    rc = cli.main(["generate", "--dataset", "cqa", "--split", "test", "--data_dir", data_dir,
                   "--output_dir", str(tmp_path / "cqa"), *common])
    assert rc == 0, capsys.readouterr().err
    rows = _rows(tmp_path / "cqa" / "test.jsonl")
    assert len(rows) == 3
    for r in rows:
      assert r.parse_status == record.OK and r.teacher_label == r.meta["choices"][1]
      assert r.meta["teacher"]["agrees_with_gold"] == (r.label == r.meta["choices"][1])
    rc = cli.main(["generate", "--dataset", "arith", "--split", "test", "--filter", "disagree",
                   "--api", "completions", "--output_dir", str(tmp_path / "arith"), *common,
                   "--limit", "12"])
    assert rc == 0
    golds = [e.label for e in load_examples("arith", "test")[:12]]
    prov = json.loads((tmp_path / "arith" / "provenance.json").read_text())["splits"]["test"]
    assert prov["filters"]["dropped"]["disagree"] == sum(g != "16" for g in golds)
    kept = _rows(tmp_path / "arith" / "test.jsonl")
    assert all(r.teacher_label == "16" and r.label == "16" for r in kept)
    assert all("teacher_answer" not in r.meta for r in kept)  # the synthetic teacher's is gone
    capsys.readouterr()
    rc = cli.main(["generate", "--dataset", "svamp", "--split", "test", "--data_dir", data_dir,
                   "--prompt_file", prompts.prompts_dir() + "/anli1.json",
                   "--output_dir", str(tmp_path / "x"), *common])
    assert rc == 2 and "does not fit dataset svamp" in capsys.readouterr().err


def test_rpm_limit_and_connection_errors(tmp_path):
  with FakeOpenAIServer(answer, max_seconds=30) as srv:
    t0 = time.monotonic()
    res = generate.run(_cfg(tmp_path, srv, rpm=600), _examples(5))  # one start per 0.1 s
    assert time.monotonic() - t0 >= 0.4 and res.kept == 5
    times = sorted(r.time for r in srv.log)  # as received: allow some network jitter
    assert times[-1] - times[0] >= 0.35 and min(b - a for a, b in zip(times, times[1:])) >= 0.05
  # Nothing listens on the server's old port any more: nothing ever answered, so no retry can
  # help; the run stops at once.
  t0 = time.monotonic()
  with pytest.raises(client_lib.FatalEndpointError, match="nothing answers at http://127.0.0.1"):
    generate.run(_cfg(tmp_path / "down", srv, max_retries=6, backoff_base=1.0), _examples(2))
  assert time.monotonic() - t0 < 5
  # After an answer, a connection error is a hiccup: retried, then the request fails.
  async def after_an_answer():
    cfg = _cfg(tmp_path / "down1", srv, max_retries=1).endpoint
    async with client_lib.OpenAIClient(cfg) as c:
      c.answered = True
      with pytest.raises(client_lib.EndpointError, match="gave up after 2 attempts"):
        await c.complete([{"role": "user", "content": "q"}], {})
      return c.stats
  stats = asyncio.run(after_an_answer())
  assert stats.statuses == {"connection_error": 2} and stats.retries == 1
  # An endpoint that answers, but only with errors: a run stops after N failures in a row.
  with FakeOpenAIServer(answer, faults={f"q{i}": ["500"] for i in range(10)},
                        max_seconds=30) as srv:
    down = dataclasses.replace(_cfg(tmp_path / "down2", srv, max_retries=0, concurrency=1),
                               max_consecutive_failures=3)
    with pytest.raises(generate.RunAborted, match="3 requests in a row failed"):
      generate.run(down, _examples(10))


def test_an_address_where_nothing_answers_exits_2_at_once(tmp_path, capsys):
  with FakeOpenAIServer(answer, max_seconds=30) as srv:
    url = srv.base_url
  _write_inputs(tmp_path, 2)
  t0 = time.monotonic()
  rc = cli.main(["generate", "--input_file", str(tmp_path / "in.jsonl"), "--prompt_file",
                 str(tmp_path / "prompt.json"), "--output_dir", str(tmp_path / "out"),
                 "--base_url", url, "--model", "m", "--quiet"])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and time.monotonic() - t0 < 10
  assert err[-1].startswith(f"dsbs.teacher: error: --base_url={url}: nothing answers at ")
  assert "fake-server" in err[-1]
  assert not (tmp_path / "out").exists()  # a run that cached nothing leaves nothing behind
  (tmp_path / "mine").mkdir()  # ... but never removes a dir it did not create
  assert cli.main(["generate", "--input_file", str(tmp_path / "in.jsonl"), "--prompt_file",
                   str(tmp_path / "prompt.json"), "--output_dir", str(tmp_path / "mine"),
                   "--base_url", url, "--model", "m", "--quiet"]) == 2
  assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())


def test_dry_run_counts_without_sending_and_render_prints_the_prompt(tmp_path, capsys):
  _write_inputs(tmp_path, 3)
  with FakeOpenAIServer(answer, max_seconds=30) as srv:
    argv = _argv(tmp_path, srv, tmp_path / "out", "--num_samples", "2")
    assert cli.main(argv + ["--limit", "1"]) == 0
    capsys.readouterr()
    assert cli.main(argv + ["--dry_run"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert srv.request_count == 2
  assert (counts["inputs"], counts["samples"], counts["cached"], counts["to_send"],
          counts["requests"]) == (3, 6, 2, 4, 4)
  assert counts["prompt_chars"] > 0
  assert cli.main(["render", "--prompt_file", str(tmp_path / "prompt.json"), "--api",
                   "completions", "--input", "Is ice cold?"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("Answer yes or no.\n\nQ: Is snow cold?") and out.endswith(
      "Q: Is ice cold?\nA:\n")

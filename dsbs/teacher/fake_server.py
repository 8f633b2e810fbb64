"""An OpenAI-compatible fake endpoint with scripted faults, for tests and offline dry runs.

Serves POST /v1/chat/completions and /v1/completions on 127.0.0.1. The answer to a request comes
from a responder (question text, sample number) -> completion text; by default it answers like
the prompt's first exemplar, so a dry run of `python -m dsbs.teacher generate` parses. Faults are
scripted per question as a list consumed one request at a time:

  "500"        HTTP 500                     "429" / "429:<s>"   HTTP 429, Retry-After <s> (1) s
  "429date:<s>" 429 with an HTTP-date Retry-After <s> s ahead    "timeout"  sleep past the client
  "malformed"  200 with a body that is not JSON                  "truncated" text with no answer
  "401"        HTTP 401

The server runs on its own thread and event loop, stops itself after `max_seconds`, and answers
503 once `max_requests` is reached, so a test can never hang on it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import re
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from aiohttp import web

Responder = Callable[[str, int], str]

# The answer sentence of an exemplar; "<label>" placeholders of an instruction do not match.
_EXEMPLAR_ANSWER = re.compile(r"So the answer is ([^\n\"<]*?)\.(?=\s|\"|$)")


@dataclasses.dataclass
class LoggedRequest:
  time: float
  path: str
  question: str
  n: int
  outcome: str  # "ok" or the fault served
  authorized: bool  # an Authorization header was present
  body: dict[str, Any]


def question_of(body: Mapping[str, Any]) -> str:
  """The question a request asks: the last user turn, or the last `Q:` of a text prompt."""
  if "messages" in body:
    users = [m.get("content", "") for m in body["messages"] if m.get("role") == "user"]
    text = users[-1] if users else ""
  else:
    text = str(body.get("prompt", ""))
  if "Q: " in text:
    text = text.rsplit("Q: ", 1)[1]
  if text.endswith("\nA:"):
    text = text[:-3]
  return text.strip()


def exemplar_style_responder(body: Mapping[str, Any]) -> str:
  """Answers with the first exemplar's answer sentence found in the prompt."""
  blob = json.dumps(body.get("messages")) if "messages" in body else str(body.get("prompt", ""))
  blob = blob.replace("\\n", "\n")
  m = _EXEMPLAR_ANSWER.search(blob)
  answer = m.group(1) if m else "unknown"
  return f"I read the question and reason about it step by step. So the answer is {answer}."


class FakeOpenAIServer:
  """A bounded OpenAI-compatible server on a background thread (use as a context manager)."""

  def __init__(self, responder: Responder | None = None, *,
               faults: Mapping[str, Sequence[str]] | None = None, latency: float = 0.0,
               hang_seconds: float = 5.0, honour_n: bool = True, max_requests: int = 2000,
               max_seconds: float = 120.0, host: str = "127.0.0.1", port: int = 0):
    self._responder = responder
    self._faults = {q: list(f) for q, f in (faults or {}).items()}
    self.latency, self.hang_seconds, self.honour_n = latency, hang_seconds, honour_n
    self.max_requests, self.max_seconds = max_requests, max_seconds
    self.host, self.port = host, port
    self.log: list[LoggedRequest] = []
    self._samples: dict[str, int] = {}
    self._lock = threading.Lock()
    self._thread: threading.Thread | None = None
    self._loop: asyncio.AbstractEventLoop | None = None
    self._stop: asyncio.Event | None = None
    self._ready = threading.Event()
    self._error: BaseException | None = None

  # -- public ------------------------------------------------------------------------------

  @property
  def base_url(self) -> str:
    return f"http://{self.host}:{self.port}/v1"

  @property
  def ok_count(self) -> int:
    with self._lock:
      return sum(1 for r in self.log if r.outcome == "ok")

  @property
  def request_count(self) -> int:
    with self._lock:
      return len(self.log)

  @property
  def running(self) -> bool:
    return self._thread is not None and self._thread.is_alive()

  def requests_for(self, question: str) -> list[LoggedRequest]:
    with self._lock:
      return [r for r in self.log if r.question == question]

  def start(self) -> "FakeOpenAIServer":
    self._thread = threading.Thread(target=self._main, name="fake-openai", daemon=True)
    self._thread.start()
    if not self._ready.wait(10):
      raise RuntimeError("fake server did not start")
    if self._error:
      raise RuntimeError(f"fake server failed: {self._error}")
    return self

  def stop(self) -> None:
    if self._loop is not None and self._stop is not None and self._loop.is_running():
      self._loop.call_soon_threadsafe(self._stop.set)
    if self._thread is not None:
      self._thread.join(10)

  def __enter__(self) -> "FakeOpenAIServer":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()

  # -- server ------------------------------------------------------------------------------

  def _main(self) -> None:
    try:
      asyncio.run(self._serve())
    except BaseException as e:  # pylint: disable=broad-except
      self._error = e
      self._ready.set()

  async def _serve(self) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", self._handle)
    app.router.add_post("/v1/completions", self._handle)
    runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, self.host, self.port)
    await site.start()
    self.port = site._server.sockets[0].getsockname()[1]  # pylint: disable=protected-access
    self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
    self._ready.set()
    try:
      await asyncio.wait_for(self._stop.wait(), timeout=self.max_seconds)
    except asyncio.TimeoutError:
      pass
    finally:
      await runner.cleanup()

  def _next_fault(self, question: str) -> str | None:
    queue = self._faults.get(question)
    return queue.pop(0) if queue else None

  def _text(self, body: dict[str, Any], question: str) -> str:
    with self._lock:
      index = self._samples.get(question, 0)
      self._samples[question] = index + 1
    if self._responder is not None:
      return self._responder(question, index)
    return exemplar_style_responder(body)

  async def _handle(self, request):
    raw = await request.read()
    try:
      body = json.loads(raw)
    except ValueError:
      return web.json_response({"error": {"message": "bad json"}}, status=400)
    question = question_of(body)
    n = int(body.get("n", 1)) if self.honour_n else 1
    with self._lock:
      over = len(self.log) >= self.max_requests
      fault = "limit" if over else self._next_fault(question)
      entry = LoggedRequest(time.monotonic(), request.path, question, n, fault or "ok",
                            "Authorization" in request.headers, body)
      self.log.append(entry)
    if self.latency:
      await asyncio.sleep(self.latency)
    if fault == "limit":
      return web.json_response({"error": {"message": "request limit"}}, status=503)
    if fault == "500":
      return web.json_response({"error": {"message": "boom"}}, status=500)
    if fault == "401":
      # Like some real proxies, echo the credential back: the client must redact it.
      echo = request.headers.get("Authorization", "")
      return web.json_response({"error": {"message": f"invalid api key: {echo}"}}, status=401)
    if fault and fault.startswith("429date"):
      secs = float(fault.split(":", 1)[1]) if ":" in fault else 1.0
      when = email.utils.formatdate(time.time() + secs, usegmt=True)
      return web.json_response({"error": {"message": "slow down"}}, status=429,
                               headers={"Retry-After": when})
    if fault and fault.startswith("429"):
      secs = fault.split(":", 1)[1] if ":" in fault else "1"
      return web.json_response({"error": {"message": "slow down"}}, status=429,
                               headers={"Retry-After": secs})
    if fault == "timeout":
      await asyncio.sleep(self.hang_seconds)
    if fault == "malformed":
      return web.Response(text='{"choices": [{"text": "half', content_type="application/json")
    texts = []
    for _ in range(n):
      if fault == "truncated":
        texts.append("Let me think about this. The first thing to notice is that")
      else:
        texts.append(self._text(body, question))
    chat = "messages" in body
    choices = []
    for i, t in enumerate(texts):
      reason = "length" if fault == "truncated" else "stop"
      c: dict[str, Any] = {"index": i, "finish_reason": reason}
      if chat:
        c["message"] = {"role": "assistant", "content": t}
      else:
        c["text"] = t
      choices.append(c)
    prompt_words = len(json.dumps(body.get("messages", body.get("prompt", ""))).split())
    usage = {"prompt_tokens": prompt_words,
             "completion_tokens": sum(len(t.split()) for t in texts)}
    return web.json_response({"id": "fake", "object": "chat.completion" if chat else
                              "text_completion", "model": body.get("model"),
                              "choices": choices, "usage": usage})


def serve_forever(host: str = "127.0.0.1", port: int = 8000) -> None:
  """Runs the fake server in the foreground until interrupted (for offline dry runs)."""
  server = FakeOpenAIServer(host=host, port=port, max_requests=10**9, max_seconds=10**9)
  server.start()
  print(f"fake OpenAI-compatible server on {server.base_url} (Ctrl-C to stop)", flush=True)
  try:
    while server.running:
      time.sleep(1.0)
  except KeyboardInterrupt:
    server.stop()

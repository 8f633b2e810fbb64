"""An async client for OpenAI-compatible completion endpoints (chat and plain completions).

Works against vLLM, TGI, llama.cpp server, Ollama, OpenAI and Gemini's compatible endpoint:
only the common subset of the protocol is used. Retries 429, 5xx, timeouts, connection errors
and unreadable bodies with exponential backoff and jitter, honouring Retry-After; stops the
whole run on errors that no retry can fix (401, 403, 404) and when nothing answers at the
address at all (a refused connection or an unknown host before any response: a server that is
not running or a wrong --base_url, where retries would only wait). The API key is sent as a
bearer token and never appears in an exception, a log line or a stats record.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import random
import time
from typing import Any, Callable, Sequence

import aiohttp

from dsbs.teacher import provenance, ratelimit

CHAT = "chat"
COMPLETIONS = "completions"
APIS = (CHAT, COMPLETIONS)

_FATAL_STATUSES = (401, 403, 404)
_RETRY_STATUSES = (408, 409, 425, 429)


class EndpointError(Exception):
  """A request failed for good (after retries, or with a non-retryable status)."""

  def __init__(self, message: str, status: int | None = None):
    super().__init__(message)
    self.status = status


class FatalEndpointError(EndpointError):
  """The endpoint refuses every request (bad key, wrong URL or model) or nothing answers at its
  address: the run must stop."""


class _Retryable(Exception):

  def __init__(self, message: str, retry_after: float | None = None):
    super().__init__(message)
    self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class EndpointConfig:
  """Where and how to send requests.

  Attributes:
    base_url: the API root including its version, e.g. http://localhost:8000/v1.
    model: the model name the server expects.
    api: `chat` (/chat/completions) or `completions` (/completions).
    api_key: bearer token, or None for local servers; excluded from repr.
    timeout: seconds for one HTTP attempt, connect to last byte.
    max_retries: retries after the first attempt of a request.
    backoff_base: first backoff delay in seconds; doubles every retry, with jitter.
    backoff_max: cap of one backoff delay (seconds).
    max_retry_after: cap of a server's Retry-After (seconds).
    rpm: requests-per-minute limit over all attempts, or None.
    concurrency: most requests in flight at once.
  """

  base_url: str
  model: str
  api: str = CHAT
  api_key: str | None = dataclasses.field(default=None, repr=False)
  timeout: float = 120.0
  max_retries: int = 6
  backoff_base: float = 1.0
  backoff_max: float = 60.0
  max_retry_after: float = 300.0
  rpm: float | None = None
  concurrency: int = 8

  def __post_init__(self):
    if self.api not in APIS:
      raise ValueError(f"api must be one of {APIS}, got {self.api!r}")
    if not self.base_url.startswith(("http://", "https://")):
      raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
    if self.concurrency < 1:
      raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
    if self.max_retries < 0 or self.timeout <= 0:
      raise ValueError("max_retries must be >= 0 and timeout > 0")

  @property
  def url(self) -> str:
    path = "chat/completions" if self.api == CHAT else "completions"
    return self.base_url.rstrip("/") + "/" + path


@dataclasses.dataclass
class Choice:
  text: str
  finish_reason: str | None


@dataclasses.dataclass
class Completion:
  choices: list[Choice]
  usage: dict[str, int]


@dataclasses.dataclass
class ClientStats:
  """Counters for provenance and the progress bar; no request content, no secrets."""

  requests: int = 0  # HTTP attempts sent
  retries: int = 0
  failures: int = 0  # requests given up on
  prompt_tokens: int = 0
  completion_tokens: int = 0
  statuses: dict[str, int] = dataclasses.field(default_factory=dict)

  def count(self, what: str) -> None:
    self.statuses[what] = self.statuses.get(what, 0) + 1


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
  """Seconds to wait from a Retry-After value (delta-seconds or HTTP date); None if absent/bad."""
  if not value:
    return None
  value = value.strip()
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    when = email.utils.parsedate_to_datetime(value)
  except (TypeError, ValueError, IndexError):
    return None
  if when is None:
    return None
  now = time.time() if now is None else now
  return max(0.0, when.timestamp() - now)


def _retry_after_of(headers: Any) -> float | None:
  ms = headers.get("retry-after-ms")
  if ms:
    try:
      return max(0.0, float(ms) / 1000.0)
    except ValueError:
      pass
  return parse_retry_after(headers.get("Retry-After"))


class OpenAIClient:
  """Sends completion requests with bounded concurrency, rate limiting and retries.

  Use as `async with OpenAIClient(cfg) as c: await c.complete(prompt, params, n)`.
  """

  def __init__(self, config: EndpointConfig, *, stats: ClientStats | None = None,
               on_retry: Callable[[], None] | None = None, rng: random.Random | None = None):
    self.config = config
    self.stats = stats or ClientStats()
    self._on_retry = on_retry
    self._rng = rng or random.Random()
    self._limiter = ratelimit.RateLimiter(config.rpm)
    self._sem = asyncio.Semaphore(config.concurrency)
    self._session = None
    self.answered = False  # some response came back from the endpoint (any status)

  async def __aenter__(self) -> "OpenAIClient":
    headers = {"Content-Type": "application/json"}
    if self.config.api_key:
      headers["Authorization"] = f"Bearer {self.config.api_key}"
    connector = aiohttp.TCPConnector(limit=self.config.concurrency)
    self._session = aiohttp.ClientSession(headers=headers, connector=connector)
    return self

  async def __aexit__(self, *exc) -> None:
    if self._session is not None:
      await self._session.close()
      self._session = None

  def _redact(self, text: str) -> str:
    key = self.config.api_key
    return text.replace(key, "<redacted>") if key else text

  def payload(self, prompt: str | Sequence[dict[str, str]], params: dict[str, Any],
              n: int) -> dict[str, Any]:
    """The JSON body: `prompt` is a text (completions) or a list of chat messages (chat)."""
    body: dict[str, Any] = {"model": self.config.model}
    if self.config.api == CHAT:
      if isinstance(prompt, str):
        raise TypeError("chat api needs a list of messages")
      body["messages"] = list(prompt)
    else:
      if not isinstance(prompt, str):
        raise TypeError("completions api needs a text prompt")
      body["prompt"] = prompt
    extra = params.get("extra_body") or {}
    body.update({k: v for k, v in params.items() if k != "extra_body" and v is not None})
    body.update(extra)
    if n != 1:
      body["n"] = n
    return body

  async def complete(self, prompt: str | Sequence[dict[str, str]], params: dict[str, Any],
                     n: int = 1) -> Completion:
    """One logical request (with retries). Raises EndpointError / FatalEndpointError."""
    body = self.payload(prompt, params, n)
    cfg = self.config
    attempt = 0
    while True:
      try:
        async with self._sem:
          await self._limiter.acquire()
          return await self._attempt(body)
      except _Retryable as e:
        if attempt >= cfg.max_retries:
          self.stats.failures += 1
          raise EndpointError(f"gave up after {attempt + 1} attempts: {e}") from None
        attempt += 1
        self.stats.retries += 1
        if self._on_retry:
          self._on_retry()
        if e.retry_after is not None:
          delay = min(e.retry_after, cfg.max_retry_after)
          self._limiter.pause_until(time.monotonic() + delay)
        else:
          delay = min(cfg.backoff_max, cfg.backoff_base * 2 ** (attempt - 1))
          delay *= 0.5 + 0.5 * self._rng.random()  # jitter in [delay/2, delay]
        await asyncio.sleep(delay)
      except EndpointError:
        self.stats.failures += 1
        raise

  async def _attempt(self, body: dict[str, Any]) -> Completion:
    assert self._session is not None, "use OpenAIClient as an async context manager"
    self.stats.requests += 1
    timeout = aiohttp.ClientTimeout(total=self.config.timeout)
    try:
      async with self._session.post(self.config.url, json=body, timeout=timeout) as resp:
        raw = await resp.read()
        status = resp.status
        retry_after = _retry_after_of(resp.headers)
    except asyncio.TimeoutError:
      self.stats.count("timeout")
      raise _Retryable(f"timed out after {self.config.timeout:g}s") from None
    except aiohttp.ClientConnectorError as e:
      self.stats.count("connection_error")
      if not self.answered:
        raise FatalEndpointError(self._redact(
            f"nothing answers at {_safe_url(self.config.url)} ({type(e).__name__}: "
            f"{e.os_error or e})")) from None
      raise _Retryable(self._redact(f"connection error: {type(e).__name__}: {e}")) from None
    except aiohttp.ClientError as e:
      self.stats.count("connection_error")
      raise _Retryable(self._redact(f"connection error: {type(e).__name__}: {e}")) from None
    self.answered = True
    self.stats.count(str(status))
    snippet = self._redact(raw[:300].decode("utf-8", "replace")).replace("\n", " ")
    if status in _FATAL_STATUSES:
      raise FatalEndpointError(
          f"HTTP {status} from {_safe_url(self.config.url)}: {snippet}", status)
    if status in _RETRY_STATUSES or status >= 500:
      raise _Retryable(f"HTTP {status}: {snippet}", retry_after)
    if status >= 400:
      raise EndpointError(f"HTTP {status}: {snippet}", status)
    try:
      data = json.loads(raw)
      completion = self._parse(data)
    except (ValueError, KeyError, TypeError, IndexError) as e:
      self.stats.count("malformed")
      raise _Retryable(f"malformed response body ({type(e).__name__}): {snippet}") from None
    self.stats.prompt_tokens += completion.usage.get("prompt_tokens", 0)
    self.stats.completion_tokens += completion.usage.get("completion_tokens", 0)
    return completion

  def _parse(self, data: dict[str, Any]) -> Completion:
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    if not choices:
      raise ValueError("no choices")
    out = []
    for c in choices:
      text = c["message"]["content"] if self.config.api == CHAT else c["text"]
      if text is None:
        text = ""
      if not isinstance(text, str):
        raise TypeError("choice text is not a string")
      out.append(Choice(text=text, finish_reason=c.get("finish_reason")))
    usage = data.get("usage") or {}
    usage = {k: int(usage[k]) for k in ("prompt_tokens", "completion_tokens")
             if isinstance(usage.get(k), (int, float))}
    return Completion(choices=out, usage=usage)


def _safe_url(url: str) -> str:
  return provenance.sanitize_url(url)

"""A teacher run: prompt an endpoint for every input, cache, vote, filter, write records.

    inputs ─► render prompt ─► sample keys ─► cache hit? ─no─► request ─► commit to cache
                                                  └─yes──────────────────────┐
    <split>.jsonl ◄─ filters ◄─ majority vote ◄─ parse every sample ◄────────┘

Every response is committed to the cache the moment it arrives, so a killed run loses at most
the requests in flight, and the same command resumes it; an identical rerun sends nothing.
Outputs are rebuilt from the cache at the end of every run, so they never hold a half run.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, Iterator, Sequence

from tqdm import tqdm

from dsbs import fileio
from dsbs.data import arithmetic, record
from dsbs.data.record import Example
from dsbs.teacher import cache as cache_lib
from dsbs.teacher import client as client_lib
from dsbs.teacher import filters as filters_lib
from dsbs.teacher import prompts as prompts_lib
from dsbs.teacher import provenance
from dsbs.teacher import vote as vote_lib

REPEAT = "repeat"
N_PARAM = "n"
SAMPLE_MODES = (REPEAT, N_PARAM)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Decoding parameters; all of them are part of every sample's cache key.

  Attributes:
    num_samples: samples per input (self-consistency when > 1).
    temperature, max_tokens, top_p: as in the OpenAI API (top_p None: server default).
    seed: base seed or None; in `repeat` mode sample i is requested with seed + i.
    sample_mode: `repeat` (one request per sample; works everywhere) or `n` (one request with
      the `n` parameter; any samples a server leaves out are requested again).
    stop: stop sequences, or None for the prompt's own.
    extra_body: extra JSON fields for the request (e.g. {"top_k": 40}).
  """

  num_samples: int = 1
  temperature: float = 0.0
  max_tokens: int = 256
  top_p: float | None = None
  seed: int | None = None
  sample_mode: str = REPEAT
  stop: tuple[str, ...] | None = None
  extra_body: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.num_samples < 1 or self.max_tokens < 1:
      raise ValueError("num_samples and max_tokens must be >= 1")
    if self.sample_mode not in SAMPLE_MODES:
      raise ValueError(f"sample_mode must be one of {SAMPLE_MODES}, got {self.sample_mode!r}")
    if self.temperature < 0:
      raise ValueError("temperature must be >= 0")

  def params(self, stop: Sequence[str]) -> dict[str, Any]:
    return {"temperature": self.temperature, "max_tokens": self.max_tokens, "top_p": self.top_p,
            "stop": list(stop) if stop else None, "seed": self.seed,
            "extra_body": dict(self.extra_body)}


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything a teacher run decides besides the inputs."""

  output_dir: str
  split: str
  endpoint: client_lib.EndpointConfig
  prompt: prompts_lib.PromptSpec
  sampling: SamplingConfig = SamplingConfig()
  policy: filters_lib.FilterPolicy = filters_lib.FilterPolicy()
  chat_style: str | None = None
  cache_path: str | None = None  # default: <output_dir>/teacher_cache.sqlite
  keep_samples: bool = False
  progress: bool = True
  max_consecutive_failures: int = 25  # then the endpoint is taken to be down: stop the run
  source: dict[str, Any] = dataclasses.field(default_factory=dict)

  def resolved_cache_path(self) -> str:
    if self.cache_path:
      return self.cache_path
    if fileio.is_remote(self.output_dir):
      raise cache_lib.CacheError("the response cache must be local: pass --cache_path when "
                                 "--output_dir is remote")
    return os.path.join(self.output_dir, "teacher_cache.sqlite")


@dataclasses.dataclass
class RunResult:
  records_path: str
  filtered_path: str
  provenance_path: str
  kept: int
  dropped: int
  failed: int
  tally: dict[str, Any]
  provenance: dict[str, Any]


class RunAborted(RuntimeError):
  """Too many requests failed in a row: the endpoint looks down; completed work is cached."""


@dataclasses.dataclass
class _Job:
  example: int  # index into the run's examples
  missing: list[tuple[int, str]]  # (sample index, key) still to fetch


_MAX_FAILURE_LINES = 10
_CHUNK = 1000


def labels_agree(kind: str, a: str, b: str) -> bool:
  """Whether two labels are the same answer under `kind` (by value for arithmetic kinds)."""
  if kind in ("arithmetic", "numeric"):
    return arithmetic.expressions_equal(a, b)
  return a.strip().casefold() == b.strip().casefold()


def _render(cfg: RunConfig, text: str) -> Any:
  if cfg.endpoint.api == client_lib.CHAT:
    return cfg.prompt.render_chat(text, cfg.chat_style)
  return cfg.prompt.render_completion(text)



def _base_params(cfg: RunConfig) -> dict[str, Any]:
  stop = cfg.sampling.stop if cfg.sampling.stop is not None else cfg.prompt.stop
  return cfg.sampling.params(stop)


def _request_params(cfg: RunConfig, base: dict[str, Any], sample: int) -> dict[str, Any]:
  """The sent parameters of one sample: in repeat mode, sample i uses seed + i."""
  if cfg.sampling.sample_mode == REPEAT and cfg.sampling.seed is not None:
    return {**base, "seed": cfg.sampling.seed + sample}
  return base


def _keys(cfg: RunConfig, examples: Sequence[Example]) -> list[list[str]]:
  """Per example, the cache keys of its samples (prompts are rendered again when sent)."""
  base = _base_params(cfg)
  out = []
  for ex in examples:
    prompt = _render(cfg, ex.input)
    out.append([cache_lib.sample_key(cfg.endpoint.api, prompt, cfg.endpoint.model, base, i)
                for i in range(cfg.sampling.num_samples)])
  return out


def _present(cache: cache_lib.ResponseCache, keys: list[list[str]]) -> set[str]:
  """The keys with a readable cached sample, read in chunks to bound memory."""
  flat = [k for ks in keys for k in ks]
  found: set[str] = set()
  for i in range(0, len(flat), _CHUNK):
    found.update(cache.get_many(flat[i:i + _CHUNK]))
  return found


def _jobs(cfg: RunConfig, keys: list[list[str]], present: set[str]) -> list[_Job]:
  jobs: list[_Job] = []
  queued: set[str] = set()  # identical inputs share keys: fetch each sample once
  for idx, ks in enumerate(keys):
    missing = [(i, k) for i, k in enumerate(ks) if k not in present and k not in queued]
    queued.update(k for _, k in missing)
    if not missing:
      continue
    if cfg.sampling.sample_mode == N_PARAM:
      jobs.append(_Job(idx, missing))
    else:
      jobs.extend(_Job(idx, [m]) for m in missing)
  return jobs


class _Progress:
  """tqdm on stderr with done / failed / retried counts and tokens."""

  def __init__(self, total: int, enabled: bool, stats: client_lib.ClientStats):
    self.stats, self.failed = stats, 0
    self.bar = None
    if enabled and total:

      self.bar = tqdm(total=total, unit="sample", file=sys.stderr, dynamic_ncols=True,
                      desc="teacher")

  def update(self, done: int = 0, failed: int = 0) -> None:
    self.failed += failed
    if self.bar is not None:
      self.bar.update(done + failed)
      self.refresh()

  def refresh(self) -> None:
    if self.bar is not None:
      s = self.stats
      self.bar.set_postfix(failed=self.failed, retried=s.retries,
                           tokens=s.prompt_tokens + s.completion_tokens, refresh=False)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()



async def _run_jobs(cfg: RunConfig, examples: Sequence[Example], jobs: list[_Job],
                    cache: cache_lib.ResponseCache, stats: client_lib.ClientStats,
                    progress: _Progress) -> int:
  """Sends every job; commits each response at once. Returns the number of failed samples."""
  failed = 0
  failure_lines = 0
  consecutive = 0
  base = _base_params(cfg)
  it: Iterator[_Job] = iter(jobs)

  def report(message: str) -> None:
    nonlocal failure_lines
    failure_lines += 1
    if failure_lines > _MAX_FAILURE_LINES:
      return
    if failure_lines == _MAX_FAILURE_LINES:
      message += " (further failures are only counted)"
    if progress.bar is not None:
      progress.bar.write(f"dsbs.teacher: request failed: {message}", file=sys.stderr)
    else:
      print(f"dsbs.teacher: request failed: {message}", file=sys.stderr)

  async def worker(client: client_lib.OpenAIClient) -> None:
    nonlocal failed, consecutive
    for job in it:
      prompt = _render(cfg, examples[job.example].input)
      missing = list(job.missing)
      try:
        while missing:
          n = len(missing) if cfg.sampling.sample_mode == N_PARAM else 1
          comp = await client.complete(prompt, _request_params(cfg, base, missing[0][0]), n=n)
          got = comp.choices[:len(missing)]
          cache.put_many(
              (key, {"text": c.text, "finish_reason": c.finish_reason, "model": cfg.endpoint.model,
                     "time": time.time()})
              for (_, key), c in zip(missing, got))
          missing = missing[len(got):]
          consecutive = 0
          progress.update(done=len(got))
      except client_lib.FatalEndpointError:
        raise
      except client_lib.EndpointError as e:
        failed += len(missing)
        consecutive += 1
        progress.update(failed=len(missing))
        report(f"{examples[job.example].id}: {e}")
        if consecutive >= cfg.max_consecutive_failures:
          raise RunAborted(f"{consecutive} requests in a row failed (last: {e}); stopping. Check "
                           "the endpoint, then rerun the same command: completed responses are "
                           "cached") from None

  async with client_lib.OpenAIClient(cfg.endpoint, stats=stats, on_retry=progress.refresh) as c:
    workers = [asyncio.ensure_future(worker(c)) for _ in range(cfg.endpoint.concurrency)]
    try:
      await asyncio.gather(*workers)
    except BaseException:
      for w in workers:
        w.cancel()
      await asyncio.gather(*workers, return_exceptions=True)
      raise
  return failed


def _finish(cfg: RunConfig, ex: Example, samples: list[dict | None]) -> tuple[Example, list[str]]:
  """Parses, votes and checks one input; returns the output record and its failing checks."""
  choices = ex.meta.get("choices")
  present = [s for s in samples if s is not None]
  parsed = [cfg.prompt.parse(s["text"], choices=choices) for s in present]
  same = functools.partial(labels_agree, cfg.prompt.kind)
  v = vote_lib.majority_vote(parsed, same=same)
  failed = len(present) < len(samples)
  agrees = None
  if ex.label is not None and v.label is not None:
    agrees = labels_agree(cfg.prompt.kind, v.label, ex.label)
  facts = filters_lib.Facts(failed=failed, has_label=v.label is not None, rationale=v.rationale,
                            agreement=v.agreement, agrees_with_gold=agrees)
  failing = cfg.policy.failing(facts)
  teacher: dict[str, Any] = {
      "votes": v.votes, "agreement": round(v.agreement, 6), "num_samples": len(samples),
      "valid_samples": v.valid, "chosen_sample": v.chosen, "agrees_with_gold": agrees,
  }
  # "length" here means the sample hit max_tokens: a truncated rationale.
  teacher["finish_reasons"] = [s.get("finish_reason") for s in present]
  if v.chosen is not None:
    teacher["answer_text"] = parsed[v.chosen].answer_text
  if failed:
    teacher["failed_samples"] = len(samples) - len(present)
  if cfg.keep_samples:
    teacher["samples"] = [s["text"] for s in present]
  if failing:
    teacher["failing"] = failing
  status = v.status if not failed else record.NO_TEACHER
  # Keys a previous teacher left in the input's meta (e.g. the released PaLM output's) would
  # describe another teacher's text: they are replaced by this run's `teacher` entry.
  meta = {key: val for key, val in ex.meta.items() if not key.startswith("teacher")}
  out = dataclasses.replace(
      ex, teacher_label=None if failed else v.label, rationale=None if failed else v.rationale,
      parse_status=status, meta={**meta, "teacher": teacher})
  return out, failing


def pending(cfg: RunConfig, examples: Sequence[Example]) -> dict[str, int]:
  """What a run would do now: samples cached, samples and requests to send (sends nothing)."""
  keys = _keys(cfg, examples)
  with cache_lib.ResponseCache(cfg.resolved_cache_path()) as cache:
    present = _present(cache, keys)
  jobs = _jobs(cfg, keys, present)
  prompt_chars = sum(len(json.dumps(_render(cfg, examples[j.example].input))) for j in jobs)
  return {"inputs": len(examples), "samples": sum(len(ks) for ks in keys),
          "cached": sum(1 for ks in keys for k in ks if k in present),
          "to_send": sum(len(j.missing) for j in jobs), "requests": len(jobs),
          "prompt_chars": prompt_chars}


def run(cfg: RunConfig, examples: Sequence[Example]) -> RunResult:
  """Runs the teacher over `examples` and writes `<split>.jsonl`, `.filtered.jsonl`, provenance."""
  started, t0 = provenance.now_iso(), time.monotonic()
  stats = client_lib.ClientStats()
  keys = _keys(cfg, examples)
  cache_path = cfg.resolved_cache_path()
  made = [p for p in (cache_path, cache_path + "-wal", cache_path + "-shm", cfg.output_dir)
          if not fileio.exists(p)]  # removed again if this run fails having cached nothing
  fileio.makedirs(cfg.output_dir)
  try:
    return _run(cfg, examples, keys, cache_path, started, t0, stats)
  except BaseException:
    _remove_if_nothing_cached(made, cache_path)
    raise


def _remove_if_nothing_cached(made: Sequence[str], cache_path: str) -> None:
  """After a failed run: the cache file and output dir this run created, when no response
  reached the cache (an unreachable endpoint, a refused key): a config error leaves nothing."""
  if cache_path in made and os.path.exists(cache_path):
    with cache_lib.ResponseCache(cache_path) as cache:
      if len(cache):
        return
  for path in made:
    if fileio.is_remote(path) or not os.path.exists(path):
      continue
    if os.path.isdir(path):
      if not os.listdir(path):
        os.rmdir(path)
    else:
      os.remove(path)


def _run(cfg: RunConfig, examples: Sequence[Example], keys, cache_path: str, started: str,
         t0: float, stats: client_lib.ClientStats) -> RunResult:
  base = cfg.output_dir.rstrip("/") + "/" + cfg.split
  records_path, filtered_path = base + ".jsonl", base + ".filtered.jsonl"
  tally = filters_lib.Tally()
  statuses: dict[str, int] = {}
  kept = dropped = failed_examples = 0
  with cache_lib.ResponseCache(cache_path) as cache:
    present = _present(cache, keys)
    hits = sum(1 for ks in keys for k in ks if k in present)
    jobs = _jobs(cfg, keys, present)
    to_send = sum(len(j.missing) for j in jobs)
    progress = _Progress(to_send, cfg.progress, stats)
    try:
      failed_samples = (asyncio.run(_run_jobs(cfg, examples, jobs, cache, stats, progress))
                        if jobs else 0)
    finally:
      progress.close()
    # Rebuild both outputs from the cache, a chunk of inputs at a time.
    with fileio.atomic_write_text(records_path) as kept_f, \
        fileio.atomic_write_text(filtered_path) as dropped_f:
      for start in range(0, len(examples), _CHUNK):
        chunk_keys = keys[start:start + _CHUNK]
        samples = cache.get_many([k for ks in chunk_keys for k in ks])
        for ex, ks in zip(examples[start:start + _CHUNK], chunk_keys):
          out, failing = _finish(cfg, ex, [samples.get(k) for k in ks])
          reason = cfg.policy.drop_reason(failing)
          tally.add(failing, reason)
          statuses[out.parse_status] = statuses.get(out.parse_status, 0) + 1
          if reason is None:
            kept += 1
            kept_f.write(out.to_json() + "\n")
          else:
            dropped += 1
            failed_examples += reason == filters_lib.FAILED
            meta = {**out.meta, "teacher": {**out.meta["teacher"], "drop_reason": reason}}
            dropped_f.write(dataclasses.replace(out, meta=meta).to_json() + "\n")
    corrupt = cache.corrupt_rows

  ep, s = cfg.endpoint, cfg.sampling
  entry = {
      "source": cfg.source,
      "teacher": {"model": ep.model, "endpoint": provenance.sanitize_url(ep.base_url),
                  "api": ep.api, "chat_style": (cfg.chat_style or cfg.prompt.chat_style)
                  if ep.api == client_lib.CHAT else None},
      "prompt": {"name": cfg.prompt.name, "path": cfg.prompt.path, "sha256": cfg.prompt.sha256,
                 "kind": cfg.prompt.kind, "num_exemplars": len(cfg.prompt.exemplars)},
      "sampling": {**dataclasses.asdict(s),
                   "stop": list(s.stop if s.stop is not None else cfg.prompt.stop)},
      "client": {"concurrency": ep.concurrency, "rpm": ep.rpm, "timeout_s": ep.timeout,
                 "max_retries": ep.max_retries, "backoff_base_s": ep.backoff_base},
      "filters": {"enabled": sorted(cfg.policy.enabled),
                  "max_rationale_chars": cfg.policy.max_rationale_chars,
                  "min_agreement": cfg.policy.min_agreement, **tally.as_dict()},
      "started": started, "finished": provenance.now_iso(),
      "elapsed_s": round(time.monotonic() - t0, 3),
      "requests": {"sent": stats.requests, "retries": stats.retries,
                   "failed_requests": stats.failures, "failed_samples": failed_samples,
                   "by_status": dict(sorted(stats.statuses.items()))},
      "usage": {"prompt_tokens": stats.prompt_tokens,
                "completion_tokens": stats.completion_tokens},
      "cache": {"path": cache_path, "hits": hits, "new": to_send - failed_samples,
                "corrupt_rows_ignored": corrupt},
      "examples": {"total": len(examples), "kept": kept, "dropped": dropped,
                   "failed": failed_examples, "parse_status": dict(sorted(statuses.items()))},
      "outputs": {"records": records_path, "filtered": filtered_path},
  }
  prov_path = provenance.write(cfg.output_dir, cfg.split, entry)
  return RunResult(records_path, filtered_path, prov_path, kept, dropped, failed_examples,
                   tally.as_dict(), entry)

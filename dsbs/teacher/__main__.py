"""Command line of the teacher stage.

  python -m dsbs.teacher generate --dataset=cqa --split=train --output_dir=teacher/cqa \\
      --base_url=http://localhost:8000/v1 --model=meta-llama/Llama-3.1-70B-Instruct
  python -m dsbs.teacher generate --input_file=mine.jsonl --prompt_file=my_prompt.json ...
  python -m dsbs.teacher render --dataset=anli1 --api=chat --input="premise: ... hypothesis: ..."
  python -m dsbs.teacher fake-server --port=8000     # an offline OpenAI-compatible stand-in

Exit status: 0 done; 1 done but some requests failed for good (rerun the same command to retry
only those); 2 bad usage, an endpoint that refuses every request, or an address where nothing
answers; 130 interrupted (rerun to resume: completed responses are cached).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from dsbs.data import benchmarks
from dsbs.teacher import client as client_lib
from dsbs.teacher import fake_server, filters, generate, inputs, prompts

_DEFAULT_KEY_ENV = "OPENAI_API_KEY"


def _add_prompt_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--dataset", help="released benchmark (anli1, esnli, cqa, svamp, arith); also "
                 "picks the built-in prompt tasks/prompts/<dataset>.json")
  p.add_argument("--prompt_file", help="a prompt JSON file overriding the built-in one")
  p.add_argument("--api", choices=("chat", "completions"), default="chat")
  p.add_argument("--chat_style", choices=("turns", "block"), default=None,
                 help="chat rendering: exemplars as user/assistant turns, or one user block")


def _parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(prog="python -m dsbs.teacher", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = ap.add_subparsers(dest="command", required=True)

  g = sub.add_parser("generate", help="generate rationales and labels for a split or a file")
  _add_prompt_flags(g)
  g.add_argument("--split", help="benchmark split (train, validation, test); with --input_file, "
                 "the output name (default: the file's stem)")
  g.add_argument("--data_dir", help="released data root (default: dsbs.data's resolution)")
  g.add_argument("--input_file", help="a JSONL file of {input, label?, id?, choices?, meta?}")
  g.add_argument("--output_dir", required=True)
  g.add_argument("--base_url", required=True, help="API root with version, e.g. "
                 "http://localhost:8000/v1 or https://api.openai.com/v1")
  g.add_argument("--model", required=True)
  g.add_argument("--api_key_env", default=_DEFAULT_KEY_ENV,
                 help="name of the environment variable holding the API key (unset: no key)")
  g.add_argument("--concurrency", type=int, default=8, help="most requests in flight")
  g.add_argument("--rpm", type=float, default=None, help="requests-per-minute limit")
  g.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP attempt")
  g.add_argument("--max_retries", type=int, default=6)
  g.add_argument("--backoff_base", type=float, default=1.0,
                 help="first retry delay (s); doubles each retry, with jitter")
  g.add_argument("--num_samples", type=int, default=1, help="samples per input (vote when > 1)")
  g.add_argument("--sample_mode", choices=("repeat", "n"), default="repeat",
                 help="one request per sample, or one request with the `n` parameter")
  g.add_argument("--temperature", type=float, default=None,
                 help="default 0 with one sample, 0.7 with several")
  g.add_argument("--top_p", type=float, default=None)
  g.add_argument("--seed", type=int, default=None, help="base seed (sample i gets seed + i)")
  g.add_argument("--max_tokens", type=int, default=256)
  g.add_argument("--stop", action="append", default=None,
                 help="stop sequence (repeatable; default: the prompt's)")
  g.add_argument("--extra_body", default=None, help='extra request JSON, e.g. \'{"top_k": 40}\'')
  g.add_argument("--limit", type=int, default=None, help="only the first N inputs")
  g.add_argument("--filter", default="default",
                 help="checks that drop records: comma list of unparsed, empty, too_long, "
                 "low_agreement, disagree; or default (unparsed,empty,too_long), all, none")
  g.add_argument("--max_rationale_chars", type=int, default=2000)
  g.add_argument("--min_agreement", type=float, default=0.0)
  g.add_argument("--cache_path", default=None,
                 help="response cache (SQLite; default <output_dir>/teacher_cache.sqlite)")
  g.add_argument("--keep_samples", action="store_true", help="store every sample's text in meta")
  g.add_argument("--quiet", action="store_true", help="no progress bar")
  g.add_argument("--dry_run", action="store_true",
                 help="print how many samples are cached and how many requests would be sent "
                 "(requests counts first attempts, before retries), then stop")

  r = sub.add_parser("render", help="print the prompt an input would be sent with")
  _add_prompt_flags(r)
  r.add_argument("--input", required=True)

  f = sub.add_parser("fake-server", help="serve canned answers on an OpenAI-compatible API")
  f.add_argument("--host", default="127.0.0.1")
  f.add_argument("--port", type=int, default=8000)
  return ap


class UsageError(Exception):
  pass


def _load_prompt(args: argparse.Namespace):

  if args.prompt_file:
    return prompts.load(args.prompt_file)
  if args.dataset:
    return prompts.load_builtin(args.dataset)
  if getattr(args, "input_file", None) or getattr(args, "input", None):
    print("dsbs.teacher: no --dataset or --prompt_file: using the generic prompt "
          "tasks/prompts/generic.json (write your own exemplars for real runs)", file=sys.stderr)
    return prompts.load_builtin("generic")
  raise UsageError("pass --dataset or --prompt_file")


def _check_prompt_fits_dataset(prompt, dataset: str | None) -> None:
  """A prompt must teach the dataset's answer kind and label set, or nothing would parse."""

  if dataset not in benchmarks.ALL_DATASETS:
    return
  kind, space = benchmarks.kind(dataset), benchmarks.label_space(dataset)
  got = list(prompt.label_space) if prompt.label_space else None
  if prompt.kind != kind or got != space:
    raise UsageError(f"prompt {prompt.path} (kind {prompt.kind}, labels {got}) does not fit "
                     f"dataset {dataset} (kind {kind}, labels {space})")


def _generate(args: argparse.Namespace) -> int:

  if not args.input_file and not (args.dataset and args.split):
    raise UsageError("pass --dataset with --split, or --input_file")
  if args.limit is not None and args.limit < 1:
    raise UsageError("--limit must be >= 1")
  prompt = _load_prompt(args)
  _check_prompt_fits_dataset(prompt, args.dataset)
  if args.input_file:
    examples = inputs.read_user_jsonl(args.input_file, label_space=prompt.label_space,
                                      needs_choices=prompt.kind == "multiple_choice")
    split = args.split or os.path.splitext(os.path.basename(args.input_file))[0]
    source = {"input_file": args.input_file, "sha256": inputs.file_sha256(args.input_file),
              "num_inputs": len(examples)}
  else:
    examples = inputs.load_benchmark(args.dataset, args.split, args.data_dir)
    split = args.split
    source = {"dataset": args.dataset, "split": args.split, "data_dir": args.data_dir,
              "num_inputs": len(examples)}
  if args.limit is not None:
    examples = examples[:args.limit]
    source["limit"] = args.limit
  if not examples:
    raise UsageError("no inputs to process")
  extra = {}
  if args.extra_body:
    try:
      extra = json.loads(args.extra_body)
    except json.JSONDecodeError as e:
      raise UsageError(f"--extra_body is not valid JSON: {e}") from None
    if not isinstance(extra, dict):
      raise UsageError("--extra_body must be a JSON object")
  temperature = args.temperature
  if temperature is None:
    temperature = 0.0 if args.num_samples == 1 else 0.7
  api_key = os.environ.get(args.api_key_env) or None
  endpoint = client_lib.EndpointConfig(
      base_url=args.base_url, model=args.model, api=args.api, api_key=api_key,
      timeout=args.timeout, max_retries=args.max_retries, backoff_base=args.backoff_base,
      rpm=args.rpm, concurrency=args.concurrency)
  sampling = generate.SamplingConfig(
      num_samples=args.num_samples, temperature=temperature, max_tokens=args.max_tokens,
      top_p=args.top_p, seed=args.seed, sample_mode=args.sample_mode,
      stop=tuple(args.stop) if args.stop else None, extra_body=extra)
  policy = filters.FilterPolicy.parse(args.filter, max_rationale_chars=args.max_rationale_chars,
                                      min_agreement=args.min_agreement)
  cfg = generate.RunConfig(
      output_dir=args.output_dir, split=split, endpoint=endpoint, prompt=prompt,
      sampling=sampling, policy=policy, chat_style=args.chat_style, cache_path=args.cache_path,
      keep_samples=args.keep_samples, progress=not args.quiet, source=source)
  if args.num_samples > 1 and temperature == 0:
    print("dsbs.teacher: warning: several samples at temperature 0 are usually identical; the "
          "vote then adds nothing", file=sys.stderr)
  if args.dry_run:
    print(json.dumps(generate.pending(cfg, examples), sort_keys=True))
    return 0
  try:
    result = generate.run(cfg, examples)
  except client_lib.FatalEndpointError as e:
    if e.status is None:  # nothing answered at all
      raise UsageError(f"--base_url={args.base_url}: {e}; start the server or fix the address "
                       "(to try the stage offline: python -m dsbs.teacher fake-server "
                       "--port=8000, then --base_url=http://127.0.0.1:8000/v1)") from None
    hint = ""
    if e.status in (401, 403):
      hint = (f" (check ${args.api_key_env})" if api_key else
              f" (no key: ${args.api_key_env} is unset)")
    raise UsageError(f"the endpoint refused the request: {e}{hint}") from None
  p = result.provenance
  dropped = {k: v for k, v in result.tally["dropped"].items() if v}
  print(f"dsbs.teacher: {split}: kept {result.kept}, dropped {result.dropped} "
        f"{json.dumps(dropped, sort_keys=True)}; requests {p['requests']['sent']} "
        f"(retries {p['requests']['retries']}), cache hits {p['cache']['hits']}, tokens "
        f"{p['usage']['prompt_tokens']}+{p['usage']['completion_tokens']}\n"
        f"  -> {result.records_path}\n  -> {result.filtered_path}\n  -> {result.provenance_path}",
        file=sys.stderr)
  if result.failed:
    print(f"dsbs.teacher: {result.failed} inputs have failed requests; rerun the same command to "
          "retry only those (completed responses are cached)", file=sys.stderr)
    return 1
  return 0


def _render(args: argparse.Namespace) -> int:
  prompt = _load_prompt(args)
  if args.api == "chat":
    print(json.dumps(prompt.render_chat(args.input, args.chat_style), indent=2,
                     ensure_ascii=False))
  else:
    print(prompt.render_completion(args.input))
  return 0


def _fake_server(args: argparse.Namespace) -> int:

  fake_server.serve_forever(args.host, args.port)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  secret = os.environ.get(getattr(args, "api_key_env", _DEFAULT_KEY_ENV) or _DEFAULT_KEY_ENV)
  handlers = {"generate": _generate, "render": _render, "fake-server": _fake_server}
  try:
    return handlers[args.command](args)
  except KeyboardInterrupt:
    print("dsbs.teacher: interrupted; rerun the same command to resume (completed responses "
          "are cached)", file=sys.stderr)
    return 130
  except (UsageError, ValueError, OSError, RuntimeError) as e:
    msg = str(e).replace("\n", " ")
    if secret:
      msg = msg.replace(secret, "<redacted>")
    print(f"dsbs.teacher: error: {msg}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())

r"""The separate inference task: decode a split with a checkpoint, score it, save predictions.

  python -m dsbs.evaluate --checkpoint=<run dir | run dir/checkpoints/<step> | HF dir | T5X dir> \
      --task=<task or mixture> --split=test [--decode=greedy|beam --num_beams=4] \
      [--output_dir=...] [--with_rationale]

Writes `<output_dir>/metrics.json` (per task: the task's metric fns; `accuracy` = mean over the
scored tasks) and `<output_dir>/predictions.jsonl` (task, id, input, target, prediction,
correct[, rationale]). Only tasks with metric fns are decoded (the `predict:` side of a dsbs
mixture; a `cot` task's label is parsed from the generated text by the task's postprocessor).
`--with_rationale` also decodes the paired `explain:` task and stores its text beside each
prediction (paired by example id, else by position). `correct` is the task's own `accuracy` metric
on that one example (SVAMP compares values), else postprocessed prediction == target.

A run dir needs nothing else: its `model_config.json` gives the architecture and its best (else
latest) checkpoint the parameters. HF / T5X dirs go through `dsbs.model.checkpoint_formats`.
"""
from __future__ import annotations

if __name__ == "__main__":  # before JAX and TensorFlow start their threads
  from dsbs import hostmem
  hostmem.tune_malloc()

import argparse
import functools
import json
import logging
import os
import sys
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dsbs import (compilation_cache, decoding, fileio, input_pipeline, summaries,
                  train_checkpoints)
from dsbs.model import checkpoint_formats
from dsbs.model import config as model_config
from dsbs.model.network import Transformer

EOS_ID = 1


def _task_kind(task, split: str) -> int | None:
  """The `task_kind` of a task's first example (None when the task has no such feature)."""
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1)
  for ex in ds.take(1).as_numpy_iterator():
    return int(ex["task_kind"]) if "task_kind" in ex else None
  return None


def _examples(task, split: str, lengths: Mapping[str, int], max_examples: int | None
              ) -> list[dict[str, Any]]:
  ds = task.get_dataset(sequence_length=dict(lengths), split=split, shuffle=False, num_epochs=1)
  if max_examples:
    ds = ds.take(max_examples)
  return list(ds.as_numpy_iterator())


def _batches(examples: list[dict[str, Any]], input_len: int, batch_size: int
             ) -> Iterator[tuple[np.ndarray, int]]:
  for i in range(0, len(examples), batch_size):
    chunk = examples[i:i + batch_size]
    tokens = np.zeros((batch_size, input_len), np.int32)
    for j, ex in enumerate(chunk):
      ids = ex["inputs"][:input_len]
      tokens[j, :len(ids)] = ids
    yield tokens, len(chunk)


def _text(ex: Mapping[str, Any], key: str, vocab) -> str:
  if f"{key}_pretokenized" in ex:
    v = ex[f"{key}_pretokenized"]
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)
  return vocab.decode([int(t) for t in ex[key] if t != EOS_ID])


def _strip_eos(ids: np.ndarray) -> list[int]:
  out = []
  for t in ids.tolist():
    if t == EOS_ID:
      break
    out.append(t)
  return [t for t in out if t > 0]


def make_decoder(model_cfg, params, *, decode: str = "greedy", num_beams: int = 4,
                 max_decode_length: int):
  """tokens[B, L] -> decoded ids[B, max_decode_length] with the KV cache (dsbs.decoding)."""
  run = _compiled_decoder(model_cfg, decode, num_beams, max_decode_length)
  return lambda tokens: np.asarray(jax.device_get(_first(run(params, jnp.asarray(tokens)))))


@functools.lru_cache(maxsize=8)
def _compiled_decoder(model_cfg, decode: str, num_beams: int, max_decode_length: int):
  """One jitted decoder per (config, method, length): evals during training reuse it."""
  model = Transformer(model_cfg)
  if decode == "greedy":
    fn = functools.partial(decoding.greedy_decode, model, max_decode_len=max_decode_length)
  elif decode == "beam":
    fn = functools.partial(decoding.beam_search, model, max_decode_len=max_decode_length,
                           num_beams=num_beams)
  else:
    raise ValueError(f"--decode must be greedy or beam, got {decode!r}")
  return decoding.jit(lambda params, tokens: fn(params, tokens).tokens)


def _first(out):
  """Decoders may return (tokens, scores); keep the tokens (best beam first)."""
  if isinstance(out, tuple):
    out = out[0]
  if out.ndim == 3:  # [batch, beams, length]
    out = out[:, 0]
  return out


def score_tasks(model_cfg, params, mixture_or_task: str, split: str, lengths: Mapping[str, int], *,
                batch_size: int = 64, max_examples: int | None = None, decode: str = "greedy",
                num_beams: int = 4, with_rationale: bool = False, mesh=None, rules=None,
                param_shardings=None, predictions: list[dict[str, Any]] | None = None
                ) -> dict[str, float]:
  """Decodes and scores every task of `mixture_or_task` that has metric fns.

  Returns flat scalars `<task>/<metric>` plus `accuracy` (mean of the tasks' `accuracy`).
  Appends per-example rows to `predictions` when given.
  """
  del param_shardings
  decoder = make_decoder(model_cfg, params, decode=decode, num_beams=num_beams,
                         max_decode_length=lengths["targets"])
  tasks = input_pipeline.subtasks(mixture_or_task)
  scored = [t for t in tasks if t.predict_metric_fns]
  if not scored:
    raise ValueError(f"{mixture_or_task}: no task has metric fns; nothing to score")
  rationale_tasks = [t for t in tasks if not t.predict_metric_fns and _task_kind(t, split) == 1]
  out: dict[str, float] = {}
  accs = []
  for task in scored:
    vocab = task.output_features["targets"].vocabulary
    exs = _examples(task, split, lengths, max_examples)
    decoded = _decode_all(decoder, exs, lengths["inputs"], batch_size)
    preds = [task.postprocess_fn(vocab.decode(ids), example=ex, is_target=False)
             for ids, ex in zip(decoded, exs)]
    targets = [task.postprocess_fn(_text(ex, "targets", vocab), example=ex, is_target=True)
               for ex in exs]
    for fn in task.predict_metric_fns:
      for k, v in fn(targets, preds).items():
        out[f"{task.name}/{k}"] = float(v)
    if f"{task.name}/accuracy" in out:
      accs.append(out[f"{task.name}/accuracy"])
    out[f"{task.name}/num_examples"] = float(len(exs))
    if predictions is not None:
      rationales = {}
      if with_rationale and rationale_tasks:
        rationales = _decode_rationales(decoder, rationale_tasks[0], split, lengths, max_examples,
                                        batch_size)
      for i, (ex, ids, p, t) in enumerate(zip(exs, decoded, preds, targets)):
        row = {"task": task.name, "id": _id(ex, i), "input": _text(ex, "inputs", vocab),
               "target": summaries.jsonable(t), "prediction": summaries.jsonable(p),
               "prediction_text": vocab.decode(ids), "correct": _correct(task, t, p)}
        if with_rationale:
          row["rationale"] = rationales.get(row["id"], rationales.get(i))
        predictions.append(row)
  if accs:
    out["accuracy"] = float(np.mean(accs))
  return out


def _correct(task, target: Any, prediction: Any) -> bool:
  """Per-example correctness by the task's own accuracy metric (e.g. SVAMP compares values)."""
  for fn in task.predict_metric_fns:
    out = fn([target], [prediction])
    if "accuracy" in out:
      return float(out["accuracy"]) > 0
  return bool(prediction == target)


def _decode_all(decoder, exs, input_len: int, batch_size: int) -> list[list[int]]:
  decoded = []
  for tokens, n in _batches(exs, input_len, batch_size):
    decoded += [_strip_eos(row) for row in decoder(tokens)[:n]]
  return decoded


def _decode_rationales(decoder, task, split, lengths, max_examples, batch_size) -> dict[Any, str]:
  vocab = task.output_features["targets"].vocabulary
  exs = _examples(task, split, lengths, max_examples)
  decoded = _decode_all(decoder, exs, lengths["inputs"], batch_size)
  out = {}
  for i, (ex, ids) in enumerate(zip(exs, decoded)):
    out[_id(ex, i)] = vocab.decode(ids)
  return out


def _id(ex: Mapping[str, Any], i: int) -> Any:
  v = ex.get("id", i)
  return v.decode("utf-8") if isinstance(v, bytes) else (v.item() if hasattr(v, "item") else v)


def load_model(path: str, model: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
  """(T5Config, params, info) from a run dir, step dir, or an HF / T5X checkpoint dir."""
  path = path.rstrip("/")
  run_dir = _find_run_dir(path)
  if run_dir is not None:
    cfg_dict = summaries.read_json(os.path.join(run_dir, "model_config.json"))
    model_cfg = model_config.from_dict(cfg_dict)
    params_dir, step = train_checkpoints.find_params_dir(path)
    params = train_checkpoints.restore_params(params_dir)
    info = {"kind": "dsbs", "run_dir": run_dir, "params_dir": params_dir, "step": step}
    exp_file = os.path.join(run_dir, "experiment.json")
    if fileio.exists(exp_file):
      info["experiment"] = summaries.read_json(exp_file)
    return model_cfg, params, info
  config = model
  if model and model.endswith(".json"):  # a run's model_config.json
    config = model_config.from_dict(summaries.read_json(model))
  model_cfg, params = checkpoint_formats.load_hf_or_t5x(path, config)
  return model_cfg, params, {"kind": "external", "path": path}


def _find_run_dir(path: str) -> str | None:
  """The run dir holding `model_config.json` at `path` or up to two levels above it."""
  cand = path
  for _ in range(3):
    if fileio.exists(os.path.join(cand, "model_config.json")):
      return cand
    cand = os.path.dirname(cand)
  return None


def run(checkpoint: str, task: str | None = None, split: str = "test", *,
        decode: str = "greedy", num_beams: int = 4, output_dir: str | None = None,
        with_rationale: bool = False, batch_size: int = 64, max_examples: int | None = None,
        feature_lengths: Mapping[str, int] | None = None, dtype: str | None = None,
        model: str | None = None) -> dict[str, Any]:
  """Evaluates `checkpoint` on `task`/`split`; writes metrics.json and predictions.jsonl."""
  # Registers the SeqIO tasks. SeqIO (~6 s to import) only here: dsbs.train imports this module
  # and the benchmark imports dsbs.train, without SeqIO.
  import dsbs.tasks  # pylint: disable=g-import-not-at-top,unused-import
  model_cfg, params, info = load_model(checkpoint, model)
  exp = info.get("experiment", {})
  if exp.get("module"):  # registers the experiment's user datasets
    __import__(exp["module"])
  task = task or exp.get("mixture_or_task_name")
  lengths = dict(feature_lengths or exp.get("task_feature_lengths") or {})
  if not task or set(lengths) != {"inputs", "targets"}:
    raise ValueError("pass --task and --feature_lengths for a checkpoint without experiment.json")
  if dtype:
    model_cfg = model_cfg.replace(dtype=dtype)
  if jax.default_backend() == "cpu" and model_cfg.dtype == "bfloat16" and dtype is None:
    model_cfg = model_cfg.replace(dtype="float32")
  predictions: list[dict[str, Any]] = []
  metrics = score_tasks(model_cfg, params, task, split, lengths, batch_size=batch_size,
                        max_examples=max_examples, decode=decode, num_beams=num_beams,
                        with_rationale=with_rationale, predictions=predictions)
  result = {"task": task, "split": split, "decode": decode,
            "num_beams": num_beams if decode == "beam" else None, "checkpoint": checkpoint,
            "step": info.get("step"), "metrics": metrics}
  output_dir = output_dir or os.path.join(info.get("run_dir") or ".", f"eval_{split}")
  fileio.makedirs(output_dir)
  with fileio.atomic_write_text(os.path.join(output_dir, "metrics.json")) as f:
    json.dump(result, f, indent=2)
  with fileio.atomic_write_text(os.path.join(output_dir, "predictions.jsonl")) as f:
    for row in predictions:
      f.write(json.dumps(row) + "\n")
  logging.info("wrote %s (%d predictions)", output_dir, len(predictions))
  return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(prog="python -m dsbs.evaluate", description=__doc__.split("\n")[0])
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--task", default=None, help="default: the run's training mixture")
  parser.add_argument("--split", default="test")
  parser.add_argument("--decode", choices=("greedy", "beam"), default="greedy")
  parser.add_argument("--num_beams", type=int, default=4)
  parser.add_argument("--output_dir", default=None)
  parser.add_argument("--with_rationale", action="store_true")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--max_examples", type=int, default=None)
  parser.add_argument("--feature_lengths", default=None, help='JSON, e.g. {"inputs": 512, "targets": 256}')
  parser.add_argument("--dtype", default=None, help="compute dtype override (float32, bfloat16)")
  parser.add_argument("--model", default=None,
                      help="for T5X checkpoints (they carry no config): a dsbs.model config name "
                      "or a model_config.json")
  compilation_cache.add_flag(parser)
  args = parser.parse_args(argv)
  compilation_cache.enable(args.compilation_cache_dir)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  return run(args.checkpoint, args.task, args.split, decode=args.decode, num_beams=args.num_beams,
             output_dir=args.output_dir, with_rationale=args.with_rationale,
             batch_size=args.batch_size, max_examples=args.max_examples,
             feature_lengths=json.loads(args.feature_lengths) if args.feature_lengths else None,
             dtype=args.dtype, model=args.model)


if __name__ == "__main__":
  print(json.dumps(main()["metrics"], indent=2), file=sys.stdout)

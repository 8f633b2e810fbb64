r"""The built-in runner: distilling step-by-step on plain JAX, no T5X needed.

  python -m dsbs.train --gin_file=gin_configs/default.gin --model_dir=/tmp/dsbs_run \
      [--gin.TRAIN_STEPS=2000] [--then_evaluate]

Multi-host: run the same command on every host (what `launch/` runs on `--worker=all`). On a
Cloud TPU VM slice the processes join by themselves; elsewhere add `--multihost` (JAX detects
the cluster) or, e.g. for two processes on one machine, `--coordinator_address=127.0.0.1:PORT
--num_processes=2 --process_id=0` (and `=1` in the other). Each process reads its own input
shards, metrics and files are written once (process 0), and every process logs its host count,
local devices and the mesh at start (see dsbs/multihost.py).

Reads the same experiment files as T5X with gin (the experiment definition: dsbs/experiment.py
and gin_configs/experiment.gin; `--gin.KEY=VALUE` overrides a macro or a binding, e.g.
`--gin.METHOD="'finetune'"`), trains the student on a device mesh (axes `data`, `model`),
evaluates on the validation split, keeps Orbax checkpoints and writes the run dir (see
dsbs/summaries.py). Runner knobs that do not change what trains are `TrainConfig` fields, bound
in gin (`TrainConfig.log_period = 50`).

The loss is sum(token_loss * decoder_loss_weights) / normaliser, where the weights come from
`DsbsEncDecFeatureConverter`: LOSS_MODE='paper' divides by the number of examples and gives
a*L_label + (1-a)*L_rationale with per-example mean token losses; LOSS_MODE='tokens' divides by
the number of target tokens and leaves the balance to the mixture rate.
"""
from __future__ import annotations

if __name__ == "__main__":
  # `python -m dsbs.train` runs this file as `__main__`; run it under its own name instead, so
  # that its gin configurables register once, as dsbs.train.*.
  import sys
  from dsbs import console, hostmem
  console.start()  # before TensorFlow and JAX are imported
  hostmem.tune_malloc()  # before JAX and TensorFlow start their threads
  from dsbs import train as _train
  sys.exit(_train.cli())

import argparse
import dataclasses
import functools
import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from dsbs import (compilation_cache, console, evaluate, experiment, hostmem, input_pipeline,
                  losses, multihost, optim, preflight, summaries, train_checkpoints, train_state)
from dsbs import model as model_lib
from dsbs.model import checkpoint_formats, partitioning
from dsbs.train_state import TrainState


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf; the last good checkpoint is kept."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The runner's own knobs (the experiment's macros say what to train)."""
  mesh_data: int = -1  # devices on the `data` axis; -1 = the rest
  mesh_model: int = 1  # devices on the `model` axis (tensor parallelism)
  mesh_devices: int | None = None  # use only the first N devices (debugging, equivalence tests)
  fsdp: bool = False  # also shard parameters and optimizer state over `data`
  dtype: str = "auto"  # compute dtype: auto = bfloat16 on TPU/GPU, float32 on CPU
  model_overrides: tuple[tuple[str, Any], ...] = ()  # T5Config fields for from-scratch students
  optimizer: optim.OptimizerConfig = dataclasses.field(default_factory=optim.OptimizerConfig)
  z_loss: float = 1e-4  # T5X's default
  label_smoothing: float = 0.0
  log_period: int = 10
  eval_max_examples: int | None = None  # cap on decoded validation examples (None: all)
  eval_batch_size: int = 64
  keep_checkpoints: int = 3
  best_metric: str = "accuracy"  # eval scalar ranking checkpoints; "" keeps only the latest
  async_checkpoints: bool = True
  tensorboard: bool = True
  progress: bool = True
  # The train split is read as this many disjoint shards, each by the process whose devices hold
  # its rows of the batch (dsbs/input_pipeline.py); None = one per process. The data order
  # depends on it, not on the number of hosts.
  input_shards: int | None = None


def compute_dtype(name: str) -> str:
  if name != "auto":
    return name
  return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def token_losses(logits: jax.Array, targets: jax.Array, z_loss: float,
                 label_smoothing: float) -> tuple[jax.Array, jax.Array]:
  """Per-token (cross-entropy + z-loss, cross-entropy) in float32, as T5X's loss."""
  logits = logits.astype(jnp.float32)
  vocab = logits.shape[-1]
  lse = jax.nn.logsumexp(logits, axis=-1)
  log_probs = logits - lse[..., None]
  on = 1.0 - label_smoothing
  off = label_smoothing / (vocab - 1)
  soft = jax.nn.one_hot(targets, vocab) * (on - off) + off
  ce = -jnp.sum(soft * log_probs, axis=-1)
  if label_smoothing:  # subtract the entropy of the smoothed target so a perfect model scores 0
    ce += on * jnp.log(on) + (vocab - 1) * off * jnp.log(off + 1e-20)
  return ce + z_loss * jnp.square(lse), ce


def batch_loss(logits: jax.Array, batch: dict[str, jax.Array], cfg: TrainConfig,
               loss_mode: str) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The converter-weighted loss and per-task token-mean cross-entropies for logging."""
  tok, ce = token_losses(logits, batch["decoder_target_tokens"], cfg.z_loss, cfg.label_smoothing)
  weights = batch["decoder_loss_weights"]
  loss = jnp.sum(tok * weights) / jnp.maximum(losses.loss_normalizer(batch, loss_mode), 1e-9)
  aux = {}
  real = (batch["decoder_target_tokens"] > 0).astype(jnp.float32)
  for name, kind in (("loss_label", losses.LABEL), ("loss_rationale", losses.RATIONALE),
                     ("loss_single", losses.SINGLE)):
    m = real * (batch["decoder_task_kind"] == kind + 1) if "decoder_task_kind" in batch else real
    aux[name] = jnp.sum(ce * m) / jnp.maximum(jnp.sum(m), 1.0)
    aux[name + "_tokens"] = jnp.sum(m)
  return loss, aux


def apply_model(model: nn.Module, rules: Any, params: Any, batch: dict[str, jax.Array],
                rng: jax.Array | None) -> jax.Array:
  """Teacher-forced logits of `batch`; dropout on when `rng` is given."""
  with nn.logical_axis_rules(rules):
    return model.apply({"params": params}, batch["encoder_input_tokens"],
                       batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                       batch.get("encoder_segment_ids"), batch.get("decoder_segment_ids"),
                       batch.get("encoder_positions"), batch.get("decoder_positions"),
                       enable_dropout=rng is not None,
                       rngs={"dropout": rng} if rng is not None else {})


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, schedule: optim.Schedule,
                    cfg: TrainConfig, loss_mode: str, rules: Any = (), *, start_step: int = 0,
                    out_shardings: Any = None) -> Any:
  """The jitted update `(state, batch, rng) -> (state, metrics)`, shared by train() and bench.

  The state argument is donated. `out_shardings` = (state shardings, metrics sharding) pins the
  layout on a mesh; None lets XLA choose (one device).
  """
  jit_kwargs = {} if out_shardings is None else {"out_shardings": out_shardings}

  @functools.partial(jax.jit, donate_argnums=0, **jit_kwargs)
  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
      return batch_loss(apply_model(model, rules, params, batch, rng), batch, cfg, loss_mode)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    tokens = (jnp.sum(batch["decoder_target_tokens"] > 0)
              + jnp.sum(batch["encoder_input_tokens"] > 0))
    metrics = dict(aux, loss=loss, lr=schedule(state.step - start_step),
                   grad_norm=optax.tree.norm(grads), num_tokens=tokens.astype(jnp.float32))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def main(argv: Sequence[str] | None = None, *,
         wrap_input: Callable[[Iterator[input_pipeline.Batch]], Iterator[input_pipeline.Batch]]
         | None = None) -> dict[str, Any]:
  """The program; `wrap_input` as in `train` (tests)."""
  args, bindings = parse_flags(argv)
  compilation_cache.enable(args.compilation_cache_dir)
  multihost.initialize(args)  # before anything touches a device
  loaded = experiment.load(args.gin_file, bindings)
  model_dir = args.model_dir or _macro("MODEL_DIR")
  if not model_dir:
    raise experiment.ExperimentError("no run dir: pass --model_dir or set MODEL_DIR in the "
                                     "experiment")
  eval_split = args.eval_split if args.then_evaluate else None
  cfg = TrainConfig()
  result = train(loaded, model_dir, cfg, eval_split=eval_split, wrap_input=wrap_input,
                 heartbeat_timeout_seconds=args.heartbeat_timeout_seconds)
  if eval_split:
    result[eval_split] = evaluate.run(checkpoint=model_dir,
                                      task=loaded.experiment.mixture_or_task_name,
                                      split=eval_split, mesh=_mesh(cfg), fsdp=cfg.fsdp)
  return result


def _mesh(cfg: TrainConfig) -> jax.sharding.Mesh:
  devices = jax.devices()[:cfg.mesh_devices] if cfg.mesh_devices else None
  return partitioning.make_mesh(data=cfg.mesh_data, model=cfg.mesh_model, devices=devices)


def _macro(name: str) -> Any:
  try:
    return gin.query_parameter(f"%{name}")
  except ValueError:
    return None


_GIN_HELP = """\
--gin.KEY=VALUE sets an experiment macro or a binding, after the files (later wins):
  --gin.TRAIN_STEPS=2000                    a number
  --gin.METHOD="'finetune'"                 a string: gin values are Python literals, so the
                                            string's own quotes go inside the shell's
  --gin.TASK_FEATURE_LENGTHS="{'inputs': 320, 'targets': 320}"
  --gin.TrainConfig.log_period=50           a binding of a configurable
A macro or binding that nothing reads is an error naming the closest known name. The macros
(DATASET, METHOD, FRACTION, LABEL_RATE, VOCAB, LOSS_ALPHA, LOSS_MODE, PACK, STUDENT,
TASK_FEATURE_LENGTHS, TRAIN_STEPS, BATCH_SIZE, RANDOM_SEED, ...) are listed in dsbs/experiment.py.

Multi-host: every host runs the same command. launch/ (python -m launch.tpu run) runs
  python3 -m dsbs.train --gin_file=... --model_dir=gs://... [--gin.KEY=VALUE ...]
on --worker=all; on a Cloud TPU VM slice the processes join by themselves (--multihost does the
same wherever JAX detects the cluster). Two processes on one machine, 4 CPU devices each:
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m dsbs.train ... \\
      --coordinator_address=127.0.0.1:12355 --num_processes=2 --process_id=0   # and =1
Each process reads its own input shards; metrics, predictions and run files are written once.
If a host stops, the others exit within --heartbeat_timeout_seconds; rerun the same command on
every host to resume from the last checkpoint.

Exit status: 0 done (also when --model_dir already holds the finished run); 2 a bad experiment,
checked before anything is written; 3 a NaN/Inf loss (the last good checkpoint is kept); 1 an
unexpected error, which on several processes ends that process at once (the others follow).
"""


def parse_flags(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
  """T5X-style flags: --gin_file (repeatable), --gin.KEY=VALUE and --gin_bindings."""
  parser = argparse.ArgumentParser(
      prog="python -m dsbs.train", description=__doc__.split("\n")[0], epilog=_GIN_HELP,
      usage="%(prog)s [--gin_file=FILE ...] [--gin.KEY=VALUE ...] --model_dir=DIR [options]",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[],
                      help="an experiment file, repeatable (default: gin_configs/default.gin)")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="a gin binding, repeatable (the same as --gin.KEY=VALUE)")
  parser.add_argument("--model_dir", default=None,
                      help="the run dir; rerun the same command to resume (default: MODEL_DIR)")
  parser.add_argument("--dataset", default=None,
                      help="run the same experiment on another registered dataset (the same as "
                      "--gin.DATASET=\"'NAME'\")")
  parser.add_argument("--then_evaluate", action="store_true",
                      help="evaluate the best checkpoint on --eval_split after training")
  parser.add_argument("--eval_split", default="test")
  parser.add_argument(console.VERBOSE_FLAG, action="store_true", help=console.VERBOSE_HELP)
  multihost.add_flags(parser)
  compilation_cache.add_flag(parser)
  args, rest = parser.parse_known_args(argv)
  multihost.check_flags(parser, args)
  bindings = list(args.gin_bindings)
  for r in rest:
    if not r.startswith("--gin.") or "=" not in r:
      parser.error(f"unrecognised argument {r!r}")
    bindings.append(r[len("--gin."):])
  if not args.gin_file:
    args.gin_file = [os.path.join(experiment.REPO_GIN_DIR, "default.gin")]
  if args.dataset:
    bindings.append(f"DATASET = {args.dataset!r}")
  return args, bindings


def train(loaded: experiment.Loaded, model_dir: str, cfg: TrainConfig,
          eval_split: str | None = None, *,
          wrap_input: Callable[[Iterator[input_pipeline.Batch]], Iterator[input_pipeline.Batch]]
          | None = None, heartbeat_timeout_seconds: int | None = None) -> dict[str, Any]:
  """Trains the experiment into `model_dir` (resuming from its latest checkpoint).

  Everything that can be checked before the first step is checked before anything is written
  (`dsbs.preflight`, which also reads `eval_split`, the split evaluated afterwards).
  `wrap_input` wraps this process's iterator of local batches, one batch out per batch in
  (tests poison a batch or stop at a position with it). Returns the final metrics.
  """
  import seqio  # pylint: disable=g-import-not-at-top  (~6 s; the benchmark imports this module)
  exp = loaded.experiment
  is_main = jax.process_index() == 0
  task_name = exp.mixture_or_task_name
  env = experiment.environment()
  if is_main:
    logging.info("experiment %s -> %s", exp.to_json_dict(), task_name)
    logging.info("environment %s", {k: v for k, v in env.items() if v is not None})
    if loaded.skipped:
      logging.info("not read by dsbs.train (T5X only; listed in experiment.json): %s",
                   "; ".join(loaded.skipped))

  # ---- Mesh and sharding rules ----------------------------------------------------------
  mesh = _mesh(cfg)
  multihost.log_start(mesh, heartbeat_timeout_seconds)
  rules = partitioning.logical_axis_rules(fsdp=cfg.fsdp)
  batch_sharding = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())

  # ---- Checks before anything is written ------------------------------------------------
  plan = preflight.check(exp, data_parallel=mesh.shape["data"],
                         eval_batch_size=cfg.eval_batch_size, eval_split=eval_split)
  if is_main:
    for line in plan.notes:
      logging.info("%s", line)

  # ---- Input ----------------------------------------------------------------------------
  provider = seqio.get_mixture_or_task(task_name)
  vocab = next(iter(provider.output_features.values())).vocabulary
  converter = input_pipeline.loss_weighting_converter(exp.pack, exp.alpha, exp.loss_mode)
  in_cfg = input_pipeline.InputConfig(task_name, exp.task_feature_lengths, exp.batch_size,
                                      converter, seed=exp.seed)
  input_shards = cfg.input_shards or jax.process_count()
  try:
    train_input = input_pipeline.TrainInput(
        in_cfg, input_shards, multihost.local_rows(batch_sharding, exp.batch_size))
  except input_pipeline.InputShardError as e:
    raise experiment.ExperimentError(f"TrainConfig.input_shards = {cfg.input_shards}: {e}"
                                     ) from None

  # ---- Model ----------------------------------------------------------------------------
  overrides = dict(cfg.model_overrides)
  model_cfg = model_lib.get_config(exp.student, dropout_rate=exp.dropout_rate,
                                   dtype=compute_dtype(cfg.dtype), **overrides)
  if model_cfg.vocab_size < vocab.vocab_size:
    if exp.initial_checkpoint_path:
      raise experiment.ExperimentError(
          f"STUDENT = {exp.student!r} has vocab_size {model_cfg.vocab_size}, fewer ids than "
          f"VOCAB = {exp.vocab!r} ({vocab.vocab_size}); a pretrained student "
          "(INITIAL_CHECKPOINT_PATH) cannot grow its vocabulary: pick its own VOCAB")
    padded = -(-vocab.vocab_size // 128) * 128  # from scratch: grow to fit, MXU-friendly
    logging.info("vocab_size %d -> %d to fit the task's vocabulary", model_cfg.vocab_size, padded)
    model_cfg = model_cfg.replace(vocab_size=padded)
  model = model_lib.Transformer(model_cfg)
  start_step = preflight.initial_step(exp.initial_checkpoint_path)
  num_steps = exp.train_steps - start_step
  tx, schedule = optim.make_optimizer(cfg.optimizer, num_steps, exp.learning_rate)

  # ---- Shape-first init: abstract state -> shardings -> jit(init, out_shardings) ---------
  lengths = exp.task_feature_lengths
  layout = train_state.build(model_cfg, tx, mesh, rules, input_len=lengths["inputs"],
                             target_len=lengths["targets"], start_step=start_step)
  param_shardings, abstract_params = layout.param_shardings, layout.abstract_params
  opt_shardings, abstract_opt = layout.opt_shardings, layout.abstract_opt_state
  state_shardings, init_state = layout.shardings, layout.init

  # ---- Update step ----------------------------------------------------------------------
  train_step = make_train_step(model, tx, schedule, cfg, exp.loss_mode, rules,
                               start_step=start_step, out_shardings=(state_shardings, replicated))

  @jax.jit
  def eval_step(params, batch):
    loss, aux = batch_loss(apply_model(model, rules, params, batch, None), batch, cfg,
                           exp.loss_mode)
    normalizer = losses.loss_normalizer(batch, exp.loss_mode)
    return loss * normalizer, normalizer, aux

  # ---- Checkpoint: resume or initialise -------------------------------------------------
  best_metric = (cfg.best_metric or None) if plan.validation else None
  new_dir = "://" not in model_dir and not os.path.exists(model_dir)
  ckpt = train_checkpoints.Checkpointer(train_checkpoints.checkpoint_dir(model_dir),
                                        keep=cfg.keep_checkpoints, best_metric=best_metric,
                                        async_save=cfg.async_checkpoints)
  data_key = {"seed": exp.seed, "batch_size": exp.batch_size, "pack": exp.pack,
              "task": task_name, "lengths": dict(lengths), "input_shards": input_shards}
  rng = jax.random.key(exp.seed)
  init_rng, dropout_rng = jax.random.split(rng)
  latest = ckpt.latest_step()
  if latest is not None:
    abstract_ps = train_checkpoints.abstract_like_shardings(abstract_params, param_shardings)
    abstract_os = train_checkpoints.abstract_like_shardings(abstract_opt, opt_shardings)
    meta = ckpt.read_meta(latest)
    if meta.get("data") != data_key:
      ckpt.close()
      raise experiment.ExperimentError(
          f"--model_dir={model_dir}: checkpoint {latest} was written with input "
          f"{meta.get('data')}, this run reads {data_key}; the data position would not match "
          "(rerun with the run's own settings, or pick a new --model_dir)")
    params, opt_state, meta = ckpt.restore(latest, abstract_ps, abstract_os, train_input)
    state = TrainState(step=multihost.global_array(np.int32(latest), replicated),
                       params=params, opt_state=opt_state)
    batches_consumed = int(meta["batches_consumed"])
    logging.info("resumed from %s step %d (%d batches consumed; input position restored)",
                 model_dir, latest, batches_consumed)
  else:
    with jax.set_mesh(mesh):
      multihost.compile_together(init_state, init_rng, name="init")
      state = init_state(init_rng)
    if exp.initial_checkpoint_path:
      try:
        state = state.replace(params=_load_initial(exp, model_cfg, param_shardings,
                                                   abstract_params))
      except experiment.ExperimentError:
        ckpt.close()
        if new_dir:  # nothing but the empty checkpoints/ dir Orbax made: leave nothing behind
          shutil.rmtree(model_dir, ignore_errors=True)
        raise
    batches_consumed = 0

  # ---- Run dir ---------------------------------------------------------------------------
  step = int(jax.device_get(state.step))
  if step >= exp.train_steps:  # a rerun of a finished run: nothing to train, nothing rewritten
    ckpt.close()
    logging.info("%s holds the finished run: its checkpoints reach step %d (TRAIN_STEPS = %d); "
                 "nothing to train", model_dir, step, exp.train_steps)
    return {"step": step, "complete": True, "model_dir": model_dir,
            "eval": summaries.last_row(model_dir, "eval") if plan.validation else "none"}
  if is_main:
    io_dir = model_dir
    summaries.write_json(io_dir, "experiment.json", {
        **exp.to_json_dict(), "mixture_or_task_name": task_name, "model_dir": model_dir,
        "gin_files": list(loaded.files), "gin_bindings": list(loaded.bindings),
        "not_read": list(loaded.skipped)})
    summaries.write_json(io_dir, "model_config.json", dataclasses.asdict(model_cfg))
    summaries.write_json(io_dir, "provenance.json",
                         _provenance(provider, loaded, mesh, cfg, input_shards, env))
  log = summaries.RunLog(model_dir, start_step=step, total_steps=exp.train_steps, enabled=is_main,
                         tensorboard=cfg.tensorboard, progress=cfg.progress)
  eval_period = exp.eval_period if plan.validation else 0
  save_period = exp.saving_period

  def run_eval(params) -> dict[str, float]:
    scalars = evaluate_losses(params)
    scores = evaluate.score_tasks(
        model_cfg, params, task_name, "validation", lengths,
        batch_size=cfg.eval_batch_size, max_examples=cfg.eval_max_examples, mesh=mesh)
    scalars.update(scores)
    return scalars

  eval_rows = multihost.local_rows(batch_sharding, cfg.eval_batch_size)
  compiled: set[str] = set()  # programs compiled together by every process (multihost)

  def evaluate_losses(params) -> dict[str, float]:
    out = {}
    for task in input_pipeline.subtasks(provider):
      sums = np.zeros(2)
      eval_cfg = dataclasses.replace(in_cfg, mixture_or_task_name=task.name, split="validation",
                                     global_batch_size=cfg.eval_batch_size)
      for b in input_pipeline.eval_batches(eval_cfg, eval_rows):
        b = input_pipeline.to_global(b, batch_shardings)
        if "eval_step" not in compiled:
          multihost.compile_together(eval_step, params, b, name="eval_step")
          compiled.add("eval_step")
        loss_sum, norm, _ = eval_step(params, b)
        sums += np.asarray(jax.device_get((loss_sum, norm)))
      out[f"loss/{task.name}"] = float(sums[0] / max(sums[1], 1e-9))
    return out

  def save(step: int, metrics: dict[str, float] | None = None) -> None:
    meta = {"batches_consumed": batches_consumed, "data": data_key}
    ckpt.save(step, state.params, state.opt_state, meta, metrics, input_position=train_input)

  # ---- Loop ------------------------------------------------------------------------------
  batches = train_input if wrap_input is None else wrap_input(train_input)
  batch_shardings = None
  finite = multihost.global_array(True, replicated)
  zero = multihost.global_array(np.float32(0), replicated)
  tokens, input_wait = zero, 0.0  # tokens: on device, summed over the global batch
  last_good = step
  final_eval: dict[str, float] = {}
  logging.info("training %s (%s) steps %d -> %d on mesh %s", task_name, exp.student, step,
               exp.train_steps, dict(mesh.shape))
  try:
    while step < exp.train_steps:
      t0 = time.perf_counter()
      local = next(batches)
      input_wait += time.perf_counter() - t0
      batches_consumed += 1
      if batch_shardings is None:
        batch_shardings = {k: batch_sharding for k in local}
      batch = input_pipeline.to_global(local, batch_shardings)
      if "train_step" not in compiled:
        multihost.compile_together(train_step, state, batch, dropout_rng, name="train_step")
        compiled.add("train_step")
      state, metrics = train_step(state, batch, dropout_rng)
      step += 1
      finite = jnp.logical_and(finite, jnp.isfinite(metrics["loss"]))
      tokens = tokens + metrics["num_tokens"]
      is_eval = eval_period > 0 and (step % eval_period == 0 or step == exp.train_steps)
      is_save = step % save_period == 0 or is_eval or step == exp.train_steps
      if step % cfg.log_period == 0 or is_save:
        if not bool(jax.device_get(finite)):  # checked before any save: checkpoints stay good
          raise NonFiniteLossError(
              f"loss is NaN/Inf between step {last_good} and step {step}; stopping. The last "
              f"good checkpoint is step {ckpt.latest_step()} in {model_dir}.")
        last_good = step
        m = jax.device_get(metrics)
        row = {k: float(v) for k, v in m.items() if not k.endswith("_tokens")}
        for k in ("loss_label", "loss_rationale", "loss_single"):
          if float(m[k + "_tokens"]) == 0:
            row.pop(k)
        row.update(log.rates(step, float(jax.device_get(tokens))))
        row["input_wait_s"] = input_wait  # host time blocked on the input pipeline since last row
        tokens, input_wait = zero, 0.0
        log.write(step, "train", row)
      if is_eval:
        final_eval = run_eval(state.params)
        log.write(step, "eval", final_eval)
        logging.info("eval at step %d: %s", step, final_eval)
      if is_save:
        save(step, final_eval if is_eval else None)
      log.advance(step)
  finally:
    ckpt.close()
    if is_main:
      summaries.write_text(model_dir, "operative_config.gin", gin.operative_config_str())
    log.close()
  result = {"step": step, "complete": True, "model_dir": model_dir,
            "eval": final_eval if plan.validation else "none"}
  if is_main:
    summaries.write_json(model_dir, "train_result.json", result)
  return result


def _load_initial(exp: experiment.Experiment, model_cfg: Any, shardings: Any,
                  abstract: Any) -> Any:
  """Pretrained weights from a T5X or HuggingFace checkpoint, placed on `shardings`."""
  path = exp.initial_checkpoint_path
  where = (f"INITIAL_CHECKPOINT_PATH = {path!r} does not load as STUDENT = {exp.student!r} "
           "(pick the STUDENT the checkpoint was trained as)")
  try:
    _, params = checkpoint_formats.load_hf_or_t5x(path, model_cfg)
  except (ValueError, OSError) as e:  # the readers name what does not match
    raise experiment.ExperimentError(f"{where}: {e}") from None
  shapes = jax.tree.map(lambda a: a.shape, abstract)
  got = jax.tree.map(lambda a: np.shape(a), params)
  if shapes != got:
    raise experiment.ExperimentError(f"{where}: the parameter shapes differ")
  return jax.tree.map(lambda x, s: multihost.global_array(np.asarray(x, np.float32), s), params,
                      shardings)


def _provenance(provider, loaded: experiment.Loaded, mesh, cfg: TrainConfig, input_shards: int,
                env: dict[str, Any]) -> dict[str, Any]:
  tasks = {}
  for t in input_pipeline.subtasks(provider):
    sizes = {}
    for split in ("train", "validation", "test"):
      try:
        sizes[split] = t.num_input_examples(split)
      except Exception:  # pylint: disable=broad-except  (sources without a count)
        sizes[split] = None
    tasks[t.name] = {"num_input_examples": sizes,
                     "source": type(t.source).__name__}
  return {"mixture_or_task": loaded.experiment.mixture_or_task_name, "tasks": tasks,
          "environment": env, "gin_files": list(loaded.files),
          "gin_bindings": list(loaded.bindings),
          "mesh": dict(mesh.shape), "fsdp": cfg.fsdp, "devices": jax.device_count(),
          "processes": jax.process_count(), "input_shards": input_shards,
          "versions": summaries.versions(),
          "host_malloc": hostmem.state(),
          "argv": sys.argv, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def cli(argv: Sequence[str] | None = None) -> int:
  """`python -m dsbs.train`: exit code 0, 2 for a bad experiment, 3 for a NaN/Inf loss."""
  verbose = console.is_verbose(argv)
  try:
    with multihost.fail_fast(experiment.ExperimentError, NonFiniteLossError):
      out = main(argv)
  except experiment.ExperimentError as e:
    return console.fail(e, verbose)
  except NonFiniteLossError as e:
    console.fail(e, verbose)
    return 3
  print(json.dumps(out, indent=2, default=str))
  return 0

"""Optimizers and learning-rate schedules for the built-in runner, chosen by gin.

Two optimizers cover the two reference setups:

* `adafactor` matches T5X's fine-tuning defaults (`t5x/adafactor.py` as bound by
  `t5x/configs/runs/finetune.gin`): constant learning rate 1e-3, `decay_rate=0.8`,
  `step_offset=0`, update clipping threshold 1.0, factored second moments
  (`min_dim_size_to_factor=128`), no momentum, `multiply_by_parameter_scale=True` with
  `epsilon2=1e-3`, `epsilon1=1e-30`, no weight decay. It is built from `optax.adafactor`.
  Known difference: T5X picks the factored dimensions from logical axis names
  (`standard_logical_factor_rules`), optax factors the two largest dimensions of each array.
  For T5's 2-D kernels and embeddings both choose the same pair; arrays with fewer than two
  dimensions >= 128 (layer norms, relative-position biases) stay unfactored in both.
* `adamw` matches the original release (HuggingFace `Seq2SeqTrainer` defaults): learning rate
  5e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0.0, linear decay to zero without warmup.

Schedules: `constant`, `rsqrt` (linear warmup then 1/sqrt(step) decay, T5's pre-training
schedule), `linear` (warmup then linear decay to `end_value`), `cosine` (warmup then cosine).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import gin
import jax.numpy as jnp
import optax

Schedule = Callable[[int], jnp.ndarray]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """A learning-rate schedule: `name` in constant|rsqrt|linear|cosine.

  `base_learning_rate=None` takes the optimizer's default (1e-3 Adafactor, 5e-5 AdamW) or the
  experiment's LEARNING_RATE macro.
  """
  name: str | None = None  # None: the optimizer's reference schedule (DEFAULT_SCHEDULES)
  base_learning_rate: float | None = None
  warmup_steps: int = 0
  end_value: float = 0.0


SCHEDULES = ("constant", "rsqrt", "linear", "cosine")


def make_schedule(config: ScheduleConfig, base_learning_rate: float, total_steps: int) -> Schedule:
  """Returns step -> learning rate for `config` over `total_steps` optimizer steps."""
  lr = float(config.base_learning_rate or base_learning_rate)
  warmup = int(config.warmup_steps)
  if lr <= 0:
    raise ValueError(f"learning rate must be positive, got {lr}")
  if warmup < 0 or total_steps <= 0:
    raise ValueError(f"need warmup_steps >= 0 and total_steps > 0, got {warmup}, {total_steps}")
  decay_steps = max(total_steps - warmup, 1)
  if config.name in (None, "constant"):
    if warmup:
      return optax.join_schedules(
          [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    return optax.constant_schedule(lr)
  if config.name == "rsqrt":
    # lr * min(1, step/warmup) / sqrt(max(step, warmup)) * sqrt(warmup): peak `lr` at `warmup`.
    w = max(warmup, 1)

    def rsqrt(step):
      step = jnp.asarray(step, jnp.float32) + 1.0
      return lr * jnp.minimum(1.0, step / w) * jnp.sqrt(w / jnp.maximum(step, w))

    return rsqrt
  if config.name == "linear":
    decay = optax.linear_schedule(lr, config.end_value, decay_steps)
  elif config.name == "cosine":
    decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=config.end_value / lr)
  else:
    raise ValueError(f"unknown schedule {config.name!r}; choose one of {SCHEDULES}")
  if warmup:
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])
  return decay


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Which optimizer and its hyperparameters; defaults reproduce the references above."""
  name: str = "adafactor"
  schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)  # gin-bound at use
  # Adafactor (T5X fine-tuning defaults).
  decay_rate: float = 0.8
  step_offset: int = 0
  clipping_threshold: float | None = 1.0
  factored: bool = True
  min_dim_size_to_factor: int = 128
  multiply_by_parameter_scale: bool = True
  momentum: float | None = None
  # AdamW (original release: HF Trainer defaults).
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.0
  # Both: global-norm gradient clipping, off by default as in both references.
  global_norm_clip: float | None = None


DEFAULT_LEARNING_RATES = {"adafactor": 1e-3, "adamw": 5e-5}
# The schedule a run gets when the config names none: T5X fine-tunes with a constant rate, the
# original release decays linearly.
DEFAULT_SCHEDULES = {"adafactor": "constant", "adamw": "linear"}


def make_optimizer(config: OptimizerConfig, total_steps: int,
                   learning_rate: float | None = None) -> tuple[optax.GradientTransformation, Schedule]:
  """Builds the optax transformation and its schedule (the schedule is also logged as `lr`).

  `learning_rate` (the experiment's LEARNING_RATE macro) overrides the optimizer default but not
  an explicit `ScheduleConfig.base_learning_rate`.
  """
  if config.name not in DEFAULT_LEARNING_RATES:
    raise ValueError(f"unknown optimizer {config.name!r}; choose adafactor or adamw")
  base = learning_rate if learning_rate is not None else DEFAULT_LEARNING_RATES[config.name]
  schedule_cfg = config.schedule
  if schedule_cfg.name is None:
    schedule_cfg = dataclasses.replace(schedule_cfg, name=DEFAULT_SCHEDULES[config.name])
  schedule = make_schedule(schedule_cfg, base, total_steps)
  if config.name == "adafactor":
    tx = optax.adafactor(
        learning_rate=schedule,
        min_dim_size_to_factor=config.min_dim_size_to_factor,
        decay_rate=config.decay_rate,
        decay_offset=config.step_offset,
        multiply_by_parameter_scale=config.multiply_by_parameter_scale,
        clipping_threshold=config.clipping_threshold,
        momentum=config.momentum,
        factored=config.factored,
    )
  else:
    tx = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                     weight_decay=config.weight_decay)
  if config.global_norm_clip:
    tx = optax.chain(optax.clip_by_global_norm(config.global_norm_clip), tx)
  return tx, schedule


def adamw_release() -> OptimizerConfig:
  """The original release's optimizer: AdamW 5e-5, linear decay to zero."""
  return OptimizerConfig(name="adamw", schedule=ScheduleConfig(name="linear"))

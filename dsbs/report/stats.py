"""Confidence intervals of the sweep report: Student t over seeds (the t distribution through the
regularized incomplete beta function, no SciPy), and a seeded percentile bootstrap over the test
examples of one run."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def _betacf(a: float, b: float, x: float) -> float:
  """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
  tiny = 1e-300
  c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 10_000):
    m2 = 2 * m
    for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
      d = 1.0 + num * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + num / c
      c = c if abs(c) > tiny else tiny
      h *= d * c
    if abs(d * c - 1.0) < 1e-15:
      break
  return h


def betainc(a: float, b: float, x: float) -> float:
  """The regularized incomplete beta function I_x(a, b)."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
               + b * math.log1p(-x))
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _betacf(a, b, x) / a
  return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
  """P(T <= t) for Student's t with `df` degrees of freedom."""
  tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
  return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
  """The p-quantile of Student's t (bisection on t_cdf; 1e-12 absolute)."""
  if not 0.0 < p < 1.0 or df <= 0:
    raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
  if p < 0.5:
    return -t_quantile(1.0 - p, df)
  lo, hi = 0.0, 1.0
  while t_cdf(hi, df) < p:
    hi *= 2.0
  while hi - lo > 1e-12 * max(1.0, hi):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
  return 0.5 * (lo + hi)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
  """(mean, low, high): mean +- t_{(1+level)/2, n-1} * sd / sqrt(n), for n >= 2 values."""
  n = len(values)
  if n < 2:
    raise ValueError("a t interval needs at least two values")
  mean = sum(values) / n
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
  return mean, mean - half, mean + half


def bootstrap_interval(correct_by_task: Mapping[str, Sequence[bool]], level: float = LEVEL,
                       resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
  """(accuracy %, low, high): percentile bootstrap over test examples, resampled within each
  task; the accuracy is the mean of the tasks' accuracies, as `dsbs.evaluate` reports it."""
  rng = np.random.default_rng(seed)
  tasks = [np.asarray(v, dtype=np.float64) for _, v in sorted(correct_by_task.items()) if len(v)]
  if not tasks:
    raise ValueError("no examples to resample")
  totals = np.zeros(resamples)
  for c in tasks:
    for start in range(0, resamples, 256):  # bounded memory for large test sets
      k = min(256, resamples - start)
      totals[start:start + k] += c[rng.integers(0, len(c), size=(k, len(c)))].mean(axis=1)
  stats = 100.0 * totals / len(tasks)
  point = 100.0 * float(np.mean([c.mean() for c in tasks]))
  lo, hi = np.percentile(stats, [50.0 * (1 - level), 50.0 * (1 + level)])
  return point, float(lo), float(hi)

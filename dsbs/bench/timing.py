"""Wall-clock timing of callables (shared with the T5X peer's side interpreter)."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def _times(fn: Callable[[], Any], reps: int) -> list[float]:
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def median_time(fn: Callable[[], Any], reps: int) -> float:
  """Median wall seconds of `reps` calls of `fn`."""
  return statistics.median(_times(fn, reps))


def min_time(fn: Callable[[], Any], reps: int) -> float:
  """Best wall seconds of `reps` calls of `fn`: on a shared host, the closest to the hardware."""
  return min(_times(fn, reps))

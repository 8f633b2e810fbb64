"""A requests-per-minute limiter shared by every request of a run, with a global pause.

Requests are spaced evenly (60 / rpm seconds apart) so a run never bursts past a provider's
per-minute quota; a 429 with Retry-After pauses every new request, not only the one refused.
"""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable


class RateLimiter:
  """Evenly spaced request starts plus a shared pause-until time."""

  def __init__(self, rpm: float | None = None,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
    if rpm is not None and rpm <= 0:
      raise ValueError(f"rpm must be positive, got {rpm}")
    self._interval = 60.0 / rpm if rpm else 0.0
    self._clock, self._sleep = clock, sleep
    self._next = 0.0
    self._paused_until = 0.0
    self._lock = asyncio.Lock()

  def pause_until(self, deadline: float) -> None:
    """Holds every request that has not started yet until `deadline` (clock time)."""
    self._paused_until = max(self._paused_until, deadline)

  async def acquire(self) -> None:
    """Waits until this request may start."""
    async with self._lock:
      while True:
        now = self._clock()
        start = max(now, self._next, self._paused_until)
        if start <= now:
          break
        await self._sleep(start - now)
      self._next = now + self._interval

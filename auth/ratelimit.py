"""A sliding-window limiter for login attempts (pure logic; time is passed in).

Kept in process memory: each api process limits what it sees, which bounds a
guessing attack per process without making login depend on Redis being up.
"""

from __future__ import annotations

import math
from collections import deque


class SlidingWindowLimiter:
    def __init__(self, *, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        self._limit = limit
        self._window_s = window_s
        self._max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}

    def retry_after(self, key: str, now: float) -> int:
        """0 if an attempt is allowed now (and records it), else seconds to wait."""
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self._max_keys:
                self._forget_idle(now)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self._window_s:
            hits.popleft()
        if len(hits) >= self._limit:
            return max(1, math.ceil(hits[0] + self._window_s - now))
        hits.append(now)
        return 0

    def _forget_idle(self, now: float) -> None:
        # Bound memory under a flood of distinct keys: drop keys with no recent hit.
        idle = [k for k, h in self._hits.items() if not h or h[-1] <= now - self._window_s]
        for key in idle:
            del self._hits[key]
        if len(self._hits) >= self._max_keys:
            self._hits.clear()

"""A sliding-window limiter for login and registration attempts (pure logic; time is
passed in).

Kept in process memory: each api process limits what it sees, which bounds a
guessing attack per process without making login depend on Redis being up.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from contextlib import suppress


class SlidingWindowLimiter:
    """At most `limit` hits per key in any `window_s` seconds, for at most `max_keys` keys.

    A full limiter forgets the key used least recently, one at a time: memory stays
    bounded, and a flood of new keys cannot wipe out the counts of the keys in use
    (forgetting them all at once would unlock every account a guesser had locked).
    """

    def __init__(self, *, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        self._limit = limit
        self._window_s = window_s
        self._max_keys = max_keys
        # By last use, oldest first; each key keeps only its newest `limit` hits, all that
        # deciding needs (a key is full when its limit-th newest hit is in the window).
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, key: str, now: float) -> int:
        """0 if `key` may be hit now, else the seconds until it may (at least 1).
        Counts nothing."""
        hits = self._hits.get(key)
        if hits is None:
            return 0
        while hits and hits[0] <= now - self._window_s:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return 0
        self._hits.move_to_end(key)
        if len(hits) < self._limit:
            return 0
        return max(1, math.ceil(hits[0] + self._window_s - now))

    def hit(self, key: str, now: float) -> None:
        """Count a hit of `key` at `now`."""
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self._max_keys:
                self._hits.popitem(last=False)
            hits = self._hits[key] = deque(maxlen=self._limit)
        else:
            self._hits.move_to_end(key)
        hits.append(now)

    def forget(self, key: str, at: float) -> None:
        """Take back a hit of `key` counted at `at` (none if it has left the window or
        the key was forgotten)."""
        hits = self._hits.get(key)
        if hits is not None:
            with suppress(ValueError):
                hits.remove(at)

    def retry_after(self, key: str, now: float) -> int:
        """`wait`, and a hit when it is 0: only allowed attempts count."""
        return admit(now, (self, key))


def admit(now: float, *buckets: tuple[SlidingWindowLimiter, str]) -> int:
    """0 after counting a hit in each (limiter, key), or the longest wait among them when
    any is full (and nothing is counted: a refused attempt uses up no limit)."""
    wait = max(limiter.wait(key, now) for limiter, key in buckets)
    if not wait:
        for limiter, key in buckets:
            limiter.hit(key, now)
    return wait

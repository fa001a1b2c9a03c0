"""Unit tests of auth.ratelimit.SlidingWindowLimiter with explicit times: `limit` hits per
window, the Retry-After value (ceil of the seconds until the oldest hit leaves the window, at
least 1), the window sliding, independent keys, and the max_keys memory bound.
"""

from __future__ import annotations

import pytest

from auth.ratelimit import SlidingWindowLimiter


def test_allows_limit_hits_then_refuses() -> None:
    limiter = SlidingWindowLimiter(limit=3, window_s=10)
    assert [limiter.retry_after("k", t) for t in (0.0, 1.0, 2.0)] == [0, 0, 0]
    assert limiter.retry_after("k", 2.5) == 8  # the hit at 0 leaves at 10: ceil(7.5)


@pytest.mark.parametrize(("now", "expected"), [
    (3.0, 7),
    (5.5, 5),
    (9.0, 1),
    (9.5, 1),
    (9.999, 1),
])
def test_retry_after_is_ceil_of_time_until_the_oldest_hit_leaves(
    now: float, expected: int
) -> None:
    limiter = SlidingWindowLimiter(limit=2, window_s=10)
    assert limiter.retry_after("k", 0.0) == 0
    assert limiter.retry_after("k", 2.0) == 0
    assert limiter.retry_after("k", now) == expected


def test_retry_after_is_at_least_one() -> None:
    limiter = SlidingWindowLimiter(limit=1, window_s=0.5)
    assert limiter.retry_after("k", 100.0) == 0
    assert limiter.retry_after("k", 100.25) == 1
    assert limiter.retry_after("k", 100.4999) == 1


def test_allows_again_once_the_oldest_hit_leaves_the_window() -> None:
    limiter = SlidingWindowLimiter(limit=2, window_s=10)
    assert limiter.retry_after("k", 0.0) == 0
    assert limiter.retry_after("k", 4.0) == 0
    assert limiter.retry_after("k", 9.9) > 0
    # At 10 the hit at 0 is out (a hit lives for exactly window_s); the one at 4 is not.
    assert limiter.retry_after("k", 10.0) == 0
    assert limiter.retry_after("k", 10.0) == 4  # hits at 4 and 10: the one at 4 leaves at 14
    assert limiter.retry_after("k", 14.0) == 0


def test_refused_attempts_are_not_counted() -> None:
    limiter = SlidingWindowLimiter(limit=2, window_s=10)
    limiter.retry_after("k", 0.0)
    limiter.retry_after("k", 1.0)
    for t in (2.0, 3.0, 4.0, 5.0):
        assert limiter.retry_after("k", t) > 0
    # Only the two allowed hits count: the first leaves at 10, not later.
    assert limiter.retry_after("k", 10.0) == 0


def test_whole_window_passes() -> None:
    limiter = SlidingWindowLimiter(limit=3, window_s=60)
    for t in (0.0, 1.0, 2.0):
        assert limiter.retry_after("k", t) == 0
    assert limiter.retry_after("k", 30.0) == 30
    for t in (1000.0, 1000.0, 1000.0):
        assert limiter.retry_after("k", t) == 0
    assert limiter.retry_after("k", 1000.0) == 60


def test_keys_are_independent() -> None:
    limiter = SlidingWindowLimiter(limit=2, window_s=10)
    for t in (0.0, 1.0):
        assert limiter.retry_after("alice", t) == 0
    assert limiter.retry_after("alice", 2.0) > 0
    assert limiter.retry_after("bob", 2.0) == 0
    assert limiter.retry_after("bob", 3.0) == 0
    assert limiter.retry_after("bob", 4.0) > 0
    assert limiter.retry_after("ALICE", 4.0) == 0  # keys are exact; callers normalise


def test_max_keys_forgets_idle_keys_and_keeps_active_ones() -> None:
    limiter = SlidingWindowLimiter(limit=1, window_s=10, max_keys=3)
    assert limiter.retry_after("old-1", 0.0) == 0
    assert limiter.retry_after("old-2", 1.0) == 0
    assert limiter.retry_after("active", 15.0) == 0
    # A fourth key at 20: the keys last hit at 0 and 1 are idle (out of the window) and go;
    # "active" (hit at 15) stays and is still limited.
    assert limiter.retry_after("new", 20.0) == 0
    assert len(limiter._hits) == 2
    assert set(limiter._hits) == {"active", "new"}
    assert limiter.retry_after("active", 20.0) == 5
    assert limiter.retry_after("new", 21.0) == 9


def test_max_keys_bounds_memory_under_a_flood_of_distinct_keys() -> None:
    limiter = SlidingWindowLimiter(limit=1, window_s=10, max_keys=50)
    for n in range(1000):
        assert limiter.retry_after(f"key-{n}", n / 100) == 0
        assert len(limiter._hits) <= 50

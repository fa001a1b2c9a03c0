"""Unit tests of auth.ratelimit with explicit times: `limit` hits per window, the
Retry-After value (ceil of the seconds until the oldest hit leaves the window, at least 1),
the window sliding, independent keys, hits taken back, several buckets admitted together,
and the max_keys memory bound (the key used least recently goes, one at a time). Property
tests (Hypothesis) compare the limiter with a naive one that keeps every hit of every key.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auth.ratelimit import SlidingWindowLimiter, admit


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


def test_a_full_limiter_forgets_the_key_used_least_recently_and_only_it() -> None:
    limiter = SlidingWindowLimiter(limit=1, window_s=10, max_keys=3)
    for t, key in enumerate(("a", "b", "c")):
        assert limiter.retry_after(key, float(t)) == 0
    assert limiter.wait("a", 2.5) > 0  # a use: "a" is now the newest, "b" the oldest
    assert limiter.retry_after("d", 3.0) == 0  # full: one key must go, and only "b"
    assert limiter.wait("b", 3.0) == 0
    assert [limiter.wait(key, 3.0) for key in ("a", "c", "d")] == [7, 9, 10]


def test_a_flood_of_new_keys_keeps_memory_bounded_and_the_newest_keys_counted() -> None:
    limiter = SlidingWindowLimiter(limit=1, window_s=1000, max_keys=50)
    for n in range(1000):
        assert limiter.retry_after(f"key-{n}", n / 100) == 0
        assert len(limiter._hits) <= 50
    assert all(limiter.wait(f"key-{n}", 10.0) > 0 for n in range(950, 1000))


def test_keys_whose_hits_all_left_the_window_are_dropped() -> None:
    limiter = SlidingWindowLimiter(limit=2, window_s=10)
    limiter.retry_after("k", 0.0)
    assert limiter.wait("k", 10.0) == 0
    assert "k" not in limiter._hits


def test_wait_counts_nothing() -> None:
    limiter = SlidingWindowLimiter(limit=1, window_s=10)
    for t in (0.0, 1.0, 2.0):
        assert limiter.wait("k", t) == 0
    assert limiter.retry_after("k", 3.0) == 0
    assert limiter.wait("k", 4.0) == 9


def test_a_hit_taken_back_no_longer_counts() -> None:
    limiter = SlidingWindowLimiter(limit=2, window_s=10)
    assert limiter.retry_after("k", 0.0) == 0
    assert limiter.retry_after("k", 1.0) == 0
    limiter.forget("k", 1.0)
    assert limiter.retry_after("k", 2.0) == 0
    assert limiter.wait("k", 3.0) == 7
    limiter.forget("k", 99.0)  # never counted: nothing to take back
    limiter.forget("nobody", 0.0)
    assert limiter.wait("k", 3.0) == 7


def test_admit_counts_in_every_bucket_or_in_none() -> None:
    per_address = SlidingWindowLimiter(limit=3, window_s=10)
    total = SlidingWindowLimiter(limit=2, window_s=10)
    assert admit(0.0, (per_address, "a"), (total, "")) == 0
    assert admit(1.0, (per_address, "a"), (total, "")) == 0
    # The total is full: refused, and the address's count does not move.
    assert admit(2.0, (per_address, "a"), (total, "")) == 8
    assert per_address.wait("a", 2.0) == 0
    assert admit(10.0, (per_address, "a"), (total, "")) == 0  # the hit at 0 has left
    assert admit(10.5, (per_address, "a"), (total, "")) == 1  # total: 1 and 10, until 11
    assert admit(10.5, (per_address, "b"), (total, "")) == 1
    assert per_address.wait("a", 10.5) == 0 and per_address.wait("b", 10.5) == 0


# --- properties --------------------------------------------------------------------------

LIMIT, WINDOW = 3, 10.0
# One step: (key, seconds since the last step, admit it or take back its last admitted hit).
STEPS = st.lists(st.tuples(st.sampled_from("abcde"),
                           st.floats(min_value=0, max_value=6, allow_nan=False),
                           st.sampled_from(("admit", "forget"))), max_size=80)


def naive_wait(hits: list[float], now: float) -> int:
    """Every hit ever counted, and the definition: full when `LIMIT` are in the window."""
    inside = sorted(h for h in hits if h > now - WINDOW)
    if len(inside) < LIMIT:
        return 0
    return max(1, math.ceil(inside[-LIMIT] + WINDOW - now))


@given(STEPS)
def test_the_limiter_decides_as_the_naive_definition_does(
    steps: list[tuple[str, float, str]]
) -> None:
    limiter = SlidingWindowLimiter(limit=LIMIT, window_s=WINDOW, max_keys=5)
    hits: dict[str, list[float]] = {}
    now = 0.0
    for key, elapsed, action in steps:
        now += elapsed
        mine = hits.setdefault(key, [])
        if action == "admit":
            expected = naive_wait(mine, now)
            assert limiter.retry_after(key, now) == expected
            if not expected:
                mine.append(now)
        elif mine:
            limiter.forget(key, mine[-1])
            mine.pop()
        assert all(limiter.wait(k, now) == naive_wait(h, now) for k, h in hits.items())


@given(STEPS, st.integers(min_value=1, max_value=4))
def test_a_full_limiter_only_ever_forgets_its_least_recently_used_key(
    steps: list[tuple[str, float, str]], max_keys: int
) -> None:
    limiter = SlidingWindowLimiter(limit=LIMIT, window_s=WINDOW, max_keys=max_keys)
    hits: dict[str, list[float]] = {}
    used: list[str] = []  # keys by last use, newest last
    now = 0.0
    for key, elapsed, _ in steps:
        now += elapsed
        before = list(limiter._hits)
        wait = limiter.retry_after(key, now)
        # Forgetting only ever loosens: never a wait the definition would not give.
        assert wait <= naive_wait(hits.get(key, []), now)
        if not wait:
            hits.setdefault(key, []).append(now)
        used = [k for k in used if k != key] + [key]
        kept = list(limiter._hits)
        assert len(kept) <= max_keys
        assert kept == [k for k in used if k in kept]  # by last use, the one just used last
        assert kept[-1] == key
        assert set(before) - set(kept) - {key} <= set(before[:1])  # at most the oldest went

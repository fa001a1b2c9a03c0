"""What a zone counts about itself, for GET /v1/world/zones and for /metrics
(docs/operations.md): plain numbers the tick updates, read by whoever asks."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field

# Upper bounds of the tick-time histogram, in seconds: a 20 Hz tick has 50 ms.
TICK_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
RECENT_TICKS = 1200  # a minute at 20 Hz, for the percentiles of the zone list


class TickTimes:
    """How long ticks took: all of them in cumulative buckets (for a Prometheus
    histogram, which must never forget), and the recent ones for percentiles."""

    def __init__(self) -> None:
        self.counts = [0] * (len(TICK_BUCKETS_S) + 1)  # the last one: over every bound
        self.total_s = 0.0
        self.recent: deque[float] = deque(maxlen=RECENT_TICKS)

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(TICK_BUCKETS_S, seconds)] += 1
        self.total_s += seconds
        self.recent.append(seconds)

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, ticks at most that long) per bucket, then ("+Inf", every tick)."""
        bounds = [*(repr(b) for b in TICK_BUCKETS_S), "+Inf"]
        running, out = 0, []
        for bound, count in zip(bounds, self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    def percentiles_ms(self, *qs: float) -> list[float | None]:
        """Recent tick times at quantiles `qs`, in milliseconds (None before a tick)."""
        ordered = sorted(self.recent)
        if not ordered:
            return [None for _ in qs]
        return [round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)
                for q in qs]


@dataclass
class ZoneCounts:
    """A zone's counters since its actor started."""

    ticks: TickTimes = field(default_factory=TickTimes)
    skipped_ticks: int = 0
    inputs_dropped: int = 0  # unknown character, or too many queued
    move_batches_dropped: int = 0  # player.moved batches the publisher could not take
    rules_faults: int = 0  # ticks whose rules raised (zones/simulation.py, Stepped.fault)

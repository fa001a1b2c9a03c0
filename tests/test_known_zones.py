"""Unit tests of zones/known.py, the zones of the world as one process knows them from
the zone directory's watch: up while renewed within a lease, down once released or
silent for longer, and known (listed) ever after.

Rules: pure logic; time is a number passed in.
"""

from __future__ import annotations

from zones.contract import Held, TickTimes
from zones.known import KnownZones


def held(owner: str, players: int = 0) -> Held:
    return Held(owner, players, 1, 20.0, TickTimes(0.1, 0.2, 0.3))


def test_a_zone_is_up_while_its_holder_renews_within_the_lease() -> None:
    known = KnownZones(lease_s=3.0)
    assert known.held("z7", 0.0) is None and known.seen == set()
    known.heard("z7", held("a", 2), 10.0)
    assert known.held("z7", 12.9) == held("a", 2)
    known.heard("z7", held("a", 3), 12.0)  # a renewal
    assert known.held("z7", 15.0) == held("a", 3)
    assert known.held("z7", 15.1) is None, "a holder that stops renewing is down"
    assert known.seen == {"z7"}


def test_a_released_zone_is_down_at_once_and_still_known() -> None:
    known = KnownZones(lease_s=3.0)
    known.heard("z7", held("a"), 10.0)
    known.heard("z7", None, 11.0)
    assert known.held("z7", 11.0) is None
    assert known.seen == {"z7"}
    known.heard("z7", held("b"), 12.0)  # a standby took it
    assert known.held("z7", 12.0) == held("b")


def test_a_release_heard_first_makes_the_zone_known_and_down() -> None:
    known = KnownZones(lease_s=3.0)
    known.heard("z8", None, 1.0)
    assert known.seen == {"z8"} and known.held("z8", 1.0) is None


def at_tick(owner: str, tick: int) -> Held:
    return Held(owner, 1, tick, 20.0, TickTimes(0.1, 0.2, 0.3))


def test_a_zones_rate_is_its_ticks_between_two_reports_of_one_holder() -> None:
    """What the console shows as snapshots a second (docs/protocol.md, "Operator console")."""
    known = KnownZones(lease_s=3.0)
    known.heard("z1", at_tick("a", 100), 10.0)
    assert known.ticks_per_s("z1") is None, "one report says nothing of a rate"
    known.heard("z1", at_tick("a", 120), 11.0)
    assert known.ticks_per_s("z1") == 20.0
    known.heard("z1", at_tick("a", 120), 11.5)  # the same report again: a watch anew
    assert known.ticks_per_s("z1") == 20.0
    known.heard("z1", at_tick("a", 130), 12.0)  # ten ticks since 11.0: a zone behind
    assert known.ticks_per_s("z1") == 10.0
    known.heard("z1", at_tick("b", 5), 13.0)  # a standby took over: its own count
    assert known.ticks_per_s("z1") is None
    known.heard("z1", None, 14.0)
    known.heard("z1", at_tick("b", 40), 15.0)  # run again after a release
    assert known.ticks_per_s("z1") is None

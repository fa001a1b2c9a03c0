"""The zones of the world as one process knows them from the zone directory. Sans-IO.

The directory's watch (bus/directory.py) reports each zone's holder as it claims
and renews it (every third of the lease) and when it lets go. A zone is up while
its last report is younger than a lease; a holder that died stops renewing, and
nobody is told when its key expires, so silence is how its death shows. A zone
once seen stays known (listed as down) for the life of the process.
"""

from __future__ import annotations

from zones.contract import Held


class KnownZones:
    def __init__(self, *, lease_s: float) -> None:
        self.lease_s = lease_s
        self._held: dict[str, tuple[Held, float]] = {}  # value, when heard
        self._seen: set[str] = set()
        self._rates: dict[str, float] = {}  # ticks a second, between its last two reports
        self._since: dict[str, tuple[str, int, float]] = {}  # the report the rate runs from

    def heard(self, zone_id: str, value: Held | None, now: float) -> None:
        """The directory's news of `zone_id`: its holder's value, or None once released."""
        self._seen.add(zone_id)
        if value is None:
            self._held.pop(zone_id, None)
            self._rates.pop(zone_id, None)
            self._since.pop(zone_id, None)
            return
        self._held[zone_id] = (value, now)
        owner, tick, when = self._since.get(zone_id, ("", -1, now))
        if owner == value.owner and value.tick == tick:
            return  # the same report again (a watch started anew): no news of the rate
        if owner == value.owner and value.tick > tick and now > when:
            self._rates[zone_id] = (value.tick - tick) / (now - when)
        else:  # a new holder, or a zone run again: its rate starts afresh
            self._rates.pop(zone_id, None)
        self._since[zone_id] = (value.owner, value.tick, now)

    def ticks_per_s(self, zone_id: str) -> float | None:
        """The ticks `zone_id` ran a second between its holder's last two reports (each
        tick sends every player a snapshot); None until two of one holder are heard."""
        return self._rates.get(zone_id)

    def held(self, zone_id: str, now: float) -> Held | None:
        """What the holder of `zone_id` last wrote, if it holds the zone now."""
        found = self._held.get(zone_id)
        if found is None or now - found[1] > self.lease_s:
            return None
        return found[0]

    @property
    def seen(self) -> set[str]:
        """Every zone this process has heard of."""
        return set(self._seen)

"""A zone as another process holds it, fed by the zone's feed (docs/protocol.md, "Zones
across processes"; zones/contract.py, `Feed`). Sans-IO.

A `Mirror` is an Interest whose window is filled by `apply`, one tick of the feed at a
time: a delta against the tick it holds, or everything. It then serves its process's
sessions the same views, events included, that the zone serves its own
(zones/remote.py).
"""

from __future__ import annotations

from zones.contract import Feed
from zones.interest import Interest
from zones.snapshots import Scalar

COORDINATE = 1e9  # positions within it (server/config.py keeps WORLD_BOUNDS so)

Update = tuple[int, float, float, int, tuple[Scalar, ...]]


class Mirror(Interest):
    def apply(self, feed: Feed) -> bool:
        """Take a tick of the zone's feed (decoded); False if it is a delta against a tick
        this mirror does not hold (wait for the next complete one). A feed that does not
        hold together (another zone's, an entry of another shape, an update of an eid
        nobody entered, an eid that leaves and enters at once) raises ValueError before
        anything is changed."""
        epoch, tick, base = feed.epoch, feed.tick, feed.base
        enter, leave = feed.enter, feed.leave
        if base is not None and (epoch != self.epoch or base != self.tick):
            return False
        update = [self._entry(entry) for entry in feed.update]
        names = {eid: (character_id, name) for eid, character_id, name in enter}
        held = set() if base is None and epoch != self.epoch else set(self.entities)
        held.difference_update(leave)
        unknown = [entry[0] for entry in update if entry[0] not in names
                   and entry[0] not in held]
        # An eid that leaves and enters in one tick: no delta could tell its viewers (the
        # zone rests a freed eid for a tick so that it never happens).
        reused = names.keys() & set(leave)
        if feed.zone != self.zone_id or unknown or reused:
            raise ValueError(f"a feed of zone {feed.zone!r} that updates unknown eids "
                             f"{unknown[:5]} or reuses eids {sorted(reused)[:5]}")
        if base is None:
            if epoch != self.epoch:  # another run of the zone: start afresh
                for eid in list(self.entities):
                    self.leave(eid)
                self.epoch = epoch
            present = {entry[0] for entry in update}
            for eid in [eid for eid in self.entities if eid not in present]:
                self.leave(eid)
        for eid in leave:
            if eid in self.entities:
                self.leave(eid)
        for eid, x, y, seq, fields in update:
            known = self.entities.get(eid)
            if known is not None and eid in names and known.character_id != names[eid][0]:
                self.leave(eid)  # its eid was given to another character meanwhile
                known = None
            if known is None:
                character_id, name = names[eid]
                self.enter(eid, character_id, name, x, y, seq, fields)
            elif (known.x, known.y, known.seq, known.fields) != (x, y, seq, fields):
                self.update(eid, x, y, seq, fields)
        self.seal(tick, events=[(kind, about, data) for kind, about, data in feed.events])
        return True

    def _entry(self, entry: list[Scalar]) -> Update:
        """[eid, x, y, seq, *fields], checked: the game's fields, positions a zone may
        hold."""
        if len(entry) != 4 + len(self.fields):
            raise ValueError(f"an entry of {len(entry)} values, not {4 + len(self.fields)}")
        eid, x, y, seq = entry[0], entry[1], entry[2], entry[3]
        if not (type(eid) is int and eid >= 0 and type(seq) is int and seq >= 0
                and type(x) is float and type(y) is float
                and -COORDINATE <= x <= COORDINATE and -COORDINATE <= y <= COORDINATE):
            raise ValueError("an entry that is not [eid, x, y, seq] of a zone")
        return eid, x, y, seq, tuple(entry[4:])

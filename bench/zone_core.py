"""Zone core: the simulation, interest management and snapshot encoding of one zone for
N avatars, without sockets or trio: what a tick costs before any byte is sent.

Every avatar moves at --move-hz (a move of length ~1 in a random direction), ticks
run at --tick-hz, and each tick every avatar is a member that is handed the view of
its block and encodes it as its outlet would (a delta against its last snapshot
when it has one, in --wire). Prints percentiles of the core's time (step, interest,
every occupied block's view encoded) and of the whole tick (with each member handed
its view, as the fan-out does before any send), visible players per member and
bytes per member per second.

With --combat the zone runs the shooter (rules/shooter) with lag compensation on
(a rewind window of 200 ms) and replicated hit points: a --fire-share of the avatars
fire the pistol at its rate, each at a player of its own cell (one it sees), claiming
the tick of --claim-ticks ago as a client behind by its latency would; their hits,
deaths and respawns are events each member is handed the message of. The dead
respawn at one of 100 spawn points spread like the avatars.

    python -m bench.zone_core -n 10000 --view-radius 100 --spread
    python -m bench.zone_core -n 10000 --view-radius 100 --spread --combat
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson

from bench.report import distribution, emit, quantiles
from rules.api import Input, Player, Profile, Rules, Setup, Zone
from rules.shooter.game import Shooter
from rules.walk import Walk
from server.process import steady_gc
from zones.grid import Cell, Grid
from zones.interest import V1, V2, Base, Interest
from zones.simulation import Simulation


def game(args: argparse.Namespace, spread: float, rng: random.Random,
         folder: Path) -> Rules:
    """The rules the bench's zone runs: Walk, or the shooter on a map of spawn points."""
    if not args.combat:
        return Walk(Setup(max_step=5.0))
    spawns = [[rng.uniform(-spread, spread), rng.uniform(-spread, spread)] for _ in range(100)]
    (folder / "map.json").write_bytes(orjson.dumps({"spawns": spawns}))
    return Shooter(Setup(max_step=5.0, map_path=str(folder / "map.json"), max_rewind_s=0.2))


def run(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    bounds = (-1000.0, -1000.0, 1000.0, 1000.0)
    spread = 1000.0 if args.spread else 50.0
    with tempfile.TemporaryDirectory() as folder:
        rules = game(args, spread, rng, Path(folder))
    sim = Simulation(rules, Zone("core", bounds, args.tick_hz, seed=1))
    interest = Interest("core", Grid(*bounds, args.view_radius), epoch=uuid.uuid4().hex,
                        fields=tuple(f.name for f in rules.fields))
    armed = Profile(weapons=("pistol",))
    for i in range(args.n):
        player = sim.add(Player(f"c{i}", f"u{i}", f"player{i}", rng.uniform(-spread, spread),
                                rng.uniform(-spread, spread), profile=armed,
                                fields=rules.fields))
        interest.enter(player.eid, player.character_id, player.name, player.x, player.y, 0,
                       tuple(player.fields))
    interest.seal(0)
    steady_gc()  # as a zone process does once it serves
    members = list(sim.players.values())
    firing = members[:round(len(members) * args.fire_share)] if args.combat else []
    fire_every = round(args.tick_hz / 2)  # the pistol's rate: twice a second
    happened: Counter[str] = Counter()
    by_eid = {p.eid: p for p in members}
    by_cell: dict[Cell, list[int]] = {}
    sent: dict[int, Base | None] = {a.eid: None for a in members}
    seqs = {a.character_id: 0 for a in members}
    every = max(1, round(args.tick_hz / args.move_hz))  # each avatar moves every `every` ticks
    durations, core, visible, payload_bytes = [], [], [], 0
    wire = V2 if args.wire == "v2" else V1
    for tick in range(1, args.ticks + 1):
        for member in members[tick % every::every]:
            seqs[member.character_id] += 1
            angle = rng.uniform(0, 2 * math.pi)
            sim.queue(member.character_id, Input("move", seqs[member.character_id],
                                                 (math.cos(angle), math.sin(angle))))
        for shooter in firing[tick % fire_every::fire_every]:
            seen = by_cell.get(interest.entities[shooter.eid].cell, [])
            target = by_eid[rng.choice(seen)] if seen else shooter
            fire(sim, shooter, target, seqs[shooter.character_id] + 1, tick - args.claim_ticks)
            seqs[shooter.character_id] += 1
        began = time.perf_counter()
        stepped = sim.step()
        interest.seal(stepped.tick, stepped.changed,
                      [(e.kind, [p.eid for p in e.about], e.data) for e in stepped.events])
        for cell in interest.occupied:  # what most of a cell's members get: its block's delta
            view = interest.view(cell)
            view.encoded(wire, view._after)
        encoded = time.perf_counter()
        # As a zone hands its members their views: it walks the cells' members as they are,
        # so the bench copies none of them in the time it measures.
        for cell, eids in interest.members():
            view = interest.view(cell)
            for eid in eids:
                payload, sent[eid] = view.encoded(wire, sent[eid])
                payload_bytes += len(payload) + len(view.events(wire) or b"")
        handed = time.perf_counter()
        core.append(encoded - began)
        durations.append(handed - began)
        happened.update(e.kind for e in stepped.events)
        if firing:  # whom the shooters see, for the next tick
            by_cell = {cell: list(eids) for cell, eids in interest.members()}
        if tick % 10 == 0:
            sizes = {cell: len(list(eids)) for cell, eids in interest.members()}
            visible += [sum(sizes.get(c, 0) for c in interest.grid.block(cell))
                        for cell in list(sizes)[:50]]
    seconds = args.ticks / args.tick_hz
    return {
        "avatars": args.n, "view_radius": args.view_radius, "spread": args.spread,
        "wire": args.wire, "ticks": args.ticks,
        "core": distribution(core),
        "tick": distribution(durations),
        "visible_per_member": quantiles(visible),
        "kbytes_per_member_per_s": round(payload_bytes / args.n / seconds / 1000, 1),
        **({"firing": len(firing), "shots_per_s": round(len(firing) * 2),
            "events_per_s": {k: round(v / seconds) for k, v in sorted(happened.items())}}
           if args.combat else {}),
    }


def fire(sim: Simulation, shooter: Player, target: Player, seq: int, claimed: int) -> None:
    """`shooter` fires the pistol at `target`, where it is now."""
    ax, ay = target.x - shooter.x, target.y - shooter.y
    sim.queue(shooter.character_id, Input("fire", seq, ("pistol", ax or 1.0, ay,
                                                         max(0, claimed))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="avatars")
    parser.add_argument("--view-radius", type=float, default=100.0)
    parser.add_argument("--spread", action="store_true",
                        help="avatars over the whole ±1000 zone, not near the origin")
    parser.add_argument("--move-hz", type=float, default=10.0)
    parser.add_argument("--tick-hz", type=float, default=20.0)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--wire", choices=("v1", "v2"), default="v2")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--combat", action="store_true",
                        help="the shooter's rules, a share of avatars firing")
    parser.add_argument("--fire-share", type=float, default=0.1,
                        help="with --combat: the share of avatars that fire")
    parser.add_argument("--claim-ticks", type=int, default=3,
                        help="with --combat: how many ticks back a shot claims")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    emit(f"zone_core: {args.n} avatars, radius {args.view_radius}", run(args), as_json=args.json)


if __name__ == "__main__":
    main()

"""Zone core: the simulation, interest management and snapshot encoding of one zone for
N avatars, without sockets or trio: what a tick costs before any byte is sent.

Every avatar moves at --move-hz (a move of length ~1 in a random direction), ticks
run at --tick-hz, and each tick every avatar is a member that is handed the view of
its block and encodes it as its outlet would (a delta against its last snapshot
when it has one, in --wire). Prints percentiles of the core's time (step, interest,
every occupied block's view encoded) and of the whole tick (with each member handed
its view, as the fan-out does before any send), visible players per member and
bytes per member per second.

    python -m bench.zone_core -n 10000 --view-radius 100 --spread
"""

from __future__ import annotations

import argparse
import math
import random
import time
import uuid

from bench.report import distribution, emit, quantiles
from rules.api import Input, Player, Setup, Zone
from rules.walk import Walk
from zones.grid import Grid
from zones.interest import V1, V2, Base, Interest
from zones.simulation import Simulation


def run(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    bounds = (-1000.0, -1000.0, 1000.0, 1000.0)
    sim = Simulation(Walk(Setup(max_step=5.0)), Zone("core", bounds, args.tick_hz, seed=1))
    interest = Interest("core", Grid(*bounds, args.view_radius), epoch=uuid.uuid4().hex)
    spread = 1000.0 if args.spread else 50.0
    for i in range(args.n):
        player = sim.add(Player(f"c{i}", f"u{i}", f"player{i}", rng.uniform(-spread, spread),
                                rng.uniform(-spread, spread)))
        interest.enter(player.eid, player.character_id, player.name, player.x, player.y, 0)
    interest.seal(0)
    members = list(sim.players.values())
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
        began = time.perf_counter()
        stepped = sim.step()
        interest.seal(stepped.tick, stepped.changed)
        cells = [(cell, list(eids)) for cell, eids in interest.members()]
        for cell, _ in cells:  # what most of a cell's members get: the delta of its block
            interest.view(cell).encoded(wire, interest.view(cell)._after)
        encoded = time.perf_counter()
        for cell, eids in cells:  # as a zone hands its members their views
            view = interest.view(cell)
            for eid in eids:
                payload, sent[eid] = view.encoded(wire, sent[eid])
                payload_bytes += len(payload)
        handed = time.perf_counter()
        core.append(encoded - began)
        durations.append(handed - began)
        if tick % 10 == 0:
            sizes = {cell: len(eids) for cell, eids in cells}
            visible += [sum(sizes.get(c, 0) for c in interest.grid.block(cell))
                        for cell, _ in cells[:50]]
    seconds = args.ticks / args.tick_hz
    return {
        "avatars": args.n, "view_radius": args.view_radius, "spread": args.spread,
        "wire": args.wire, "ticks": args.ticks,
        "core": distribution(core),
        "tick": distribution(durations),
        "visible_per_member": quantiles(visible),
        "kbytes_per_member_per_s": round(payload_bytes / args.n / seconds / 1000, 1),
    }


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
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    emit(f"zone_core: {args.n} avatars, radius {args.view_radius}", run(args), as_json=args.json)


if __name__ == "__main__":
    main()

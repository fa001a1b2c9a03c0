"""The shooter's weapons: one catalogue, in weapons.json beside this file (docs/rules.md,
"The shooter"). A player fires only those its progression has unlocked."""

from __future__ import annotations

from pathlib import Path

import msgspec

CATALOGUE = Path(__file__).with_name("weapons.json")


class Weapon(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    damage: int
    range: float
    shots_per_second: float


def read_weapons(path: Path = CATALOGUE) -> dict[str, Weapon]:
    weapons = msgspec.json.decode(path.read_bytes(), type=dict[str, Weapon])
    for name, weapon in weapons.items():
        if weapon.damage <= 0 or weapon.range <= 0 or weapon.shots_per_second <= 0:
            raise ValueError(f"{path}: {name} must have damage, range and a rate above 0")
    return weapons

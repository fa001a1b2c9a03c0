"""The shooter, the default game (docs/rules.md): game.py, its weapons (weapons.json)
and its map."""

from rules.shooter.game import Shooter

__all__ = ["Shooter"]

"""WORLD_RULES: which game a zone runs (rules/loading.py). A name that is no game, or a
game whose names clash with the zone's own, stops the process at start with why, never
a zone that misreads its players later. Pure logic."""

from __future__ import annotations

from typing import Any

import pytest

from rules.api import MOVE, Field, InputSpec, Number, Setup, Text
from rules.loading import load
from tests.games import Walking


def pinging(setup: Setup) -> Walking:
    return Walking(setup, inputs=(MOVE, InputSpec("ping", (("t", Number()),))))


def placed_by_x(setup: Setup) -> Walking:
    return Walking(setup, fields=(Field("x", 0.0), Field("score", 0)))


def running(setup: Setup) -> Walking:
    return Walking(setup, inputs=(InputSpec("move", (("dx", Number()), ("dy", Number())),
                                             per_tick=8),))


def typed(setup: Setup) -> Walking:
    return Walking(setup, inputs=(MOVE, InputSpec("say", (("type", Number()),))))


def crowded(setup: Setup) -> Walking:
    return Walking(setup, fields=tuple(Field(f"f{i}", 0) for i in range(12)))


def wordy(setup: Setup) -> Walking:
    return Walking(setup, inputs=(MOVE, InputSpec("say", (("text", Text(201)),))))


def nothing(setup: Setup) -> Any:
    return object()


def broken(setup: Setup) -> Any:
    raise RuntimeError("no map")


def test_the_default_and_the_example_are_games() -> None:
    assert load("rules.shooter:Shooter").__name__ == "Shooter"
    assert load("examples.tag:Tag").__name__ == "Tag"
    assert load(f"{__name__}:Walking").__name__ == "Walking"


@pytest.mark.parametrize(("spec", "why"), [
    ("rules.shooter", "must be package.module:name"),
    ("no.such.module:Game", "cannot import no.such.module"),
    ("rules.shooter:Nothing", "rules.shooter has no game Nothing"),
    (f"{__name__}:nothing", "is no game: its rules have no inputs"),
    (f"{__name__}:broken", r"is no game: made with the default setup, RuntimeError\('no map'\)"),
    (f"{__name__}:pinging", "names an input ping: the zone's own message"),
    (f"{__name__}:placed_by_x", "names a field x: a key of every entry"),
    (f"{__name__}:typed", "names an input's field type: every message's own"),
    (f"{__name__}:crowded", "has 12 fields: 11 at most"),
    (f"{__name__}:wordy", "has an input text longer than 200"),
    (f"{__name__}:running", "has a move of its own: a game's move is rules.api.MOVE"),
])
def test_what_is_no_game_is_refused_with_why(spec: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        load(spec)

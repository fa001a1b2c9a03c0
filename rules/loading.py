"""Which game a zone runs: `WORLD_RULES`, `package.module:name` (docs/rules.md)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from rules.api import (
    ENTRY_KEYS,
    LONGEST_TEXT,
    MOST_FIELDS,
    MOVE,
    ZONE_MESSAGES,
    Rules,
    Setup,
    Text,
)

DEFAULT = "rules.shooter:Shooter"

Game = Callable[[Setup], Rules]


def load(spec: str) -> Game:
    """The game `spec` names, made once with the default setup to check that it is one;
    ValueError saying why if it is not."""
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise ValueError("must be package.module:name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name}: {exc}") from None
    game = getattr(module, name, None)
    if not callable(game):
        raise ValueError(f"{module_name} has no game {name}")
    try:
        rules = game(Setup())
    except Exception as exc:  # whatever it is, the process says why and stops
        raise ValueError(f"{spec} is no game: made with the default setup, {exc!r}") from None
    for needed in ("inputs", "fields", "history_ticks", "start", "join", "leave", "step"):
        if not hasattr(rules, needed):
            raise ValueError(f"{spec} is no game: its rules have no {needed}")
    taken = sorted({i.kind for i in rules.inputs} & set(ZONE_MESSAGES))
    if taken:
        raise ValueError(f"{spec} names an input {', '.join(taken)}: the zone's own message")
    if any(i.kind == MOVE.kind and i != MOVE for i in rules.inputs):
        # The edge and the relay between processes carry moves on a path of their own.
        raise ValueError(f"{spec} has a move of its own: a game's move is rules.api.MOVE")
    taken = sorted({name for i in rules.inputs for name, _ in i.fields} & {"type", "seq"})
    if taken:
        raise ValueError(f"{spec} names an input's field {', '.join(taken)}: every "
                         "message's own")
    if len(rules.fields) > MOST_FIELDS:
        raise ValueError(f"{spec} has {len(rules.fields)} fields: {MOST_FIELDS} at most")
    if any(isinstance(kind, Text) and kind.max_length > LONGEST_TEXT
           for i in rules.inputs for _, kind in i.fields):
        raise ValueError(f"{spec} has an input text longer than {LONGEST_TEXT}")
    taken = sorted({f.name for f in rules.fields} & set(ENTRY_KEYS))
    if taken:
        raise ValueError(f"{spec} names a field {', '.join(taken)}: a key of every entry")
    return game  # type: ignore[no-any-return]  # checked above, as far as Python can

"""The sans-IO hot paths are compiled to C with mypyc (docs/architecture.md, "Compiled
core"): the same typed Python, about twice as fast, because a zone of thousands spends
its tick in the zones' loops and its inputs in the WebSocket codec and messages.
OUTPOST_COMPILE=0 installs them as plain Python instead (for tracebacks through them,
or a machine without a C compiler). Everything else is in pyproject.toml."""

import os
from pathlib import Path

from setuptools import setup

COMPILED = ["zones/simulation.py", "zones/snapshots.py", "zones/grid.py", "zones/interest.py",
            "zones/mirror.py", "rules/api.py", "rules/motion.py", "rules/walk.py",
            "rules/shooter/game.py", "server/ws/codec.py", "server/ws/messages.py"]

if os.environ.get("OUTPOST_COMPILE", "1") == "0":
    # Python would go on importing an earlier build in preference to the source.
    for source in map(Path, COMPILED):
        for built in source.parent.glob(f"{source.stem}.*.so"):
            built.unlink()
    setup()
else:
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED, opt_level="3", group_name="outpost_core"))

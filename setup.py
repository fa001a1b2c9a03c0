"""The sans-IO hot paths are compiled to C with mypyc (docs/architecture.md, "Compiled
core"): the same typed Python, about twice as fast, because a zone of thousands spends
its tick in the zones' loops and its inputs in the WebSocket codec and messages. The
per-socket loops' bytes are a small module written in C (server/ws/_wire.c; "A native
wire module"). OUTPOST_COMPILE=0 installs all of it as plain Python instead (for
tracebacks through them, or a machine without a C compiler): server/ws/wire.py then
takes its pure-Python twin. Everything else is in pyproject.toml."""

import os
from pathlib import Path

from setuptools import Extension, setup

COMPILED = ["zones/simulation.py", "zones/snapshots.py", "zones/grid.py", "zones/interest.py",
            "zones/mirror.py", "rules/api.py", "rules/motion.py", "rules/walk.py",
            "rules/shooter/game.py", "server/ws/codec.py", "server/ws/messages.py"]

NATIVE = Extension("server.ws._wire", ["server/ws/_wire.c"],
                   extra_compile_args=["-O2", "-Wall", "-Werror"])

if os.environ.get("OUTPOST_COMPILE", "1") == "0":
    # Python would go on importing an earlier build in preference to the source.
    for source in map(Path, COMPILED):
        for built in source.parent.glob(f"{source.stem}.*.so"):
            built.unlink()
    for built in Path("server/ws").glob("_wire.*.so"):
        built.unlink()
    setup()
else:
    from mypyc.build import mypycify

    setup(ext_modules=[*mypycify(COMPILED, opt_level="3", group_name="outpost_core"), NATIVE])

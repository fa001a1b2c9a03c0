"""Zones: the simulation, who sees whom, the zone actor and its hosting.

The hot paths are compiled with mypyc when installed (setup.py, COMPILED): here, in
server/ws/ and the rules/ a zone runs each tick. Python imports a compiled module in
preference to its source, so a source edited since its build would be silently
ignored: zones and server.ws refuse to import instead (zones checks rules/ too, which
imports nothing of ours, and is only run by a zone). An installed package (a wheel in
site-packages, as in the image) is not checked: nobody edits it, and pip writes a
wheel's files in its own order, stamped as written, so a source may come out newer."""

from pathlib import Path

INSTALLED = {"site-packages", "dist-packages"}


def refuse_stale_builds(here: Path) -> None:
    if INSTALLED & set(here.parts):
        return
    for built in here.glob("*.so"):
        stem = built.name.split(".")[0]
        for source in (built.with_name(f"{stem}.py"), built.with_name(f"{stem}.c")):
            if source.exists() and source.stat().st_mtime > built.stat().st_mtime:
                raise ImportError(f"{source} was edited after it was compiled: rebuild "
                                  "with `make lint` (or `pip install -e .`), or remove "
                                  f"{built.name} to run the source")


refuse_stale_builds(Path(__file__).parent)
for _games in ("rules", "rules/shooter"):
    refuse_stale_builds(Path(__file__).parent.parent / _games)

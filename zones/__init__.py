"""Zones: the simulation, who sees whom, the zone actor and its hosting.

simulation.py, snapshots.py and interest.py are compiled with mypyc when installed, and
so are server/ws/codec.py and messages.py (setup.py). Python imports a compiled module
in preference to its source, so a source edited since its build would be silently
ignored: both packages refuse to import instead."""

from pathlib import Path


def refuse_stale_builds(here: Path) -> None:
    for built in here.glob("*.so"):
        source = built.with_name(built.name.split(".")[0] + ".py")
        if source.exists() and source.stat().st_mtime > built.stat().st_mtime:
            raise ImportError(f"{source} was edited after it was compiled: rebuild with "
                              "`make lint` (or `pip install -e .`), or remove "
                              f"{built.name} to run the source")


refuse_stale_builds(Path(__file__).parent)

"""The layout keeps its promises (docs/architecture.md, "Packages and their arrows"): the
packages import one way only, no module imports another that imports it back, the
sans-IO cores import no IO library, and no test imports another test module.

Rules: pure logic over the source files (their `import` statements, read with ast).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "console", "zones", "rules", "characters", "bus", "auth", "persistence",
            "bench", "examples", "tests")
# What each package may import of ours (besides itself). A game's rules import only the
# rules API: examples/ are games as an author outside would write them.
ARROWS = {
    "persistence": set(),
    "rules": set(),
    "examples": {"rules"},
    "bus": {"persistence"},
    "auth": {"bus", "persistence"},
    "characters": {"bus", "persistence"},
    "zones": {"bus", "persistence", "characters", "rules"},
    "console": {"auth", "zones", "characters", "bus", "persistence"},
    "server": {"console", "auth", "zones", "rules", "characters", "bus", "persistence"},
    "bench": {"server", "zones", "rules"},  # load scripts, and the zone core measured bare
    "tests": {"server", "console", "zones", "rules", "characters", "bus", "auth", "persistence",
              "bench", "examples"},
}
SANS_IO = ("zones/simulation.py", "zones/known.py", "zones/interest.py", "zones/mirror.py",
           "server/ws/codec.py", "server/ws/messages.py", "rules/api.py", "rules/motion.py",
           "rules/walk.py", "rules/shooter/game.py")
IO_LIBRARIES = {"trio", "trio_asyncio", "asyncio", "asyncpg", "redis", "nats", "socket"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES
            for path in (ROOT / package).rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The modules `path` imports: ours by full name (a `from package import module`
    counts as the module), anything else by its top-level name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in known)
    return {name if name in known else name.split(".")[0] for name in found}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) & known - {name} for name, path in found.items()}


def test_packages_import_one_way() -> None:
    wrong = [f"{module} imports {target}"
             for module, targets in graph().items() for target in targets
             if (top := module.split(".")[0]) != (other := target.split(".")[0])
             and other not in ARROWS[top]]
    assert not wrong, wrong


def test_no_module_imports_one_that_imports_it_back() -> None:
    edges = graph()
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(edges.get(module, ())):
            if target in path:
                cycles.append([*path[path.index(target):], target])
            elif len(path) < 12:
                visit(target, [*path, target])

    for module in sorted(edges):
        visit(module, [module])
    assert not cycles, cycles[:5]


def test_the_sans_io_cores_import_no_io() -> None:
    known = set(modules())
    for relative in SANS_IO:
        used = imports(ROOT / relative, known)
        assert not used & IO_LIBRARIES, (relative, used & IO_LIBRARIES)


def test_no_test_imports_another_test_module() -> None:
    for name, targets in graph().items():
        if name.startswith("tests."):
            assert not [t for t in targets if t.startswith("tests.test_")], (name, targets)

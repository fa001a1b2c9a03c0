"""The package builds quietly and carries its data (pyproject.toml, [tool.setuptools]).

Rules: a real setuptools build (the virtualenv's own, plain Python: OUTPOST_COMPILE=0) of
a copy of the sources in a temporary folder, so the checkout's compiled modules stay.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_build_installs_the_static_files_without_a_warning_about_them(
    tmp_path: Path,
) -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    source = tmp_path / "source"
    for top in {name.split(".")[0] for name in config["packages"]}:
        shutil.copytree(ROOT / top, source / top,
                        ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")],
        cwd=source, env={"OUTPOST_COMPILE": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=False, timeout=60)
    assert built.returncode == 0, built.stderr
    assert "server.http.static" not in built.stderr, built.stderr
    static = {p.name for p in (tmp_path / "lib" / "server" / "http" / "static").iterdir()}
    assert static == {p.name for p in (ROOT / "server" / "http" / "static").iterdir()}
    assert list((tmp_path / "lib" / "persistence" / "migrations").glob("*.sql"))

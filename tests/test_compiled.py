"""The hot sans-IO modules run compiled (setup.py), and a compiled module whose source
was edited since is refused rather than run stale (zones/__init__.py).

Rules: pure logic, on the installed modules and on files in a temporary folder."""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path

import pytest

import zones

ROOT = Path(__file__).resolve().parent.parent


def compiled_sources() -> list[str]:
    """setup.py's COMPILED list, read without running setup.py."""
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "COMPILED":
            value = ast.literal_eval(node.value)
            assert isinstance(value, list)
            return [str(v) for v in value]
    raise AssertionError("setup.py has no COMPILED list")


def test_the_core_is_compiled_unless_asked_not_to_be() -> None:
    sources = compiled_sources()
    assert "zones/interest.py" in sources
    modules = [importlib.import_module(s.removesuffix(".py").replace("/", ".")) for s in sources]
    built = {Path(m.__file__ or "").suffix for m in modules}
    assert built == ({".py"} if os.environ.get("OUTPOST_COMPILE") == "0" else {".so"})


@pytest.mark.parametrize("stem, source_name", [("interest", "interest.py"),
                                                ("_wire", "_wire.c")])  # mypyc's, and C
def test_a_source_edited_after_its_build_is_refused(tmp_path: Path, stem: str,
                                                    source_name: str) -> None:
    built = tmp_path / f"{stem}.cpython-311-x86_64-linux-gnu.so"
    source = tmp_path / source_name
    source.write_text("")
    built.write_bytes(b"")
    os.utime(source, (1_000, 1_000))
    os.utime(built, (2_000, 2_000))
    zones.refuse_stale_builds(tmp_path)  # built after its source: fine

    os.utime(source, (3_000, 3_000))
    with pytest.raises(ImportError, match=rf"{source_name} was edited after it was compiled"):
        zones.refuse_stale_builds(tmp_path)


def test_an_installed_package_is_not_checked(tmp_path: Path) -> None:
    """pip writes a wheel's files in its own order, stamped as written: in site-packages a
    source may be newer than its build, and nobody edited it (the image's install)."""
    installed = tmp_path / "lib" / "python3.11" / "site-packages" / "zones"
    installed.mkdir(parents=True)
    (installed / "interest.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    source = installed / "interest.py"
    source.write_text("")
    os.utime(source, (3_000, 3_000))
    os.utime(installed / "interest.cpython-311-x86_64-linux-gnu.so", (2_000, 2_000))
    zones.refuse_stale_builds(installed)


def test_the_c_wire_module_is_built_unless_asked_not_to_be() -> None:
    from server.ws import wire

    assert (wire.NATIVE is None) == (os.environ.get("OUTPOST_COMPILE") == "0")
    assert wire.IMPL is (wire.NATIVE or wire.PYTHON)  # OUTPOST_NATIVE=0 not set here


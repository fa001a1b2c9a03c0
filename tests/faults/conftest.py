"""The fault suite's rules (tests/faults/): its own Postgres, Redis and NATS, durable
(Postgres commits synchronously, so a `kill -9` loses nothing it acknowledged), healed
after every scenario like the main suite's; and the table of every scenario's figures
at the end of the run (also in tests/artifacts/faults.txt)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.devstack import DevStack
from tests.faults.ledger import TABLE, table

ARTIFACT = Path(__file__).parent.parent / "artifacts" / "faults.txt"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """Overrides the main suite's (fsync and synchronous_commit off) for these tests."""
    with DevStack(Path(tmp_path_factory.mktemp("fault-services")), durable=True) as running:
        yield running


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TABLE:
        return
    lines = table()
    terminalreporter.write_sep("=", "fault suite")
    for line in lines:
        terminalreporter.write_line(line)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text("\n".join(lines) + "\n")

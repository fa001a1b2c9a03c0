"""compose.yaml against what Outpost reads and runs (docs/deploy.md).

Compose itself cannot run here (its Postgres, Redis and NATS images come from a
registry these machines do not reach; tests/test_image.py runs the Outpost image
itself). What can drift unnoticed is checked: each Outpost service's environment is a
configuration `outpost` accepts, together they run the Procfile's set, and each has a
health check and a grace period for its graceful stop.

Rules: compose.yaml is read as compose reads it (YAML merge keys); `${VAR:?message}`, a
variable compose refuses to start without, is given a value as an operator would.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from server.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "outpost:latest"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _procfile() -> set[tuple[str, ...]]:
    """The command of each Procfile line, after its `outpost`."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {tuple(line.split("outpost ", 1)[1].split()) for line in lines if line.strip()}


def test_compose_runs_the_procfiles_processes_each_with_a_valid_configuration() -> None:
    services = _compose()["services"]
    outposts = {name: service for name, service in services.items()
                if service.get("image") == IMAGE}
    commands = {tuple(service["command"]) for service in outposts.values()}
    assert commands == _procfile() | {("migrate",)}, commands
    for name, service in outposts.items():
        environment = {key: str(value) for key, value in service["environment"].items()}
        # An operator must choose the secret: compose refuses to start without it.
        assert re.fullmatch(r"\$\{JWT_SECRET:\?.+\}", environment["JWT_SECRET"]), name
        environment["JWT_SECRET"] = "a-secret-an-operator-generated-of-32-bytes"
        load_settings(environment)  # raises, naming the variable, if one is missing or bad
        assert service["stop_grace_period"] == "30s", name  # docs/deploy.md, "Stopping"
        if service["command"] == ["migrate"]:
            assert set(service["depends_on"]) == {"postgres"}, name
        else:
            assert set(service["depends_on"]) == {"postgres", "redis", "nats", "migrate"}, name
            assert service["healthcheck"]["test"][0] == "CMD", name

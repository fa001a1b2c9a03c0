"""bench/node_swarm.mjs, the v2 world swarm in Node.js (for swarms one Python core cannot
read), against a real server: its players join, move and read, every frame of its
checked clients decodes, and it reports world_swarm's keys.

Rules: a process of the suite's own (an api with its zone, a zone id of the test's
own); the users prepared by the Python swarm, as the Node one expects; Node from the
system (`make test` installs Debian's nodejs; without it the test says why it skips).
Nothing is timed: a count must be above zero, never a rate above a bar.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from server.config import Settings
from server.process import Roles
from tests.helpers import running_process

NODE = shutil.which("node") or shutil.which("nodejs")
PLAYERS = 6


async def _run(*command: str) -> dict[str, Any]:
    done = await trio.run_process(list(command), capture_stdout=True, capture_stderr=True,
                                  check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    report: dict[str, Any] = orjson.loads(done.stdout)
    return report


@pytest.mark.skipif(NODE is None, reason="no node: make test installs Debian's nodejs")
async def test_the_node_swarm_plays_and_reports_what_the_python_swarm_does(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    assert NODE is not None
    zone = f"swarm-{uuid.uuid4().hex[:8]}"
    own = dataclasses.replace(settings, world_zone_id=zone)
    users = tmp_path / "users.json"
    async with running_process(own, nursery, Roles(zones=(zone,))) as running:
        python = await _run(sys.executable, "-m", "bench.world_swarm", "--url", running.url,
                            "-n", str(PLAYERS), "--client", "raw", "--protocol", "v2",
                            "--users-file", str(users), "--duration", "1", "--ramp-s", "0.5",
                            "--warmup-s", "0", "--json")
        node = await _run(NODE, "bench/node_swarm.mjs", "--url", running.url,
                          "-n", str(PLAYERS), "--users-file", str(users), "--duration", "2",
                          "--ramp-s", "0.5", "--warmup-s", "0", "--check-every", "2",
                          "--json")
    for report in (python, node):
        assert report["joined"] == PLAYERS, report
        assert (report["errors"], report["closed"]) == (0, 0), report
        assert report["frames_failed"]["count"] == 0, report["frames_failed"]
    assert node["frames_checked"] > 0
    assert node["snapshots_per_s_per_client"]["min"] > 0
    assert node["moves_per_s_per_client"]["min"] > 0
    assert node["input_latency"]["samples"] > 0
    assert node["visible_per_snapshot"]["p50"] == PLAYERS  # everyone sees everyone here
    assert set(python) - set(node) <= {"deflate", "read_every", "spread", "view_radius",
                                       "server_cpu_percent_of_a_core"}, \
        "the Node swarm reports world_swarm's keys"

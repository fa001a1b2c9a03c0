"""A NATS cluster of three servers for the fault suite, from the same nats-server binary
as the embedded one (server/devstack.py): JetStream on each, routes to the other two, so
that streams and buckets made with three replicas survive the loss of any one server.
"""

from __future__ import annotations

import shutil
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from server.devstack import EmbeddedServer, StackError, free_port

SIZE = 3
HEALTHY_WITHIN_S = 60.0


@dataclass
class NatsCluster:
    nodes: dict[str, EmbeddedServer]  # by server name, as JetStream names stream leaders
    monitors: dict[str, int]  # each node's monitoring port

    @property
    def url(self) -> str:
        """NATS_URL for a process of the cluster: every server."""
        return ",".join(node.url for node in self.nodes.values())

    def serving(self, client: str) -> str:
        """The server a client (by its connection name) is connected to."""
        for name, port in self.monitors.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/connz", timeout=5) as page:
                if any(c.get("name") == client for c in orjson.loads(page.read())["connections"]):
                    return name
        raise AssertionError(f"{client} is connected to no server of the cluster")

    def healthy(self) -> bool:
        """Every server up, and JetStream on each current (a meta leader, streams in sync)."""
        return all(_healthz(port) for port in self.monitors.values())

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTHY_WITHIN_S
        while not self.healthy():
            if time.monotonic() > deadline:
                raise StackError(f"the NATS cluster is not healthy after {HEALTHY_WITHIN_S} s")
            time.sleep(0.1)


def _healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@contextmanager
def nats_cluster(root: Path) -> Iterator[NatsCluster]:
    binary = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "nats-server"
    ports = {f"n{i}": (free_port(), free_port(), free_port()) for i in range(1, SIZE + 1)}
    nodes = {}
    for name, (client, route, monitor) in ports.items():
        data = root / f"nats-{name}"
        data.mkdir(parents=True, exist_ok=True)
        routes = ",".join(f"nats://127.0.0.1:{other[1]}" for n, other in ports.items()
                          if n != name)
        nodes[name] = EmbeddedServer(
            name=f"nats-{name}", data_dir=data, port=client, url=f"nats://127.0.0.1:{client}",
            argv=[binary, "-a", "127.0.0.1", "-p", str(client), "-js", "-sd", str(data),
                  "-m", str(monitor), "--server_name", name, "--cluster_name", "outpost",
                  "--cluster", f"nats://127.0.0.1:{route}", "--routes", routes])
    cluster = NatsCluster(nodes, {name: monitor for name, (_, _, monitor) in ports.items()})
    try:
        for node in nodes.values():
            node.start()  # its client port: JetStream waits for the others
        cluster.wait_healthy()
        yield cluster
    finally:
        for node in nodes.values():
            node.stop()

"""The supported setup, end to end: Debian's haproxy (make test installs it) terminating
TLS in front of an api, run with docs/haproxy.cfg itself (its port, certificate and api
address replaced), and a certificate authority made for the test (trustme) that only
the test's clients trust. A session over https:// and wss://; the login limit and the
connection cap counting each client behind the proxy by its own address (clients on
127.0.0.2 and 127.0.0.3), which a forged X-Forwarded-For does not change; a PROXY
header from a peer that is not trusted is bad HTTP, and a trusted peer's connection
without one is closed, logged and counted.

Skipped, loudly, where haproxy is not installed (`make test` installs it when root).
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trustme

from server.config import Settings
from server.process import Roles, Running
from server.proxy import UNTRUSTED, networks
from tests.helpers import Lines, bearer, eventually, metric, running_process, unique_name
from tests.world import WORLD_PATH, connect, joined, new_player, snapshot_with

CONFIG = Path(__file__).parent.parent / "docs" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy")
# Players, as the api should see them (the proxy's own health checks: 127.0.0.1).
CLIENT_A, CLIENT_B, CLIENT_C = "127.0.0.2", "127.0.0.3", "127.0.0.4"

pytestmark = pytest.mark.skipif(
    HAPROXY is None,
    reason="*** haproxy is not installed (`make test` installs it as root: "
           "apt-get install haproxy): the TLS proxy tests cannot run ***")


@dataclasses.dataclass
class Proxied:
    api: Running  # reached only through the proxy (its TRUSTED_PROXIES: 127.0.0.1)
    url: str  # https://127.0.0.1:<port>, the proxy
    tls: ssl.SSLContext  # a client's: trusts the test's CA only

    def client(self, address: str = "127.0.0.1") -> httpx.AsyncClient:
        """An https client of the proxy whose connections come from `address`."""
        return httpx.AsyncClient(base_url=self.url, timeout=10, transport=(
            httpx.AsyncHTTPTransport(local_address=address, verify=self.tls)))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def haproxy_config(port: int, pem: Path, api_url: str) -> str:
    """docs/haproxy.cfg with the test's port, certificate and api in place."""
    text = CONFIG.read_text()
    for sample, ours in ((" :443 ", f" 127.0.0.1:{port} "), ("/etc/haproxy/outpost.pem", str(pem)),
                         ("api1 127.0.0.1:8000", "api1 " + api_url.removeprefix("http://"))):
        assert text.count(sample) == 1, f"docs/haproxy.cfg no longer has {sample!r} once"
        text = text.replace(sample, ours)
    return text


@asynccontextmanager
async def proxied(settings: Settings, nursery: trio.Nursery, tmp_path: Path,
                  **changes: Any) -> AsyncIterator[Proxied]:
    """An api (zone z1 in it) behind haproxy, which it trusts; `changes` to its settings.
    Its metrics on a port of their own: a client of its API port from 127.0.0.1 would be
    the proxy, and must speak the PROXY protocol."""
    ca = trustme.CA()
    pem = tmp_path / "outpost.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    api_settings = dataclasses.replace(settings, trusted_proxies=networks("127.0.0.1"),
                                       metrics_port=0, **changes)
    async with running_process(api_settings, nursery, Roles(zones=("z1",))) as api:
        port = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(haproxy_config(port, pem, api.url))
        assert HAPROXY is not None
        with (tmp_path / "haproxy.log").open("wb") as log:
            process = await trio.lowlevel.open_process([HAPROXY, "-db", "-f", str(config)],
                                                       stdout=log, stderr=log)
        try:
            url = f"https://127.0.0.1:{port}"
            async with httpx.AsyncClient(verify=tls, timeout=5) as probe:

                async def answers() -> bool:
                    try:
                        return (await probe.get(url + "/healthz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(answers, "haproxy to serve the api over TLS")
            yield Proxied(api, url, tls)
        finally:
            process.terminate()
            with trio.move_on_after(5) as waiting:
                waiting.shield = True
                await process.wait()
            if process.returncode is None:
                process.kill()


async def test_a_session_over_https_and_wss(settings: Settings, nursery: trio.Nursery,
                                            tmp_path: Path) -> None:
    async with proxied(settings, nursery, tmp_path) as proxy, proxy.client() as http:
        me = await new_player(http, "Tunneller")
        login = await http.post("/v1/auth/login", json={"username": me["username"],
                                                         "password": me["password"]})
        assert login.status_code == 200, login.text
        token = login.json()["token"]
        listed = await http.get("/v1/characters", headers=bearer(token))
        assert [c["id"] for c in listed.json()["characters"]] == [me["character"]["id"]]
        world = proxy.url.replace("https://", "wss://") + WORLD_PATH + f"?token={token}"
        async with connect(world, ssl_context=proxy.tls) as conn:
            welcome = await joined(conn, me["character"]["id"])
            assert welcome["zone"] == "z1"
            await snapshot_with(conn, me["character"]["id"], lambda entry: True)
        # Every connection haproxy opened (health checks too) began with a valid header.
        assert await metric(proxy.api.metrics_url, "outpost_proxy_headers_refused_total") == 0


async def test_a_plain_client_gets_no_answer_in_clear(settings: Settings, nursery: trio.Nursery,
                                                      tmp_path: Path) -> None:
    """The proxy's port speaks TLS only: http:// to it is not served."""
    async with proxied(settings, nursery, tmp_path) as proxy:
        with pytest.raises(httpx.TransportError):
            async with httpx.AsyncClient(timeout=5) as plain:
                await plain.get(proxy.url.replace("https://", "http://") + "/healthz")


async def test_the_login_limit_counts_each_client_not_the_proxy(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path, lines: Lines
) -> None:
    limit = 3
    async with (proxied(settings, nursery, tmp_path, login_rate_per_address=limit) as proxy,
                proxy.client(CLIENT_A) as a, proxy.client(CLIENT_B) as b):
        # A claims to be B: the header is the client's own to write, so nobody reads it.
        forged = {"X-Forwarded-For": CLIENT_B, "Forwarded": f"for={CLIENT_B}"}

        async def attempt(client: httpx.AsyncClient, **headers: str) -> int:
            response = await client.post("/v1/auth/login", headers=headers, json={
                "username": unique_name(), "password": "wrong password"})
            return response.status_code

        assert [await attempt(a, **forged) for _ in range(limit + 1)] == [401] * limit + [429]
        assert await attempt(b) == 401  # B's own attempts are its own
        assert await attempt(a) == 429
        # And the request lines name each client, not the proxy nor what A claimed (each
        # is written once its answer is sent: the last may come after the answer).
        async def logged() -> Counter[tuple[str, str | None]]:
            return Counter((line["message"].split(" in ")[0], line.get("client"))
                           for line in lines.lines
                           if line["message"].startswith("POST /v1/auth/login"))

        async def all_logged() -> bool:
            return (await logged()).total() == limit + 3

        await eventually(all_logged, "every login's request line")
        assert await logged() == {("POST /v1/auth/login 401", CLIENT_A): limit,
                                  ("POST /v1/auth/login 429", CLIENT_A): 2,
                                  ("POST /v1/auth/login 401", CLIENT_B): 1}


async def test_the_connection_cap_counts_each_client_not_the_proxy(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path, lines: Lines
) -> None:
    async with proxied(settings, nursery, tmp_path, max_connections_per_address=1) as proxy:
        async with proxy.client(CLIENT_C) as setup:
            me = await new_player(setup)
        # A world socket from A, upgraded (so the api holds it): A's one connection.
        port = int(proxy.url.rsplit(":", 1)[1])
        tcp = await trio.open_tcp_stream("127.0.0.1", port, local_address=CLIENT_A)
        async with trio.SSLStream(tcp, proxy.tls, server_hostname="127.0.0.1") as world:
            await world.send_all(
                f"GET {WORLD_PATH}?token={me['token']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
            with trio.fail_after(10):
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await world.receive_some(4096)
            assert head.startswith(b"HTTP/1.1 101 "), head
            async with proxy.client(CLIENT_A) as a, proxy.client(CLIENT_B) as b:
                refused = await a.get("/healthz")
                assert refused.status_code == 429, refused.text
                assert refused.json()["error"]["code"] == "rate_limited"
                assert (await b.get("/healthz")).status_code == 200

            async def opened() -> list[str | None]:  # the session's line, naming A
                return [line.get("client") for line in lines.lines if line["message"]
                        .startswith(f"world session of user {me['user_id']} opened")]

            assert await eventually(opened, "the world session's first line") == [CLIENT_A]


async def test_a_forged_proxy_header_from_an_untrusted_peer_is_bad_http(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with proxied(settings, nursery, tmp_path) as proxy:
        host, port = proxy.api.url.removeprefix("http://").split(":")
        for header in (b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 80\r\n",
                       b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([203, 0, 113, 9])
                       + bytes([127, 0, 0, 1]) + b"\x0f\xa0\x00\x50"):
            stream = await trio.open_tcp_stream(host, int(port), local_address=CLIENT_A)
            async with stream:
                await stream.send_all(header + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = await received_all(stream)
            status, _, body = answer.partition(b"\r\n\r\n")
            assert status.startswith(b"HTTP/1.1 400 "), answer
            assert orjson.loads(body) == {"error": {"code": "validation_failed",
                                                    "message": UNTRUSTED}}


async def test_a_trusted_peer_without_a_header_is_closed_and_counted(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with proxied(settings, nursery, tmp_path) as proxy:
        before = await metric(proxy.api.metrics_url, "outpost_proxy_headers_refused_total")
        host, port = proxy.api.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))  # from 127.0.0.1: the proxy's
        async with stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await received_all(stream) == b""  # closed without an answer
        after = await metric(proxy.api.metrics_url, "outpost_proxy_headers_refused_total")
        assert after == before + 1


async def received_all(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes (bounded)."""
    data = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data

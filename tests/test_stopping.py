"""A process stopped with SIGINT (Ctrl-C) or SIGTERM (README, "Stopping"): the api stops
taking connections at once, answers what still arrives on kept-alive connections with
503, finishes, and says it stopped.

Rules: a real `outpost api` subprocess against the session's services, talked to over
loopback sockets (one HTTP/1.1 request at a time, written by hand so that the test
knows which connection each goes on). Waits are bounded.
"""

from __future__ import annotations

import signal
from functools import partial
from pathlib import Path

import trio

from server.config import Settings
from tests.helpers import eventually
from tests.processes import process_env, started

STOPPED_WITHIN_S = 10


async def _request(stream: trio.SocketStream, path: str) -> bytes:
    """One GET on a kept-alive connection; the answer's head and body as they came (b""
    if the server closed the connection instead)."""
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    answer = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in answer or not _whole(answer):
            chunk = await stream.receive_some(65536)
            if not chunk:
                return answer
            answer += chunk
    return answer


def _whole(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


async def _refused(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:  # trio's own, for ECONNREFUSED: nobody listens
        return True
    await stream.aclose()
    return False


async def test_sigint_stops_taking_connections_at_once_and_says_stopped(
    settings: Settings, tmp_path: Path
) -> None:
    async with started(tmp_path, "api", env=process_env(settings)) as api:
        port = int(api.url.rsplit(":", 1)[1])
        kept = await trio.open_tcp_stream("127.0.0.1", port)
        assert (await _request(kept, "/healthz")).startswith(b"HTTP/1.1 200")
        # Connected, silent: the server accepted it before the probe after it (the accept
        # queue is first in, first out) and waits for its first request.
        fresh = await trio.open_tcp_stream("127.0.0.1", port)
        async with await trio.open_tcp_stream("127.0.0.1", port) as probe:
            assert (await _request(probe, "/healthz")).startswith(b"HTTP/1.1 200")
        signalled_at = trio.current_time()
        api.process.send_signal(signal.SIGINT)
        # At once: the signal is handled within milliseconds; a second of polls at most.
        await eventually(partial(_refused, port), "the port to refuse connections", tries=10)
        # Connections from before: what still comes on them is not served.
        late = await _request(fresh, "/healthz")
        assert late.startswith(b"HTTP/1.1 503"), late
        assert b'"unavailable"' in late and b"Connection: close" in late, late
        late = await _request(kept, "/healthz")
        assert late == b"" or late.startswith(b"HTTP/1.1 503"), late
        await kept.aclose()
        await fresh.aclose()
        with trio.fail_after(STOPPED_WITHIN_S):
            assert await api.process.wait() == 0
        assert trio.current_time() - signalled_at < STOPPED_WITHIN_S
        output = api.log.read_text()
        assert "outpost: stopped" in output.splitlines(), output[-2000:]

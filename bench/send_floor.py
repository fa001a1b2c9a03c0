"""Send floor: what the kernel alone charges for a zone's fan-out, on this machine.

A bare loop sends one snapshot-sized frame to each of N loopback sockets per
tick (a non-blocking `send`, nothing else) while a reader process on another
core drains them, and reports the sender's CPU. Machines differ (one of ours
took 13 us per 48 KB send, another 22 us), so compare world_swarm's server CPU
with this floor measured in the same sitting, not with a number from elsewhere.

    taskset -c 0 python -m bench.send_floor -n 500 --bytes 49000 --reader-cpu 1
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import time

from bench.report import emit


def drain(port: int, n: int, cpu: int) -> None:
    """The reader: connect n sockets and read until the sender closes them all."""
    os.sched_setaffinity(0, {cpu})
    epoll, open_ = select.epoll(), {}
    for _ in range(n):
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setblocking(False)
        epoll.register(conn.fileno(), select.EPOLLIN)
        open_[conn.fileno()] = conn
    buffer = bytearray(1 << 20)
    while open_:
        for fd, _ in epoll.poll():
            try:
                received = open_[fd].recv_into(buffer)
            except BlockingIOError:
                continue
            if not received:
                epoll.unregister(fd)
                open_.pop(fd).close()


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="sockets (players)")
    parser.add_argument("--bytes", type=int, default=49_000, help="frame size")
    parser.add_argument("--tick-rate", type=float, default=20.0)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--reader-cpu", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    listener = socket.create_server(("127.0.0.1", 0), backlog=args.n)
    port = listener.getsockname()[1]
    if (child := os.fork()) == 0:
        drain(port, args.n, args.reader_cpu)
        os._exit(0)
    conns = [listener.accept()[0] for _ in range(args.n)]
    for conn in conns:
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame, period, short = b"x" * args.bytes, 1 / args.tick_rate, 0
    started, cpu_started = time.perf_counter(), cpu_s()
    for tick in range(1, args.ticks + 1):
        for conn in conns:
            try:
                short += conn.send(frame) < args.bytes
            except BlockingIOError:
                short += 1
        time.sleep(max(0.0, started + tick * period - time.perf_counter()))
    elapsed, cpu = time.perf_counter() - started, cpu_s() - cpu_started
    for conn in conns:
        conn.close()
    os.waitpid(child, 0)
    emit(f"send_floor: {args.n} sockets, {args.bytes} bytes at {args.tick_rate} Hz", {
        "cpu_percent_of_a_core": round(100 * cpu / elapsed, 1),
        "us_per_send": round(1e6 * cpu / (args.ticks * args.n), 1),
        "sends_the_kernel_did_not_take_whole": short}, as_json=args.json)


if __name__ == "__main__":
    main()

"""Send floor: what the kernel alone charges for a zone's fan-out, on this machine.

A bare loop sends one snapshot-sized frame to each of N loopback sockets per
tick (a non-blocking `send`, nothing else) while a reader process on another
core drains them, and reports the sender's CPU. Machines differ (one of ours
took 13 us per 48 KB send, another 22 us), so compare world_swarm's server CPU
with this floor measured in the same sitting, not with a number from elsewhere.

With --moves-hz the reader also sends each socket a move-sized frame at that rate
(spread over the period, as the swarm does), and the loop reads them between ticks
through one epoll, as the server's hub does: the floor of the server's whole I/O,
one `send` per player per tick and one `recv` per move.

    taskset -c 0 python -m bench.send_floor -n 500 --bytes 49000 --reader-cpu 1
    taskset -c 0 python -m bench.send_floor -n 2000 --bytes 434 --moves-hz 10 --reader-cpu 1
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import time
from contextlib import suppress

from bench.report import emit

MOVE_SLOTS = 10  # the reader's moves go out a tenth of the sockets at a time


def drain(port: int, n: int, cpu: int, moves_hz: float, move_bytes: int) -> None:
    """The reader: connect n sockets, read until the sender closes them all, and (with
    `moves_hz`) send each a move at that rate."""
    os.sched_setaffinity(0, {cpu})
    epoll, open_ = select.epoll(), {}
    for _ in range(n):
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        epoll.register(conn.fileno(), select.EPOLLIN)
        open_[conn.fileno()] = conn
    slots = [list(open_.values())[slot::MOVE_SLOTS] for slot in range(MOVE_SLOTS)]
    move, slot_s = b"m" * move_bytes, 1 / (moves_hz * MOVE_SLOTS) if moves_hz else 0.0
    next_slot, slot = time.perf_counter(), 0
    buffer = bytearray(1 << 20)
    while open_:
        timeout = max(0.0, next_slot - time.perf_counter()) if moves_hz else None
        for fd, _ in epoll.poll(timeout):
            try:
                received = open_[fd].recv_into(buffer)
            except BlockingIOError:
                continue
            except OSError:
                received = 0
            if not received:
                epoll.unregister(fd)
                open_.pop(fd).close()
        if moves_hz and time.perf_counter() >= next_slot:
            for conn in slots[slot]:
                if conn.fileno() in open_:
                    with suppress(OSError):  # full, or closed by the sender at the end
                        conn.send(move)
            slot, next_slot = (slot + 1) % MOVE_SLOTS, next_slot + slot_s


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="sockets (players)")
    parser.add_argument("--bytes", type=int, default=49_000, help="frame size")
    parser.add_argument("--tick-rate", type=float, default=20.0)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--moves-hz", type=float, default=0.0,
                        help="moves each socket sends back a second (0: none)")
    parser.add_argument("--move-bytes", type=int, default=48,
                        help="a move's frame size (a v2 move, masked, is about 48)")
    parser.add_argument("--reader-cpu", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    listener = socket.create_server(("127.0.0.1", 0), backlog=args.n)
    port = listener.getsockname()[1]
    if (child := os.fork()) == 0:
        drain(port, args.n, args.reader_cpu, args.moves_hz, args.move_bytes)
        os._exit(0)
    conns = [listener.accept()[0] for _ in range(args.n)]
    epoll, by_fd = select.epoll(), {conn.fileno(): conn for conn in conns}
    for conn in conns:
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        epoll.register(conn.fileno(), select.EPOLLIN)
    frame, period, short = b"x" * args.bytes, 1 / args.tick_rate, 0
    buffer, recvs = bytearray(65536), 0
    started, cpu_started = time.perf_counter(), cpu_s()
    for tick in range(1, args.ticks + 1):
        for conn in conns:
            try:
                short += conn.send(frame) < args.bytes
            except BlockingIOError:
                short += 1
        # Until the next tick: read what has come in (nothing without --moves-hz).
        while (left := started + tick * period - time.perf_counter()) > 0:
            for fd, _ in epoll.poll(left):
                try:
                    by_fd[fd].recv_into(buffer)
                    recvs += 1
                except BlockingIOError:
                    pass
    elapsed, cpu = time.perf_counter() - started, cpu_s() - cpu_started
    for conn in conns:
        conn.close()
    os.waitpid(child, 0)
    emit(f"send_floor: {args.n} sockets, {args.bytes} bytes at {args.tick_rate} Hz"
         + (f", {args.moves_hz:g} moves/s each back" if args.moves_hz else ""), {
        "cpu_percent_of_a_core": round(100 * cpu / elapsed, 1),
        "us_per_send": round(1e6 * cpu / (args.ticks * args.n), 1),
        "recvs_per_s": round(recvs / elapsed),
        "sends_the_kernel_did_not_take_whole": short}, as_json=args.json)


if __name__ == "__main__":
    main()

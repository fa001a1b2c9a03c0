"""The one listening socket of a process (the API's port, or METRICS_PORT), bound before
anything else starts, so that a port taken or not ours fails at once in one line."""

from __future__ import annotations

import errno
import os
import socket

BACKLOG = 1024


class CannotListen(Exception):
    """The port cannot be listened on; the message names the variable to change."""


def listen(host: str, port: int, variable: str) -> socket.socket:
    """A non-blocking socket listening on `host`:`port` (the setting `variable`)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:
        # By its errno (create_server's strerror adds the address again, as a tuple).
        why = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
        fix = (f"set {variable} to a free port" if exc.errno in (errno.EADDRINUSE, errno.EACCES)
               else "check HTTP_HOST")
        raise CannotListen(f"cannot listen on {host}:{port} ({why}): {fix}") from exc
    listener.setblocking(False)
    return listener

"""What the world's WebSocket edge of a process counts, for /metrics
(docs/operations.md): plain numbers the edge, its sessions and their outlets update."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

ABORTED = 1006  # closed without a close frame (broken, or dropped): RFC 6455's "abnormal"


@dataclass
class WireStats:
    sessions: int = 0  # open now
    bytes_sent: int = 0  # every byte written to world sockets, frames and handshakes
    closes: Counter[int] = field(default_factory=Counter)  # by the code the server sent
    faults: int = 0  # sessions ended by a fault of ours (1011), or connections it broke
    refused: Counter[str] = field(default_factory=Counter)  # connections, by the cap
    proxy_refused: int = 0  # connections from a trusted proxy without a valid PROXY header
    # zone -> [snapshots sent, snapshots skipped (a newer one came before it was sent)]
    snapshots: defaultdict[str, list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0]))

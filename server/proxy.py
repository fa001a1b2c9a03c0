"""The PROXY protocol (haproxy's proxy-protocol.txt, versions 1 and 2): how a proxy in
front of the API port (TLS-terminating, say) tells it the client's address.

A proxy sends one header at the very start of each connection it opens to us: a text
line (v1) or a binary block (v2). Only connections from TRUSTED_PROXIES are read for
one (server/ws/edge.py), and each of those must start with one; everybody else's bytes
are HTTP, so a client cannot claim an address. This is a parser of what a peer sends,
sans-IO: `parse` is given what has arrived so far and looks at a bounded prefix of it
(V1_MAX_BYTES, or V2_MAX_BYTES), so it is cheap however the bytes trickle in.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

V1_MAX_BYTES = 107  # the spec's bound on a v1 line, its CRLF included
V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_BYTES = 16  # signature, version and command, family and protocol, length
# The spec allows 64 KiB of addresses and TLVs; what haproxy sends (addresses, and the
# TLVs of send-proxy-v2-ssl, ALPN, the SNI, a unique id) is a few hundred bytes.
V2_MAX_BYTES = V2_FIXED_BYTES + 4096
STARTS = (V1_PREFIX, V2_SIGNATURE)  # how a header begins, in either version
# What a client that sends one is told (it is HTTP's bad request: no client may claim an
# address; an operator who sees it has not named the proxy in TRUSTED_PROXIES).
UNTRUSTED = ("a PROXY protocol header from an address that is not a trusted proxy "
             "(TRUSTED_PROXIES)")
_V2_ADDRESSES = {0x11: (4, 12), 0x21: (16, 36)}  # TCP over IPv4, IPv6: address size, block


@dataclass(frozen=True)
class Proxied:
    """A valid header: the client's address (None: the proxy's own connection, such as a
    health check, or a client it could not name: use the peer's), and its length."""

    address: str | None
    length: int


@dataclass(frozen=True)
class Refused:
    """Not a valid header; why, for the log."""

    reason: str


def parse(data: bytes | bytearray) -> Proxied | Refused | None:
    """The header at the start of `data`, a refusal, or None: too little to tell yet."""
    if data[:len(V1_PREFIX)] == V1_PREFIX[:len(data)]:
        return _v1(data)
    if data[:len(V2_SIGNATURE)] == V2_SIGNATURE[:len(data)]:
        return _v2(data)
    return Refused("no PROXY protocol header")


def _v1(data: bytes | bytearray) -> Proxied | Refused | None:
    end = data.find(b"\r\n", 0, V1_MAX_BYTES)
    if end < 0:
        return None if len(data) < V1_MAX_BYTES else Refused("a v1 header too long")
    try:
        line = bytes(data[:end]).decode("ascii")
    except UnicodeDecodeError:
        return Refused("a v1 header not in ASCII")
    parts = line.split(" ")
    if parts[1:2] == ["UNKNOWN"]:
        return Proxied(None, end + 2)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        return Refused("a v1 header not of the form PROXY TCP4|TCP6 src dst sport dport")
    _, family, source, destination, *ports = parts
    try:  # (a scope, "fe80::1%eth0", names no client: refused)
        addresses = [ipaddress.ip_address(a) for a in (source, destination) if "%" not in a]
    except ValueError:
        addresses = []
    if len(addresses) != 2:
        return Refused("a v1 header with a malformed address")
    if any(a.version != (4 if family == "TCP4" else 6) for a in addresses):
        return Refused(f"a v1 header with an address not of {family}")
    if not all(p.isascii() and p.isdigit() and len(p) <= 5 and int(p) <= 65535
               for p in ports):
        return Refused("a v1 header with a malformed port")
    return Proxied(str(addresses[0]), end + 2)


def _v2(data: bytes | bytearray) -> Proxied | Refused | None:
    if len(data) < V2_FIXED_BYTES:
        return None
    version_command, family_protocol, length = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2 or version_command & 0xF not in (0, 1):
        return Refused("a v2 header of an unknown version or command")
    total = V2_FIXED_BYTES + length
    if total > V2_MAX_BYTES:
        return Refused(f"a v2 header longer than {V2_MAX_BYTES} bytes")
    if len(data) < total:
        return None
    if version_command & 0xF == 0:  # LOCAL: the proxy's own connection (a health check)
        return Proxied(None, total)
    if family_protocol not in _V2_ADDRESSES:
        # UNSPEC or a Unix socket: the spec says to use the connection's own endpoints.
        # A datagram protocol cannot be what came over this TCP connection.
        if family_protocol & 0xF == 2:
            return Refused("a v2 header of a datagram protocol")
        return Proxied(None, total)
    size, block = _V2_ADDRESSES[family_protocol]
    if length < block:
        return Refused("a v2 header too short for its addresses")
    source = bytes(data[V2_FIXED_BYTES:V2_FIXED_BYTES + size])
    return Proxied(str(ipaddress.ip_address(source)), total)


def networks(raw: str) -> tuple[Network, ...]:
    """TRUSTED_PROXIES: comma-separated addresses and CIDRs (ValueError says which is not)."""
    found = []
    for item in (i.strip() for i in raw.split(",")):
        if item:
            try:
                found.append(ipaddress.ip_network(item))
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an address or a CIDR ({exc})") from None
    return tuple(found)


def trusted(peer: str, proxies: Iterable[Network]) -> bool:
    """Whether the connection's peer is one of `proxies` (an IPv4 peer of a dual-stack
    socket, ::ffff:10.0.0.1, counts as its IPv4 address)."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in proxies)

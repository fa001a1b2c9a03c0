"""The PROXY protocol parser (server/proxy.py), a parser of what a peer sends: any bytes
give an address, a refusal or "not yet", never an exception; a header is never refused
for arriving in pieces; it looks at a bounded prefix (a too-long header is refused, not
waited for); and TRUSTED_PROXIES' matching. Headers are built here as haproxy sends them
(the live test, tests/test_tls_proxy.py, has haproxy's own)."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.proxy import (
    V1_MAX_BYTES,
    V2_MAX_BYTES,
    V2_SIGNATURE,
    Proxied,
    Refused,
    networks,
    parse,
    trusted,
)


def v2(source: str, destination: str, *, command: int = 1, tlvs: bytes = b"") -> bytes:
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + struct.pack("!HH", 50000, 443) + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)


@pytest.mark.parametrize(("header", "address"), [
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n", "192.0.2.7"),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n", "2001:db8::7"),
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY UNKNOWN ffff:f...f:ffff 65535 65535\r\n", None),
    (v2("192.0.2.7", "10.0.0.1"), "192.0.2.7"),
    (v2("2001:db8::7", "2001:db8::1", tlvs=b"\x01\x00\x02h2"), "2001:db8::7"),
    (v2("192.0.2.7", "10.0.0.1", command=0), None),  # LOCAL: a health check
    (V2_SIGNATURE + b"\x21\x00\x00\x00", None),  # UNSPEC
])
def test_a_valid_header_names_the_client(header: bytes, address: str | None) -> None:
    assert parse(header + b"GET / HTTP/1.1\r\n") == Proxied(address, len(header))


@pytest.mark.parametrize("header", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # no header at all: a proxy without send-proxy
    b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n",  # a port missing
    b"PROXY TCP4 192.0.2.7  10.0.0.1 1 2\r\n",  # two spaces
    b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",  # not of its family
    b"PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n",  # a scope
    b"PROXY TCP4 192.0.2.7 10.0.0.1 1 65536\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 1 \xd9\xa3\r\n",  # not ASCII
    b"PROXY TCP4 192.0.2.007 10.0.0.1 1 2\r\n",
    b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
    b"PROXY TCP4 " + b"1" * V1_MAX_BYTES,  # too long, no CRLF: refused, not waited for
    V2_SIGNATURE + b"\x11\x11\x00\x0b" + b"\x00" * 11,  # too short for its addresses
    V2_SIGNATURE + b"\x12\x11\x00\x0c" + b"\x00" * 12,  # an unknown command
    V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,  # version 3
    V2_SIGNATURE + b"\x21\x12\x00\x0c" + b"\x00" * 12,  # UDP
    V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX_BYTES),  # too long to wait for
])
def test_an_invalid_header_is_refused(header: bytes) -> None:
    assert isinstance(parse(header), Refused)


@given(st.binary(max_size=V2_MAX_BYTES + 64))
def test_any_bytes_give_an_answer_never_an_exception(data: bytes) -> None:
    found = parse(data)
    assert found is None or isinstance(found, Refused) or 0 < found.length <= len(data)


@given(st.binary(max_size=512))
def test_any_bytes_after_a_signature_never_raise(rest: bytes) -> None:
    for start in (b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", V2_SIGNATURE + b"\x21"):
        parse(start + rest)


@given(st.one_of(
    st.tuples(ipv4, ipv4).map(lambda a: (f"PROXY TCP4 {a[0]} {a[1]} 1 65535\r\n".encode(),
                                         a[0])),
    st.tuples(ipv6, ipv6).map(lambda a: (f"PROXY TCP6 {a[0]} {a[1]} 0 80\r\n".encode(),
                                         a[0])),
    st.tuples(st.one_of(ipv4, ipv6)).map(lambda a: (v2(a[0], a[0]), a[0]))),
    st.binary(max_size=64))
def test_a_header_in_any_pieces_is_read_whole(case: tuple[bytes, str],
                                              after: bytes) -> None:
    header, address = case
    data = header + after
    for end in range(len(header)):  # not enough yet: wait, never refuse
        assert parse(data[:end]) is None, data[:end]
    assert parse(data) == Proxied(address, len(header))


@given(st.binary(min_size=V2_MAX_BYTES + 1, max_size=V2_MAX_BYTES + 64))
def test_past_the_bound_there_is_an_answer(data: bytes) -> None:
    assert parse(data) is not None  # a header or a refusal: never "wait for more"


def test_trusted_proxies() -> None:
    proxies = networks(" 10.0.0.0/8, 192.0.2.1 ,2001:db8::/32,")
    assert [trusted(a, proxies) for a in ("10.1.2.3", "192.0.2.1", "192.0.2.2",
                                          "2001:db8::9", "::ffff:10.0.0.1", "2001:db9::1",
                                          "not an address")] == [
        True, True, False, True, True, False, False]
    assert not trusted("127.0.0.1", networks(""))


@pytest.mark.parametrize("raw", ["10.0.0.1/8", "10.0.0.256", "proxy.example.com"])
def test_a_bad_trusted_proxy_is_named(raw: str) -> None:
    with pytest.raises(ValueError, match=repr(raw)):
        networks(f"127.0.0.1,{raw}")

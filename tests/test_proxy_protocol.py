"""The PROXY protocol parser (bastion.ssh.proxy_protocol): the specification's examples,
strict refusals, and properties over generated headers and arbitrary bytes."""

from __future__ import annotations

import ipaddress

import pytest
from front_door.proxy_relay import v1_header, v2_header
from hypothesis import given
from hypothesis import strategies as st

from bastion.ssh.proxy_protocol import (
    V1_MAX_LENGTH,
    V1_PREFIX,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    Endpoint,
    ProxyCommand,
    ProxyHeader,
    ProxyHeaderError,
    parse_header,
    starts_like_header,
)

SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


# ------------------------------------------------------------------ the specification's examples
@pytest.mark.parametrize(
    ("line", "source", "destination"),
    [
        (
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
            Endpoint("192.168.0.1", 56324),
            Endpoint("192.168.0.11", 443),
        ),
        (
            b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
            Endpoint("255.255.255.255", 65535),
            Endpoint("255.255.255.255", 65535),
        ),
        (  # the worst case of TCP6: 104 bytes
            b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
            b" ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
            Endpoint("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
            Endpoint("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
        ),
        (
            b"PROXY TCP6 2001:db8::1 2001:db8::2 0 22\r\n",
            Endpoint("2001:db8::1", 0),
            Endpoint("2001:db8::2", 22),
        ),
    ],
)
def test_v1_examples(line: bytes, source: Endpoint, destination: Endpoint) -> None:
    header = parse_header(line + SSH_BANNER)
    assert header == ProxyHeader(1, ProxyCommand.PROXY, source, destination, len(line))


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY UNKNOWN\r\n",
        # The worst case of the whole format: 107 bytes, addresses ignored.
        b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        b" ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
    ],
)
def test_v1_unknown_keeps_the_connections_own_address(line: bytes) -> None:
    assert len(line) <= V1_MAX_LENGTH
    header = parse_header(line + SSH_BANNER)
    assert header == ProxyHeader(1, ProxyCommand.PROXY, None, None, len(line))


def test_v2_example_ipv4_written_out_byte_by_byte() -> None:
    raw = bytes.fromhex(
        "0d0a0d0a000d0a515549540a"  # signature
        "21"  # version 2, PROXY
        "11"  # AF_INET, STREAM
        "000c"  # 12 bytes follow
        "c0a80001"  # 192.168.0.1
        "c0a8000b"  # 192.168.0.11
        "dc04"  # 56324
        "01bb"  # 443
    )
    header = parse_header(raw + SSH_BANNER)
    assert header == ProxyHeader(
        2,
        ProxyCommand.PROXY,
        Endpoint("192.168.0.1", 56324),
        Endpoint("192.168.0.11", 443),
        28,
    )


def test_v2_ipv6_with_tlvs_skipped() -> None:
    tlvs = b"\x04\x00\x00" + b"\x05\x00\x04abcd" + b"\x02\x00\x0bexample.org"
    raw = v2_header(("2001:db8::7", 50000), ("2001:db8::1", 22), tlvs=tlvs)
    header = parse_header(raw + SSH_BANNER)
    assert header is not None
    assert header.source == Endpoint("2001:db8::7", 50000)
    assert header.length == len(raw) == 16 + 36 + len(tlvs)


def test_v2_local_is_a_health_check_without_addresses() -> None:
    raw = bytes.fromhex("0d0a0d0a000d0a515549540a20000000")
    assert parse_header(raw) == ProxyHeader(2, ProxyCommand.LOCAL, None, None, 16)
    # LOCAL ignores whatever address block follows (the specification says so).
    with_addresses = v2_header(("10.0.0.1", 1), ("10.0.0.2", 2))
    local = with_addresses[:12] + b"\x20" + with_addresses[13:]
    assert parse_header(local) == ProxyHeader(
        2, ProxyCommand.LOCAL, None, None, len(with_addresses)
    )


# ------------------------------------------------------------------ strict refusals
@pytest.mark.parametrize(
    ("data", "why"),
    [
        (SSH_BANNER, "did not start with a PROXY protocol header"),
        (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "did not start"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "control byte 0x0a"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "control byte 0x0d"),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "single spaces"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "single spaces"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "single spaces"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY \r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "is not an IP address"),
        (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "is not an IP address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "not a plain IPv4 address"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not a plain IPv6 address"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "not a plain IPv6 address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "from 0 to 65535"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 022 2\r\n", "from 0 to 65535"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +22 2\r\n", "from 0 to 65535"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "from 0 to 65535"),
        (b"PROXY UNKNOWN " + b"a" * 100, "no CRLF within 107 bytes"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x00\r\n", "control byte 0x00"),
    ],
)
def test_v1_malformed_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(ProxyHeaderError, match=why):
        parse_header(data)


def _v2(ver_cmd: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([ver_cmd, family]) + len(body).to_bytes(2, "big") + body


IPV4_BODY = bytes(4) + bytes(4) + b"\x00\x01\x00\x02"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (_v2(0x11, 0x11, IPV4_BODY), "version 1, expected 2"),
        (_v2(0x31, 0x11, IPV4_BODY), "version 3, expected 2"),
        (_v2(0x22, 0x11, IPV4_BODY), "command 2"),
        (_v2(0x21, 0x00, b""), "unspecified protocol"),
        (_v2(0x21, 0x12, IPV4_BODY), "0x12 is not TCP"),  # UDP
        (_v2(0x21, 0x31, bytes(216)), "0x31 is not TCP"),  # Unix sockets
        (_v2(0x21, 0x11, IPV4_BODY[:11]), "too short for its addresses"),
        (_v2(0x21, 0x21, bytes(35)), "too short for its addresses"),
        (_v2(0x21, 0x11, IPV4_BODY + b"\x04\x00"), "inside a TLV"),
        (_v2(0x21, 0x11, IPV4_BODY + b"\x04\x00\x05abc"), "TLV of type 0x04 runs past"),
        (
            V2_SIGNATURE + b"\x21\x11" + (V2_MAX_LENGTH - 15).to_bytes(2, "big"),
            "longer than the",
        ),
        (V2_SIGNATURE[:11] + b"X", "did not start"),
    ],
)
def test_v2_malformed_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(ProxyHeaderError, match=why):
        parse_header(data)


def test_longest_v2_accepted_is_the_limit() -> None:
    tlv_room = V2_MAX_LENGTH - 16 - 12 - 3
    raw = _v2(0x21, 0x11, IPV4_BODY + b"\x04" + tlv_room.to_bytes(2, "big") + bytes(tlv_room))
    assert len(raw) == V2_MAX_LENGTH
    header = parse_header(raw)
    assert header is not None
    assert header.length == V2_MAX_LENGTH


def test_starts_like_header_tells_ssh_apart_on_its_first_byte() -> None:
    assert starts_like_header(b"S") is False
    assert starts_like_header(SSH_BANNER) is False
    assert starts_like_header(b"") is None
    assert starts_like_header(b"PROX") is None
    assert starts_like_header(b"PROXY ") is True
    assert starts_like_header(V2_SIGNATURE[:5]) is None
    assert starts_like_header(V2_SIGNATURE) is True
    assert starts_like_header(b"PROXY\r\n") is False


# ------------------------------------------------------------------ properties
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
endpoints = st.one_of(
    st.tuples(st.tuples(ipv4, ports), st.tuples(ipv4, ports)),
    st.tuples(st.tuples(ipv6, ports), st.tuples(ipv6, ports)),
)
tlv = st.tuples(st.integers(0, 255), st.binary(max_size=40)).map(
    lambda t: bytes([t[0]]) + len(t[1]).to_bytes(2, "big") + t[1]
)


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, tuple[str, int]]:
    client, server = draw(endpoints)
    if draw(st.booleans()):
        return v1_header(client, server), client
    tlvs = b"".join(draw(st.lists(tlv, max_size=4)))
    return v2_header(client, server, tlvs=tlvs), client


@given(headers(), st.binary(max_size=64))
def test_a_header_is_read_exactly_and_what_follows_is_left(
    made: tuple[bytes, tuple[str, int]], rest: bytes
) -> None:
    raw, client = made
    header = parse_header(raw + rest)
    assert header is not None
    assert header.length == len(raw)
    assert header.source == Endpoint(str(ipaddress.ip_address(client[0])), client[1])


def test_a_v1_header_cut_between_its_cr_and_lf_asks_for_more() -> None:
    raw = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 22\r\n"
    assert parse_header(raw[:-1]) is None
    with pytest.raises(ProxyHeaderError, match="control byte 0x0d"):
        parse_header(b"PROXY TCP4 203.0.113.7\r 192.0.2.1 51000 22\r\n")


@given(headers(), st.data())
def test_every_proper_prefix_of_a_header_asks_for_more(
    made: tuple[bytes, tuple[str, int]], data: st.DataObject
) -> None:
    raw, _ = made
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert parse_header(raw[:cut]) is None


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_header_more_or_a_clear_error(data: bytes) -> None:
    try:
        header = parse_header(data)
    except ProxyHeaderError as exc:
        header, error = None, str(exc)
    else:
        error = "-"
    assert error  # an operator-readable reason, never an empty message
    if header is not None:
        assert header.length <= len(data)


@given(
    st.sampled_from([V1_PREFIX, V2_SIGNATURE]),
    st.binary(max_size=200),
)
def test_bytes_after_a_signature_never_raise_anything_else(prefix: bytes, tail: bytes) -> None:
    try:
        header = parse_header(prefix + tail)
    except ProxyHeaderError:
        return
    if header is not None:
        assert header.length <= len(prefix + tail)
        if header.version == 1:
            assert header.length <= V1_MAX_LENGTH


@given(headers(), st.data())
def test_a_changed_signature_byte_is_refused(
    made: tuple[bytes, tuple[str, int]], data: st.DataObject
) -> None:
    raw, _ = made
    signature = 6 if raw.startswith(V1_PREFIX) else 12
    at = data.draw(st.integers(0, signature - 1))
    flip = data.draw(st.integers(1, 255))
    changed = raw[:at] + bytes([raw[at] ^ flip]) + raw[at + 1 :]
    with pytest.raises(ProxyHeaderError):
        parse_header(changed)

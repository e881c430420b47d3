"""OSPFv2 packets (RFC 2328 A.3), carried as QKDNL protocol 89 (SECOQC §2.5.1, App. B).

Every packet starts with the 24-byte common header (A.3.1)::

    0  Version (2)    1  Type    2  Packet length (bytes, header included)
    4  Router ID      8  Area ID
    12 Checksum       14 AuType  16 Authentication (8 bytes)

followed by the body of its type: 1 Hello (A.3.2), 2 Database Description (A.3.3),
3 Link State Request (A.3.4), 4 Link State Update (A.3.5), 5 Link State Ack (A.3.6).
Byte layouts: docs/wire/ospf.md.

The checksum is the RFC 1071 sum over the whole packet except the 8 authentication
bytes (A.3.1).  Q3P authenticates every frame, so qbb sends AuType 0 (Null); the
codec also carries AuType 1 (Simple, the 8 bytes are a password) and keeps the
authentication bytes as they are in both cases.  AuType 2 (cryptographic) changes the
checksum rule and appends a digest after the packet; it is refused in both directions.

Decoding is strict and canonical: the packet length must equal the buffer, checksums
must verify (the packet's here, each LSA's in :mod:`qbb.routing.lsa`), reserved bits
must be zero and list lengths must be whole multiples of their item size, so that
``encode_packet(decode_packet(b)) == b`` whenever the decode succeeds.

The construct structures below and :func:`decode_packet_spec` / :func:`encode_packet_spec`
are the specification.  :func:`decode_packet` / :func:`encode_packet` first try the
``struct`` fast path of :mod:`qbb.routing.fastpath`, which returns the specification's
result or ``None`` when the input is not a plain valid message; on ``None`` they run the
specification, which gives the same value or raises the precise error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Union

import construct as c

from qbb.codec import IPv4Address, fail, internet_checksum, require_bytes
from qbb.errors import EncodeError
from qbb.routing.common import (
    LAYER, EnumField, FlagField, Options, OptionsField, build_as, frozen_tuple, parse_at)
from qbb.routing.lsa import (
    LSA_HEADER_SIZE, Lsa, LsaHeader, as_ls_type, decode_lsa_at_spec,
    decode_lsa_header_at_spec, encode_lsa_header_spec, encode_lsa_spec)

__all__ = [
    "AuType", "DatabaseDescription", "DdFlags", "Hello", "LinkStateAck",
    "LinkStateRequest", "LinkStateUpdate", "LsRequest", "OspfPacket", "PacketType",
    "HEADER_SIZE", "decode_packet", "decode_packet_spec", "encode_packet",
    "encode_packet_spec", "packet_checksum"]

HEADER_SIZE = 24
_MAX_LENGTH = 0xFFFF


class PacketType(enum.IntEnum):
    """The Type field of the common header."""

    HELLO = 1
    DATABASE_DESCRIPTION = 2
    LINK_STATE_REQUEST = 3
    LINK_STATE_UPDATE = 4
    LINK_STATE_ACK = 5


class AuType(enum.IntEnum):
    """Authentication type (RFC 2328 D); qbb uses NULL, CRYPTOGRAPHIC is refused."""

    NULL = 0
    SIMPLE = 1
    CRYPTOGRAPHIC = 2


class DdFlags(enum.IntFlag):
    """Database Description flags: MS master, M more, I init."""

    MS = 0x01
    M = 0x02
    I = 0x04  # noqa: E741 - the RFC's name


@dataclass(frozen=True, kw_only=True)
class Hello:
    """Type 1: neighbour discovery and liveness (A.3.2)."""

    network_mask: str
    hello_interval: int = 10
    options: Options = Options.E
    router_priority: int = 1
    router_dead_interval: int = 40
    designated_router: str = "0.0.0.0"
    backup_designated_router: str = "0.0.0.0"
    neighbors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        frozen_tuple(self, "neighbors")


@dataclass(frozen=True, kw_only=True)
class DatabaseDescription:
    """Type 2: a slice of the sender's LSDB summary during adjacency forming (A.3.3)."""

    interface_mtu: int
    dd_sequence_number: int
    options: Options = Options.E
    flags: DdFlags = DdFlags(0)
    lsa_headers: tuple[LsaHeader, ...] = ()

    def __post_init__(self) -> None:
        frozen_tuple(self, "lsa_headers")


@dataclass(frozen=True)
class LsRequest:
    """One requested LSA (its LS type is 32 bits on the wire, upper 24 bits zero)."""

    ls_type: int
    link_state_id: str
    advertising_router: str


@dataclass(frozen=True)
class LinkStateRequest:
    """Type 3: LSAs the sender wants in full (A.3.4)."""

    requests: tuple[LsRequest, ...] = ()

    def __post_init__(self) -> None:
        frozen_tuple(self, "requests")


@dataclass(frozen=True)
class LinkStateUpdate:
    """Type 4: full LSAs, flooded or answering a request (A.3.5)."""

    lsas: tuple[Lsa, ...] = ()

    def __post_init__(self) -> None:
        frozen_tuple(self, "lsas")


@dataclass(frozen=True)
class LinkStateAck:
    """Type 5: headers of the LSAs acknowledged (A.3.6)."""

    lsa_headers: tuple[LsaHeader, ...] = ()

    def __post_init__(self) -> None:
        frozen_tuple(self, "lsa_headers")


Body = Union[Hello, DatabaseDescription, LinkStateRequest, LinkStateUpdate, LinkStateAck]
_TYPE_OF = {Hello: PacketType.HELLO, DatabaseDescription: PacketType.DATABASE_DESCRIPTION,
            LinkStateRequest: PacketType.LINK_STATE_REQUEST,
            LinkStateUpdate: PacketType.LINK_STATE_UPDATE,
            LinkStateAck: PacketType.LINK_STATE_ACK}


@dataclass(frozen=True, kw_only=True)
class OspfPacket:
    """One OSPF packet; its type follows from ``body``, length and checksum are derived."""

    router_id: str
    area_id: str
    body: Body
    au_type: AuType = AuType.NULL
    authentication: bytes = bytes(8)

    @property
    def packet_type(self) -> PacketType:
        return _TYPE_OF[type(self.body)]


HEADER = c.Struct(
    "version" / c.Const(2, c.Int8ub),
    "packet_type" / EnumField(c.Int8ub, PacketType),
    "length" / c.Int16ub,
    "router_id" / IPv4Address,
    "area_id" / IPv4Address,
    "checksum" / c.Int16ub,
    "au_type" / EnumField(c.Int16ub, AuType),
    "authentication" / c.Bytes(8),
)
HELLO = c.Struct(
    "network_mask" / IPv4Address,
    "hello_interval" / c.Int16ub,
    "options" / OptionsField,
    "router_priority" / c.Int8ub,
    "router_dead_interval" / c.Int32ub,
    "designated_router" / IPv4Address,
    "backup_designated_router" / IPv4Address,
    "neighbors" / c.GreedyRange(IPv4Address),
)
DD_FIXED = c.Struct(
    "interface_mtu" / c.Int16ub,
    "options" / OptionsField,
    "flags" / FlagField(c.Int8ub, DdFlags),
    "dd_sequence_number" / c.Int32ub,
)
LS_REQUEST = c.Struct(
    "ls_type" / c.ExprValidator(c.Int32ub, lambda value, _: value <= 0xFF),
    "link_state_id" / IPv4Address,
    "advertising_router" / IPv4Address,
)
_LSA_COUNT = c.Int32ub


def packet_checksum(packet: bytes) -> int:
    """RFC 2328 A.3.1: IP checksum of the packet without its authentication field."""
    return internet_checksum(bytes(packet[:12]) + b"\x00\x00" + bytes(packet[14:16])
                             + bytes(packet[HEADER_SIZE:]))


# -- decoding -------------------------------------------------------------------------

def decode_packet(data: bytes) -> OspfPacket:
    """Decode one OSPFv2 packet occupying all of ``data``."""
    packet = _fast.try_decode_packet(data)
    return decode_packet_spec(data) if packet is None else packet


def decode_packet_spec(data: bytes) -> OspfPacket:
    """:func:`decode_packet` through the construct specification."""
    require_bytes(data, LAYER)
    header = parse_at(HEADER, data, 0, HEADER_SIZE, "header")
    if header.length != len(data):
        fail(LAYER, "header.length", 2,
             f"packet length {header.length} but {len(data)} bytes given")
    if header.au_type == AuType.CRYPTOGRAPHIC:
        fail(LAYER, "header.au_type", 14, "cryptographic authentication is not supported")
    expected = packet_checksum(data)
    if header.checksum != expected:
        fail(LAYER, "header.checksum", 12,
             f"checksum 0x{header.checksum:04x}, expected 0x{expected:04x}")
    body = _DECODERS[header.packet_type](bytes(data))
    return OspfPacket(router_id=header.router_id, area_id=header.area_id, body=body,
                      au_type=header.au_type, authentication=header.authentication)


def _check_items(data: bytes, start: int, size: int, field: str) -> int:
    """Number of ``size``-byte items in ``data[start:]``; fail if it is not whole."""
    left = len(data) - start
    if left > 0 and left % size:
        fail(LAYER, field, start, f"{left} bytes is not a whole number of {size}-byte entries")
    return max(left, 0) // size


def _lsa_headers(data: bytes, start: int, field: str) -> tuple[LsaHeader, ...]:
    count = _check_items(data, start, LSA_HEADER_SIZE, field)
    offsets = (start + i * LSA_HEADER_SIZE for i in range(count))
    return tuple(decode_lsa_header_at_spec(data, at, at + LSA_HEADER_SIZE, f"{field}[{i}]")
                 for i, at in enumerate(offsets))


def _decode_hello(data: bytes) -> Hello:
    _check_items(data, HEADER_SIZE + 20, 4, "hello.neighbors")
    value = parse_at(HELLO, data, HEADER_SIZE, len(data), "hello")
    return Hello(**_fields(value, Hello), neighbors=tuple(value.neighbors))


def _decode_dd(data: bytes) -> DatabaseDescription:
    fixed = parse_at(DD_FIXED, data, HEADER_SIZE, HEADER_SIZE + 8, "dd")
    headers = _lsa_headers(data, HEADER_SIZE + 8, "dd.lsa_headers")
    return DatabaseDescription(**_fields(fixed, DatabaseDescription), lsa_headers=headers)


def _decode_lsr(data: bytes) -> LinkStateRequest:
    count = _check_items(data, HEADER_SIZE, 12, "lsr.requests")
    requests = []
    for i in range(count):
        at = HEADER_SIZE + 12 * i
        item = parse_at(LS_REQUEST, data, at, at + 12, f"lsr.requests[{i}]")
        requests.append(LsRequest(as_ls_type(item.ls_type), item.link_state_id,
                                  item.advertising_router))
    return LinkStateRequest(tuple(requests))


def _decode_lsu(data: bytes) -> LinkStateUpdate:
    count = parse_at(_LSA_COUNT, data, HEADER_SIZE, HEADER_SIZE + 4, "lsu.lsa_count")
    offset, lsas = HEADER_SIZE + 4, []
    for i in range(count):
        if offset >= len(data):
            fail(LAYER, "lsu.lsa_count", HEADER_SIZE, f"{count} LSAs announced, {i} present")
        lsa, offset = decode_lsa_at_spec(data, offset, f"lsu.lsas[{i}]")
        lsas.append(lsa)
    if offset != len(data):
        fail(LAYER, "lsu.lsa_count", HEADER_SIZE,
             f"{len(data) - offset} bytes after the {count} announced LSAs")
    return LinkStateUpdate(tuple(lsas))


def _decode_lsack(data: bytes) -> LinkStateAck:
    return LinkStateAck(_lsa_headers(data, HEADER_SIZE, "lsack.lsa_headers"))


def _fields(value: Any, cls: type) -> dict:
    names = cls.__dataclass_fields__
    return {k: v for k, v in value.items() if k in names and not isinstance(v, list)}


_DECODERS = {PacketType.HELLO: _decode_hello,
             PacketType.DATABASE_DESCRIPTION: _decode_dd,
             PacketType.LINK_STATE_REQUEST: _decode_lsr,
             PacketType.LINK_STATE_UPDATE: _decode_lsu,
             PacketType.LINK_STATE_ACK: _decode_lsack}


# -- encoding -------------------------------------------------------------------------

def encode_packet(packet: OspfPacket) -> bytes:
    """Encode a packet, filling in its length and checksum."""
    raw = _fast.try_encode_packet(packet)
    return encode_packet_spec(packet) if raw is None else raw


def encode_packet_spec(packet: OspfPacket) -> bytes:
    """:func:`encode_packet` through the construct specification."""
    encoder = _ENCODERS.get(type(packet.body))
    if encoder is None:
        raise EncodeError(LAYER, "body", f"not an OSPF body: {type(packet.body).__name__}")
    if packet.au_type == AuType.CRYPTOGRAPHIC:
        raise EncodeError(LAYER, "header.au_type", "cryptographic authentication is not supported")
    try:
        body = encoder(packet.body)
    except (AttributeError, TypeError) as error:
        raise EncodeError(LAYER, "body", str(error)) from None
    length = HEADER_SIZE + len(body)
    if length > _MAX_LENGTH:
        raise EncodeError(LAYER, "header.length", f"packet of {length} bytes exceeds 65535")
    header = {"packet_type": packet.packet_type, "length": length, "checksum": 0,
              "router_id": packet.router_id, "area_id": packet.area_id,
              "au_type": packet.au_type, "authentication": packet.authentication}
    raw = build_as(HEADER, header, "header") + body
    return raw[:12] + packet_checksum(raw).to_bytes(2, "big") + raw[14:]


def _encode_hello(hello: Hello) -> bytes:
    return build_as(HELLO, dict(vars(hello), neighbors=list(hello.neighbors)), "hello")


def _encode_headers(headers: tuple[LsaHeader, ...], field: str) -> bytes:
    return b"".join(_encode_item(encode_lsa_header_spec, h, f"{field}[{i}]")
                    for i, h in enumerate(headers))


def _encode_dd(dd: DatabaseDescription) -> bytes:
    fixed = build_as(DD_FIXED, vars(dd), "dd")
    return fixed + _encode_headers(dd.lsa_headers, "dd.lsa_headers")


def _encode_lsr(lsr: LinkStateRequest) -> bytes:
    return b"".join(build_as(LS_REQUEST, vars(r), f"lsr.requests[{i}]")
                    for i, r in enumerate(lsr.requests))


def _encode_lsu(lsu: LinkStateUpdate) -> bytes:
    count = build_as(_LSA_COUNT, len(lsu.lsas), "lsu.lsa_count")
    return count + b"".join(_encode_item(encode_lsa_spec, lsa, f"lsu.lsas[{i}]")
                            for i, lsa in enumerate(lsu.lsas))


def _encode_lsack(ack: LinkStateAck) -> bytes:
    return _encode_headers(ack.lsa_headers, "lsack.lsa_headers")


def _encode_item(encoder: Any, item: Any, field: str) -> bytes:
    try:
        return encoder(item)
    except EncodeError as error:
        inner = error.field.split(".", 1)[1] if "." in error.field else ""
        raise EncodeError(LAYER, f"{field}.{inner}" if inner else field,
                          error.reason) from None


_ENCODERS = {Hello: _encode_hello, DatabaseDescription: _encode_dd,
             LinkStateRequest: _encode_lsr, LinkStateUpdate: _encode_lsu,
             LinkStateAck: _encode_lsack}


# The fast path imports this module's classes, so it is bound last (see fastpath.py).
from qbb.routing import fastpath as _fast  # noqa: E402

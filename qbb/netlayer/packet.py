"""QKDNL packet codec: the IPv4 header of RFC 791, bit for bit (seed 002 §3.2, Appendix D).

SECOQC's QKD network layer "adopted a similar packet structure to the IP protocol": a
20-byte header (plus options) in front of a QKDTL segment, a routing packet or an
ICMP-style message. Laying it out exactly as IPv4 lets any IPv4 dissector read it::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-------+-------+---------------+-------------------------------+
    |Version|  IHL  |      ToS      |         Total Length          |   0
    +-------+-------+---------------+-+-+-+-------------------------+
    |        Identification         |R|D|M|    Fragment Offset      |   4
    +---------------+---------------+-+-+-+-------------------------+
    |      TTL      |   Protocol    |        Header Checksum        |   8
    +---------------+---------------+-------------------------------+
    |                        Source Address                         |  12
    |                      Destination Address                      |  16
    |             Options (4 * (IHL - 5) bytes, opaque)             |  20
    +---------------------------------------------------------------+

The dataclasses never carry the derived fields: the encoder computes IHL from the options,
Total Length from options and payload, and the header checksum (RFC 1071 over the header
with the checksum field taken as zero). The decoder is canonical: version 4, IHL >= 5,
reserved flag bit 0, Total Length equal to the buffer length, and exactly the checksum the
encoder would write, so ``encode_packet(decode_packet(b)) == b`` whenever decoding succeeds.

:data:`PACKET` (construct) is the specification. Every packet on every hop is decoded and
re-encoded, so :func:`encode_packet` / :func:`decode_header` use a stdlib ``struct`` fast
path; the tests prove it byte-identical to :func:`encode_packet_spec` /
:func:`decode_packet_spec`, rejecting the same inputs with the same field and offset.
:func:`decrement_ttl` updates the checksum incrementally (RFC 1624, eqn. 3).
"""

from __future__ import annotations

import socket
import struct
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import construct as c

from qbb.codec import IPv4Address, build, fail, frozen_new, internet_checksum, parse
from qbb.errors import EncodeError

LAYER = "QKDNL"
VERSION = 4
MIN_HEADER_LENGTH = 20
MAX_OPTIONS_LENGTH = 40
MAX_TOTAL_LENGTH = 0xFFFF
DEFAULT_TTL = 64
CHECKSUM_OFFSET = 10


class Require(c.Adapter):
    """Pass values through, raising a ``ValidationError`` with ``reason`` if ``ok`` fails.

    ``ok(value, context)``; ``reason`` is formatted with the value.
    """

    def __init__(self, subcon: c.Construct, ok: Callable[[Any, Any], bool], reason: str):
        super().__init__(subcon)
        self.ok = ok
        self.reason = reason

    def _check(self, obj: Any, context: Any, path: str) -> Any:
        if not self.ok(obj, context):
            raise c.ValidationError(self.reason.format(obj), path=path)
        return obj

    _decode = _check
    _encode = _check


def _ihl_of(context: Any) -> int:
    return 5 + len(context._.options) // 4


def _total_length_of(context: Any) -> int:
    return MIN_HEADER_LENGTH + len(context.options) + len(context.payload)


PACKET = c.Struct(
    "version_ihl" / c.BitStruct(
        "version" / c.Const(VERSION, c.BitsInteger(4)),
        "ihl" / c.Rebuild(
            Require(c.BitsInteger(4), lambda v, _: v >= 5, "IHL {} is below the minimum 5"),
            _ihl_of),
    ),
    "tos" / c.Int8ub,
    "total_length" / c.Rebuild(c.Int16ub, _total_length_of),
    "identification" / c.Int16ub,
    "flags" / c.BitStruct(
        "reserved" / c.Const(False, c.Flag),
        "dont_fragment" / c.Flag,
        "more_fragments" / c.Flag,
        "fragment_offset" / c.BitsInteger(13),
    ),
    "ttl" / c.Int8ub,
    "protocol" / c.Int8ub,
    "checksum" / c.Int16ub,  # patched after building: it covers bytes that follow it
    "source" / IPv4Address,
    "destination" / IPv4Address,
    "options" / c.Bytes(4 * (c.this.version_ihl.ihl - 5)),
    "payload" / c.GreedyBytes,
)
"""The specification of a QKDNL packet; Total Length and checksum are checked afterwards."""


@dataclass(frozen=True)
class QKDNLHeader:
    """A decoded header (what forwarding needs); ``total_length`` as found on the wire."""

    source: str
    destination: str
    protocol: int
    total_length: int
    ttl: int = DEFAULT_TTL
    tos: int = 0
    identification: int = 0
    dont_fragment: bool = False
    more_fragments: bool = False
    fragment_offset: int = 0
    options: bytes = b""

    @property
    def header_length(self) -> int:
        """Bytes of header (4 * IHL): the offset of the payload."""
        return MIN_HEADER_LENGTH + len(self.options)


@dataclass(frozen=True)
class QKDNLPacket:
    """A QKDNL packet; IHL, Total Length and the checksum are derived on encode."""

    source: str
    destination: str
    protocol: int
    payload: bytes = b""
    ttl: int = DEFAULT_TTL
    tos: int = 0
    identification: int = 0
    dont_fragment: bool = False
    more_fragments: bool = False
    fragment_offset: int = 0
    options: bytes = b""

    @property
    def header(self) -> QKDNLHeader:
        """The header this packet encodes to."""
        return QKDNLHeader(
            self.source, self.destination, self.protocol,
            MIN_HEADER_LENGTH + len(self.options) + len(self.payload), self.ttl, self.tos,
            self.identification, self.dont_fragment, self.more_fragments,
            self.fragment_offset, bytes(self.options))


_HEADER_FIELDS = tuple(f.name for f in dataclasses.fields(QKDNLHeader))
_PACKET_FIELDS = tuple(f.name for f in dataclasses.fields(QKDNLPacket))


# --- encoding ---------------------------------------------------------------------------

_FIXED = struct.Struct("!BBHHHBBH4s4s")
_INT_FIELDS = (("tos", 8), ("identification", 16), ("fragment_offset", 13),
               ("ttl", 8), ("protocol", 8))


def _address(pkt: QKDNLPacket, name: str) -> bytes:
    value = getattr(pkt, name)
    try:
        raw = socket.inet_aton(value)
    except (OSError, TypeError) as error:
        raise EncodeError(LAYER, name, f"not a dotted-quad IPv4 address: {value!r}") from error
    if socket.inet_ntoa(raw) != value:
        raise EncodeError(LAYER, name, f"not a canonical dotted-quad address: {value!r}")
    return raw


def _check_encodable(pkt: QKDNLPacket) -> None:
    """Raise :class:`EncodeError` for any field the wire cannot carry exactly."""
    for name, bits in _INT_FIELDS:
        value = getattr(pkt, name)
        if not isinstance(value, int) or not 0 <= value < 1 << bits:
            raise EncodeError(LAYER, name, f"{value!r} is not an unsigned {bits}-bit integer")
    for name in ("dont_fragment", "more_fragments"):
        if not isinstance(getattr(pkt, name), bool):
            raise EncodeError(LAYER, name, f"{getattr(pkt, name)!r} is not a bool")
    for name in ("options", "payload"):
        if not isinstance(getattr(pkt, name), (bytes, bytearray, memoryview)):
            raise EncodeError(LAYER, name, "expected bytes")
    if len(pkt.options) % 4 or len(pkt.options) > MAX_OPTIONS_LENGTH:
        raise EncodeError(LAYER, "options", f"{len(pkt.options)} bytes: need a multiple "
                          f"of 4, at most {MAX_OPTIONS_LENGTH}")
    total = MIN_HEADER_LENGTH + len(pkt.options) + len(pkt.payload)
    if total > MAX_TOTAL_LENGTH:
        raise EncodeError(LAYER, "total_length", f"{total} exceeds {MAX_TOTAL_LENGTH}")


def encode_packet(pkt: QKDNLPacket) -> bytes:
    """Header (IHL, Total Length, checksum computed here) followed by the payload."""
    _check_encodable(pkt)
    source, destination = _address(pkt, "source"), _address(pkt, "destination")
    header_length = MIN_HEADER_LENGTH + len(pkt.options)
    flags = pkt.dont_fragment << 14 | pkt.more_fragments << 13 | pkt.fragment_offset
    head = bytearray(_FIXED.pack(
        VERSION << 4 | header_length >> 2, pkt.tos, header_length + len(pkt.payload),
        pkt.identification, flags, pkt.ttl, pkt.protocol, 0, source, destination))
    head += pkt.options
    struct.pack_into("!H", head, CHECKSUM_OFFSET, internet_checksum(head))
    return bytes(head) + bytes(pkt.payload)


def encode_packet_spec(pkt: QKDNLPacket) -> bytes:
    """:func:`encode_packet` through the construct specification :data:`PACKET`."""
    _check_encodable(pkt)
    for name in ("source", "destination"):
        _address(pkt, name)
    raw = bytearray(build(PACKET, dict(
        version_ihl={}, tos=pkt.tos, identification=pkt.identification,
        flags=dict(dont_fragment=pkt.dont_fragment, more_fragments=pkt.more_fragments,
                   fragment_offset=pkt.fragment_offset),
        ttl=pkt.ttl, protocol=pkt.protocol, checksum=0, source=pkt.source,
        destination=pkt.destination, options=bytes(pkt.options),
        payload=bytes(pkt.payload)), LAYER))
    header_length = MIN_HEADER_LENGTH + len(pkt.options)
    struct.pack_into("!H", raw, CHECKSUM_OFFSET, internet_checksum(raw[:header_length]))
    return bytes(raw)


# --- decoding ---------------------------------------------------------------------------

def header_checksum(header: bytes) -> int:
    """RFC 1071 checksum of a complete header, its checksum field counted as zero."""
    if not isinstance(header, (bytes, bytearray, memoryview)):
        fail(LAYER, "<message>", 0, f"expected bytes, got {type(header).__name__}")
    if len(header) < MIN_HEADER_LENGTH or len(header) % 2:
        fail(LAYER, "<header>", 0, f"{len(header)} bytes is not a header length")
    zeroed = bytearray(header)
    zeroed[CHECKSUM_OFFSET:CHECKSUM_OFFSET + 2] = b"\x00\x00"
    return internet_checksum(zeroed)


def _verify_length_and_checksum(data: Any, header_length: int, total: int,
                                found: int) -> None:
    if total != len(data):
        fail(LAYER, "total_length", 2,
             f"Total Length {total} does not match the {len(data)}-byte buffer")
    expected = header_checksum(data[:header_length])
    if expected != found:
        fail(LAYER, "checksum", CHECKSUM_OFFSET,
             f"header checksum 0x{found:04x} does not match computed 0x{expected:04x}")


def decode_header(data: bytes) -> tuple[QKDNLHeader, int]:
    """Check a whole packet and return its header and the payload offset (no copy).

    Forwarding reads the payload as ``memoryview(data)[offset:]``. Raises only
    :class:`DecodeError`, with the same field and offset as :func:`decode_packet_spec`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < MIN_HEADER_LENGTH:
        _reject_with_spec(data)
    (version_ihl, tos, total, ident, frag, ttl, protocol, found,
     source, destination) = _FIXED.unpack_from(data)
    ihl = version_ihl & 0x0F
    if version_ihl >> 4 != VERSION:
        fail(LAYER, "version_ihl.version", 0, f"parsing expected 4 but parsed {version_ihl >> 4}")
    if ihl < 5:
        fail(LAYER, "version_ihl.ihl", 0, f"IHL {ihl} is below the minimum 5")
    if frag & 0x8000:
        fail(LAYER, "flags.reserved", 6, "parsing expected False but parsed True")
    if len(data) < 4 * ihl:
        fail(LAYER, "options", MIN_HEADER_LENGTH,
             f"IHL {ihl} needs {4 * ihl} header bytes, buffer has {len(data)}")
    _verify_length_and_checksum(data, 4 * ihl, total, found)
    header = frozen_new(QKDNLHeader, _HEADER_FIELDS, (
        socket.inet_ntoa(source), socket.inet_ntoa(destination), protocol, total, ttl, tos,
        ident, bool(frag & 0x4000), bool(frag & 0x2000), frag & 0x1FFF,
        bytes(data[MIN_HEADER_LENGTH:4 * ihl])))
    return header, 4 * ihl


def _reject_with_spec(data: Any) -> None:
    """Short or non-bytes input: let the specification name the failing field."""
    decode_packet_spec(data)
    fail(LAYER, "<message>", 0, "fast path and specification disagree")  # pragma: no cover


def _packet(header: QKDNLHeader, payload: bytes) -> QKDNLPacket:
    return frozen_new(QKDNLPacket, _PACKET_FIELDS, (
        header.source, header.destination, header.protocol, payload, header.ttl,
        header.tos, header.identification, header.dont_fragment, header.more_fragments,
        header.fragment_offset, header.options))


def decode_packet(data: bytes) -> QKDNLPacket:
    """Decode and check a whole QKDNL packet (raises only :class:`DecodeError`)."""
    header, offset = decode_header(data)
    return _packet(header, bytes(data[offset:]))


def decode_packet_spec(data: bytes) -> QKDNLPacket:
    """:func:`decode_packet` through the construct specification :data:`PACKET`."""
    value = parse(PACKET, data, LAYER)
    header_length = 4 * value.version_ihl.ihl
    _verify_length_and_checksum(data, header_length, value.total_length, value.checksum)
    return QKDNLPacket(
        value.source, value.destination, value.protocol, value.payload, value.ttl,
        value.tos, value.identification, value.flags.dont_fragment,
        value.flags.more_fragments, value.flags.fragment_offset, value.options)


# --- forwarding -------------------------------------------------------------------------

def _ones_complement_update(checksum: int, old_word: int, new_word: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')."""
    total = (~checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def decrement_ttl(packet: bytes) -> bytes:
    """The packet with TTL one less and the checksum updated incrementally (RFC 1624).

    The packet must already have been checked (:func:`decode_header`); a buffer shorter
    than a header or a TTL of 0 raises :class:`DecodeError` naming ``ttl``.
    """
    if not isinstance(packet, (bytes, bytearray, memoryview)) or len(packet) < MIN_HEADER_LENGTH:
        fail(LAYER, "ttl", 8, "not a QKDNL packet (shorter than a header)")
    ttl, protocol, checksum = struct.unpack_from("!BBH", packet, 8)
    if ttl == 0:
        fail(LAYER, "ttl", 8, "TTL is already 0")
    old_word = ttl << 8 | protocol
    new_checksum = _ones_complement_update(checksum, old_word, old_word - 0x100)
    out = bytearray(packet)
    struct.pack_into("!BBH", out, 8, ttl - 1, protocol, new_checksum)
    return bytes(out)


__all__ = [
    "DEFAULT_TTL", "LAYER", "MAX_OPTIONS_LENGTH", "MIN_HEADER_LENGTH", "PACKET",
    "QKDNLHeader", "QKDNLPacket", "Require", "decode_header",
    "decode_packet", "decode_packet_spec", "decrement_ttl", "encode_packet",
    "encode_packet_spec", "header_checksum",
]

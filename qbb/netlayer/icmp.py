"""ICMP-style error and diagnostic messages of the QKDNL (RFC 792; seed 002 §3.2).

A QBB node that drops a packet tells its source why, exactly as an IPv4 router does: the
seed names Time Exceeded (TTL exceeded in transit) and Destination Unreachable (protocol
unreachable for an unknown local host). The messages travel as the payload of a QKDNL
packet with protocol 1 and keep ICMP's own layout, so scapy and Wireshark read them::

    0       type
    1       code
    2-3     checksum: RFC 1071 over the whole ICMP message, this field as zero
    4-7     per type:
              Echo Request (8) / Reply (0):  identifier u16, sequence u16; then data
              Destination Unreachable (3):   unused u16 = 0, next-hop MTU u16 (RFC 1191,
                                             code 4 only; 0 otherwise); then original
              Source Quench (4):             unused u32 = 0; then original
              Time Exceeded (11):            unused u32 = 0; then original
              Parameter Problem (12):        pointer u8, unused u24 = 0; then original
    8-      data (echo) or the original QKDNL header + first 8 payload bytes (errors)

Source Quench (deprecated on the Internet by RFC 6633) is kept as the QKD network's
key-scarcity signal: a node whose key store toward the next hop cannot cover a packet's
one-time pad (or whose link queue is full) may quote that packet back to its source,
which slows down or asks routing for another path.

The quoted original is opaque bytes here (see :func:`quote_original`). Unused bytes must
be zero and the checksum must be exactly the computed one, so decoding is canonical.
Layout tables: docs/wire/qkdnl.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable, ClassVar, Union

import construct as c

from qbb.codec import build, fail, internet_checksum, parse
from qbb.errors import EncodeError
from qbb.netlayer.packet import Require

LAYER = "ICMP"
ORIGINAL_PAYLOAD_BYTES = 8


class IcmpType(IntEnum):
    """The message types this codec knows (RFC 792)."""

    ECHO_REPLY = 0
    DESTINATION_UNREACHABLE = 3
    SOURCE_QUENCH = 4
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAMETER_PROBLEM = 12


class UnreachableCode(IntEnum):
    """Destination Unreachable codes (RFC 792, 1122, 1812); QKD use in docs/wire/qkdnl.md."""

    NET_UNREACHABLE = 0
    HOST_UNREACHABLE = 1
    PROTOCOL_UNREACHABLE = 2
    PORT_UNREACHABLE = 3
    FRAGMENTATION_NEEDED = 4
    SOURCE_ROUTE_FAILED = 5
    NET_UNKNOWN = 6
    HOST_UNKNOWN = 7
    SOURCE_HOST_ISOLATED = 8
    NET_PROHIBITED = 9
    HOST_PROHIBITED = 10
    NET_UNREACHABLE_FOR_TOS = 11
    HOST_UNREACHABLE_FOR_TOS = 12
    ADMINISTRATIVELY_PROHIBITED = 13
    HOST_PRECEDENCE_VIOLATION = 14
    PRECEDENCE_CUTOFF = 15


class TimeExceededCode(IntEnum):
    TTL_EXCEEDED_IN_TRANSIT = 0
    REASSEMBLY_TIME_EXCEEDED = 1


class ParameterProblemCode(IntEnum):
    POINTER_INDICATES_ERROR = 0
    MISSING_REQUIRED_OPTION = 1
    BAD_LENGTH = 2


class _ZeroCode(IntEnum):
    ZERO = 0


_CODES: dict[int, type[IntEnum]] = {
    IcmpType.ECHO_REPLY: _ZeroCode, IcmpType.ECHO_REQUEST: _ZeroCode,
    IcmpType.SOURCE_QUENCH: _ZeroCode, IcmpType.DESTINATION_UNREACHABLE: UnreachableCode,
    IcmpType.TIME_EXCEEDED: TimeExceededCode,
    IcmpType.PARAMETER_PROBLEM: ParameterProblemCode,
}


@dataclass(frozen=True)
class EchoRequest:
    identifier: int
    sequence: int
    data: bytes = b""
    TYPE: ClassVar[IcmpType] = IcmpType.ECHO_REQUEST


@dataclass(frozen=True)
class EchoReply:
    identifier: int
    sequence: int
    data: bytes = b""
    TYPE: ClassVar[IcmpType] = IcmpType.ECHO_REPLY


@dataclass(frozen=True)
class DestinationUnreachable:
    """``next_hop_mtu`` is carried for code 4 only (RFC 1191) and must be 0 otherwise."""

    code: UnreachableCode
    original: bytes = b""
    next_hop_mtu: int = 0
    TYPE: ClassVar[IcmpType] = IcmpType.DESTINATION_UNREACHABLE


@dataclass(frozen=True)
class SourceQuench:
    """The QKD network's key-scarcity signal (see the module docstring)."""

    original: bytes = b""
    TYPE: ClassVar[IcmpType] = IcmpType.SOURCE_QUENCH


@dataclass(frozen=True)
class TimeExceeded:
    code: TimeExceededCode
    original: bytes = b""
    TYPE: ClassVar[IcmpType] = IcmpType.TIME_EXCEEDED


@dataclass(frozen=True)
class ParameterProblem:
    """``pointer``: offset of the offending byte in the quoted original header."""

    pointer: int
    original: bytes = b""
    code: ParameterProblemCode = ParameterProblemCode.POINTER_INDICATES_ERROR
    TYPE: ClassVar[IcmpType] = IcmpType.PARAMETER_PROBLEM


IcmpMessage = Union[EchoRequest, EchoReply, DestinationUnreachable, SourceQuench,
                    TimeExceeded, ParameterProblem]

# --- specification ----------------------------------------------------------------------

_ECHO = c.Struct("identifier" / c.Int16ub, "sequence" / c.Int16ub, "data" / c.GreedyBytes)
_QUOTE = c.Struct("unused" / c.Const(0, c.Int32ub), "original" / c.GreedyBytes)
_UNREACHABLE = c.Struct(
    "unused" / c.Const(0, c.Int16ub),
    "next_hop_mtu" / Require(
        c.Int16ub, lambda mtu, ctx: mtu == 0 or ctx._.code == UnreachableCode.FRAGMENTATION_NEEDED,
        "next-hop MTU {} is only carried with code 4 (fragmentation needed)"),
    "original" / c.GreedyBytes,
)
_PARAMETER = c.Struct(
    "pointer" / c.Int8ub, "unused" / c.Const(0, c.Int24ub), "original" / c.GreedyBytes)


_CODE_VALUES = {kind: frozenset(int(code) for code in codes) for kind, codes in _CODES.items()}


def _known_code(code: int, context: Any) -> bool:
    return code in _CODE_VALUES[context.type]


MESSAGE = c.Struct(
    "type" / Require(c.Int8ub, lambda t, _: t in _CODES, "unknown ICMP type {}"),
    "code" / Require(c.Int8ub, _known_code, "code {} is not defined for this type"),
    "checksum" / c.Int16ub,  # patched after building: it covers bytes that follow it
    "body" / c.Switch(c.this.type, {
        IcmpType.ECHO_REPLY: _ECHO, IcmpType.ECHO_REQUEST: _ECHO,
        IcmpType.DESTINATION_UNREACHABLE: _UNREACHABLE, IcmpType.SOURCE_QUENCH: _QUOTE,
        IcmpType.TIME_EXCEEDED: _QUOTE, IcmpType.PARAMETER_PROBLEM: _PARAMETER,
    }),
)
"""The specification of an ICMP message; the checksum is checked afterwards."""

# --- dataclass <-> construct values -----------------------------------------------------

_TO_WIRE: dict[type, Callable[[Any], tuple[int, dict]]] = {
    EchoRequest: lambda m: (0, dict(identifier=m.identifier, sequence=m.sequence, data=m.data)),
    EchoReply: lambda m: (0, dict(identifier=m.identifier, sequence=m.sequence, data=m.data)),
    DestinationUnreachable: lambda m: (m.code, dict(next_hop_mtu=m.next_hop_mtu,
                                                    original=m.original)),
    SourceQuench: lambda m: (0, dict(original=m.original)),
    TimeExceeded: lambda m: (m.code, dict(original=m.original)),
    ParameterProblem: lambda m: (m.code, dict(pointer=m.pointer, original=m.original)),
}

_FROM_WIRE: dict[int, Callable[[int, Any], Any]] = {
    IcmpType.ECHO_REQUEST: lambda code, b: EchoRequest(b.identifier, b.sequence, b.data),
    IcmpType.ECHO_REPLY: lambda code, b: EchoReply(b.identifier, b.sequence, b.data),
    IcmpType.DESTINATION_UNREACHABLE: lambda code, b: DestinationUnreachable(
        UnreachableCode(code), b.original, b.next_hop_mtu),
    IcmpType.SOURCE_QUENCH: lambda code, b: SourceQuench(b.original),
    IcmpType.TIME_EXCEEDED: lambda code, b: TimeExceeded(TimeExceededCode(code), b.original),
    IcmpType.PARAMETER_PROBLEM: lambda code, b: ParameterProblem(
        b.pointer, b.original, ParameterProblemCode(code)),
}


def _checksum(message: bytes) -> int:
    return internet_checksum(bytes(message[:2]) + b"\x00\x00" + bytes(message[4:]))


def encode_icmp(msg: IcmpMessage) -> bytes:
    """The ICMP message with its checksum computed (raises :class:`EncodeError`)."""
    to_wire = _TO_WIRE.get(type(msg))
    if to_wire is None:
        raise EncodeError(LAYER, "<message>", f"not an ICMP message: {type(msg).__name__}")
    code, body = to_wire(msg)
    for name in ("data", "original"):
        if name in body and not isinstance(body[name], (bytes, bytearray, memoryview)):
            raise EncodeError(LAYER, f"body.{name}", f"expected bytes, got {body[name]!r}")
    if not isinstance(code, int) or code not in _CODE_VALUES[msg.TYPE]:
        raise EncodeError(LAYER, "code", f"{code!r} is not a code of {msg.TYPE.name}")
    raw = bytearray(build(MESSAGE, dict(type=int(msg.TYPE), code=int(code), checksum=0,
                                        body=body), LAYER))
    struct.pack_into("!H", raw, 2, _checksum(raw))
    return bytes(raw)


def decode_icmp(data: bytes) -> IcmpMessage:
    """Decode and check an ICMP message (raises only :class:`DecodeError`)."""
    value = parse(MESSAGE, data, LAYER)
    expected = _checksum(data)
    if value.checksum != expected:
        fail(LAYER, "checksum", 2,
             f"ICMP checksum 0x{value.checksum:04x} does not match computed 0x{expected:04x}")
    return _FROM_WIRE[value.type](value.code, value.body)


def quote_original(packet: bytes) -> bytes:
    """What an error message quotes: the packet's header (4 * IHL) and 8 payload bytes."""
    header_length = 4 * (packet[0] & 0x0F) if packet else 0
    return bytes(packet[:header_length + ORIGINAL_PAYLOAD_BYTES])


__all__ = [
    "DestinationUnreachable", "EchoReply", "EchoRequest", "IcmpMessage", "IcmpType", "LAYER",
    "MESSAGE", "ParameterProblem", "ParameterProblemCode", "SourceQuench", "TimeExceeded",
    "TimeExceededCode", "UnreachableCode", "decode_icmp", "encode_icmp", "quote_original",
]

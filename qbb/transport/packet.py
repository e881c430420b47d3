"""QKDTL segment codec: the QKD transport layer (SECOQC §3.3-3.4), QKDNL protocol 253.

The QKDTL gives the end applications reliable delivery (acknowledgement and
retransmission), congestion control, connection management that keeps both ends'
key consumption in step, and multiplexing by port (seed 002 §3.3). Its segment is
a 20-byte big-endian header followed by ``length`` payload bytes::

    0       2       4               8               12      14      16      18      20
    | sport | dport | seq (u32)     | ack (u32)     | flags | window| length| cksum | payload

* ``seq`` counts payload bytes of the stream, TCP style; SYN and FIN each take one
  sequence number. ``ack`` is the next byte expected (meaningful when ACK is set).
* ``flags`` (:class:`SegmentFlags`) keep TCP's bit positions where the meaning is the
  same (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10, ECE 0x40, CWR 0x80); KEY takes PSH's
  0x08. Bits 0x0020 and 0xFF00 are reserved and must be zero. KEY and SYN are
  mutually exclusive, so a payload is always read one way:
  KEY -> one or more :class:`KeyDelivery` bodies back to back (each self-delimiting by
  its ``key_bits``; several keys per segment amortise the per-packet cost of relaying);
  SYN -> :class:`ConnectRequest` (or empty); otherwise opaque bytes (see :func:`decode_body`).
* ``window`` is the receive window in KiB (units of :data:`WINDOW_UNIT` bytes)
  beyond ``ack``.
* ``checksum`` is RFC 1071 over the whole segment with the checksum field zero and
  no pseudo-header: the QKDNL header has its own checksum and Q3P authenticates
  every frame. The value is sent as computed (0x0000 has no special meaning).

Decoding is canonical: whatever :func:`decode_segment` accepts re-encodes to the
same bytes. The byte layouts are tabled in ``docs/wire/qkdtl.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import construct as c

from qbb.codec import build, fail, internet_checksum, parse
from qbb.errors import DecodeError, EncodeError

LAYER = "QKDTL"
HEADER_LEN = 20
LENGTH_OFFSET = 16
CHECKSUM_OFFSET = 18
FLAGS_OFFSET = 12
WINDOW_UNIT = 1024
MAX_PAYLOAD = 0xFFFF


class SegmentFlags(enum.IntFlag):
    """Bits of the 16-bit flags field (offset 12)."""

    FIN = 0x0001
    SYN = 0x0002
    RST = 0x0004
    KEY = 0x0008  # payload is a KeyDelivery body
    ACK = 0x0010
    ECE = 0x0040  # key-scarcity / congestion echo
    CWR = 0x0080  # sender reduced its congestion window


#: Bits of the flags field that no flag uses; they must be zero.
RESERVED_FLAGS = 0xFFFF & ~sum(SegmentFlags)  # 0xFF20


class ServiceClass(enum.IntEnum):
    """Service class asked for in a :class:`ConnectRequest`."""

    BEST_EFFORT = 0
    GUARANTEED_RATE = 1


@dataclass(frozen=True)
class Segment:
    """One QKDTL segment; ``payload`` is hidden from ``repr`` (it may hold key)."""

    src_port: int
    dst_port: int
    seq: int = 0
    ack: int = 0
    flags: SegmentFlags = SegmentFlags(0)
    window: int = 0
    payload: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class KeyDelivery:
    """Body of a KEY segment: session key ``key_id`` of ``key_bits`` bits.

    Key ids increase per connection, so both ends see the same ids in the same
    order. ``key`` holds ceil(key_bits / 8) bytes, MSB first, unused low bits zero.
    """

    key_id: int
    key_bits: int
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class ConnectRequest:
    """Body of a SYN segment: the service asked of the connection.

    ``rate`` is lambda in bit/s and ``burst`` sigma in bits (a token bucket);
    with BEST_EFFORT both are advisory, 0 meaning unspecified. ``application``
    names the registered server application being connected to.
    """

    service: ServiceClass
    rate: int
    burst: int
    application: str


_SEGMENT = c.Struct(
    "src_port" / c.Int16ub,
    "dst_port" / c.Int16ub,
    "seq" / c.Int32ub,
    "ack" / c.Int32ub,
    "flags" / c.Int16ub,
    "window" / c.Int16ub,
    "length" / c.Rebuild(c.Int16ub, c.len_(c.this.payload)),
    "checksum" / c.Int16ub,
    "payload" / c.Bytes(c.this.length),
)

_KEY_DELIVERY = c.Struct(
    "key_id" / c.Int32ub,
    "key_bits" / c.Int16ub,
    "key" / c.Bytes((c.this.key_bits + 7) // 8),
)

_CONNECT_REQUEST = c.Struct(
    "service" / c.Int8ub,
    "reserved" / c.Const(b"\x00"),
    "name_length" / c.Rebuild(c.Int16ub, c.len_(c.this.application)),
    "rate" / c.Int32ub,
    "burst" / c.Int32ub,
    "application" / c.Bytes(c.this.name_length),
)
_APPLICATION_OFFSET = 12
_KEY_OFFSET = 6


# --- segment ---------------------------------------------------------------------

def _flags_problem(flags: int) -> str | None:
    if flags & RESERVED_FLAGS:
        return f"reserved bits 0x{flags & RESERVED_FLAGS:04x} set"
    if flags & SegmentFlags.KEY and flags & SegmentFlags.SYN:
        return "KEY and SYN are mutually exclusive"
    return None


def _payload_bytes(payload: object, name: str) -> bytes:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise EncodeError(LAYER, name, f"expected bytes, got {type(payload).__name__}")
    return bytes(payload)


def encode_segment(segment: Segment) -> bytes:
    """Segment -> bytes, with length and checksum computed here."""
    try:
        flags = int(segment.flags)
    except (TypeError, ValueError):
        raise EncodeError(LAYER, "flags", f"not an integer: {segment.flags!r}") from None
    problem = _flags_problem(flags)
    if problem:
        raise EncodeError(LAYER, "flags", problem)
    fields = dict(src_port=segment.src_port, dst_port=segment.dst_port, seq=segment.seq,
                  ack=segment.ack, flags=flags, window=segment.window, checksum=0,
                  payload=_payload_bytes(segment.payload, "payload"))
    raw = build(_SEGMENT, fields, LAYER)
    checksum = internet_checksum(raw)
    return raw[:CHECKSUM_OFFSET] + checksum.to_bytes(2, "big") + raw[HEADER_LEN:]


def _check_length(data: bytes) -> None:
    if len(data) < HEADER_LEN:
        return  # the parser names the field where the data ran out
    declared = int.from_bytes(data[LENGTH_OFFSET:LENGTH_OFFSET + 2], "big")
    if declared != len(data) - HEADER_LEN:
        fail(LAYER, "length", LENGTH_OFFSET,
             f"says {declared} payload bytes but {len(data) - HEADER_LEN} follow the header")


def _check_checksum(data: bytes, stored: int) -> None:
    zeroed = data[:CHECKSUM_OFFSET] + b"\x00\x00" + data[HEADER_LEN:]
    computed = internet_checksum(zeroed)
    if computed != stored:
        fail(LAYER, "checksum", CHECKSUM_OFFSET,
             f"0x{stored:04x} does not match computed 0x{computed:04x}")


def decode_segment(data: bytes) -> Segment:
    """Bytes -> Segment; verifies length, checksum and flags. Raises DecodeError."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        _check_length(data)
    value = parse(_SEGMENT, data, LAYER)
    _check_checksum(data, value.checksum)
    problem = _flags_problem(value.flags)
    if problem:
        fail(LAYER, "flags", FLAGS_OFFSET, problem)
    return Segment(value.src_port, value.dst_port, value.seq, value.ack,
                   SegmentFlags(value.flags), value.window, value.payload)


# --- KEY body --------------------------------------------------------------------

def _padding_mask(key_bits: int) -> int:
    """Mask of the unused low-order bits in the last key byte."""
    return (1 << (-key_bits % 8)) - 1


def encode_key_delivery(body: KeyDelivery) -> bytes:
    """KeyDelivery -> bytes (the payload of a KEY segment)."""
    key = _payload_bytes(body.key, "key")
    bits = body.key_bits
    if not isinstance(bits, int) or not 1 <= bits <= 0xFFFF:
        raise EncodeError(LAYER, "key_bits", f"must be 1..65535, got {bits!r}")
    if len(key) != (bits + 7) // 8:
        raise EncodeError(LAYER, "key", f"{len(key)} bytes cannot hold exactly {bits} bits")
    if key[-1] & _padding_mask(bits):
        raise EncodeError(LAYER, "key", "padding bits after the last key bit must be zero")
    return build(_KEY_DELIVERY, dict(key_id=body.key_id, key_bits=bits, key=key), LAYER)


def decode_key_delivery(data: bytes) -> KeyDelivery:
    """Bytes -> KeyDelivery; offsets in errors are relative to the body."""
    value = parse(_KEY_DELIVERY, data, LAYER)
    if value.key_bits == 0:
        fail(LAYER, "key_bits", 4, "a key delivery carries at least one bit")
    if value.key[-1] & _padding_mask(value.key_bits):
        fail(LAYER, "key", _KEY_OFFSET + len(value.key) - 1,
             "padding bits after the last key bit must be zero")
    return KeyDelivery(value.key_id, value.key_bits, value.key)


def encode_key_deliveries(keys: Sequence[KeyDelivery]) -> bytes:
    """One or more KeyDelivery bodies back to back (the payload of a KEY segment)."""
    if isinstance(keys, KeyDelivery) or not isinstance(keys, Sequence) or not keys:
        raise EncodeError(LAYER, "keys", "a KEY payload carries a non-empty sequence of keys")
    data = b"".join(encode_key_delivery(body) for body in keys)
    if len(data) > MAX_PAYLOAD:
        raise EncodeError(LAYER, "keys", f"{len(data)} bytes exceed the {MAX_PAYLOAD}-byte payload")
    return data


def _body_end(data: bytes, offset: int) -> int:
    """End of the body starting at ``offset`` (may lie beyond the data: truncation)."""
    if len(data) - offset < _KEY_OFFSET:
        return len(data)
    bits = int.from_bytes(data[offset + 4:offset + _KEY_OFFSET], "big")
    return offset + _KEY_OFFSET + (bits + 7) // 8


def decode_key_deliveries(data: bytes) -> tuple[KeyDelivery, ...]:
    """Bytes -> the KeyDelivery bodies of a KEY payload, in order (at least one).

    Errors name the field of the body that fails, with offsets relative to the payload.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return (decode_key_delivery(data),)  # raises DecodeError naming the type
    data = bytes(data)
    if not data:
        fail(LAYER, "key_id", 0, "a KEY payload carries at least one key delivery")
    keys, offset = [], 0
    while offset < len(data):
        end = _body_end(data, offset)
        try:
            keys.append(decode_key_delivery(data[offset:end]))
        except DecodeError as error:
            raise DecodeError(LAYER, error.field, offset + error.offset,
                              f"key delivery {len(keys)}: {error.reason}") from None
        offset = end
    return tuple(keys)


# --- SYN body --------------------------------------------------------------------

def encode_connect_request(body: ConnectRequest) -> bytes:
    """ConnectRequest -> bytes (the payload of a SYN segment)."""
    try:
        service = ServiceClass(body.service)
    except ValueError:
        raise EncodeError(LAYER, "service", f"unknown service class {body.service!r}") from None
    if not isinstance(body.application, str) or not body.application:
        raise EncodeError(LAYER, "application", "must be a non-empty str")
    try:
        name = body.application.encode("utf-8")
    except UnicodeEncodeError as error:
        raise EncodeError(LAYER, "application", str(error)) from None
    fields = dict(service=int(service), rate=body.rate, burst=body.burst, application=name)
    return build(_CONNECT_REQUEST, fields, LAYER)


def decode_connect_request(data: bytes) -> ConnectRequest:
    """Bytes -> ConnectRequest; offsets in errors are relative to the body."""
    value = parse(_CONNECT_REQUEST, data, LAYER)
    if value.service not in ServiceClass._value2member_map_:
        fail(LAYER, "service", 0, f"unknown service class {value.service}")
    if not value.application:
        fail(LAYER, "application", _APPLICATION_OFFSET, "empty application name")
    try:
        name = value.application.decode("utf-8")
    except UnicodeDecodeError as error:
        fail(LAYER, "application", _APPLICATION_OFFSET + error.start, "invalid UTF-8")
    return ConnectRequest(ServiceClass(value.service), value.rate, value.burst, name)


# --- dispatch --------------------------------------------------------------------

def decode_body(segment: Segment) -> (KeyDelivery | tuple[KeyDelivery, ...] | ConnectRequest
                                      | bytes):
    """Read a segment's payload by its flags.

    KEY -> :class:`KeyDelivery` when the payload holds one body, the tuple of
    :func:`decode_key_deliveries` when it holds several; SYN with a payload -> :class:`ConnectRequest`;
    anything else -> the payload bytes unchanged (empty for a bare ACK, SYN+ACK
    accepting the requested service, FIN or RST). Errors name ``payload.<field>``
    with offsets counted from the start of the segment.
    """
    try:
        if segment.flags & SegmentFlags.KEY:
            keys = decode_key_deliveries(segment.payload)
            return keys[0] if len(keys) == 1 else keys
        if segment.flags & SegmentFlags.SYN and segment.payload:
            return decode_connect_request(segment.payload)
    except DecodeError as error:
        raise DecodeError(LAYER, f"payload.{error.field}", HEADER_LEN + error.offset,
                          error.reason) from None
    return segment.payload

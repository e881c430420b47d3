"""Q3P / QKDLL frame codec (seed 002, SECOQC, §3.1, Table II and Fig. 12).

A Q3P frame travels on a QBB link's classical channel (one UDP datagram on
``qbb.wire.Q3P_UDP_PORT``).  All integers are big-endian::

    off  size  field           meaning
    0    4     Length          whole frame: header + payload + A-tag
    4    4     Message number  per link and direction (u32)
    8    1     Flags           bit7 E (payload one-time-pad encrypted), bit6 A (tag present),
                               bit5 M (more fragments follow), bits4-2 priority 0..7 (7 highest),
                               bits1-0 reserved, must be 0
    9    1     Version         1
    10   1     Command         :class:`Command`
    11   1     Channel         0 by default ("for further implementations")
    12   8     E-offset        offset of the pad in the sender's encryption pool (0 when E clear)
    20   8     A-offset        offset of the one-time MAC key (0 when A clear)
    28   n     Payload         QKDNL packet (DATA), control body, or ciphertext when E is set
    28+n 16    A-tag           one-time MAC tag over bytes 0..28+n (encrypt-then-MAC); iff A

:class:`Q3PFrame` has no ``authenticated`` field: a frame is authenticated exactly when
its ``tag`` is not ``None``, so the two can never disagree.  ``docs/wire/q3p.md`` gives the
control bodies (ACK, HANDSHAKE, SYNC, notices) byte by byte.

The construct structures :data:`HEADER` and :data:`FRAME` are the specification;
:func:`encode_frame` and :func:`decode_frame` are a ``struct`` fast path for the per-frame
hot path, kept equal to :func:`encode_frame_spec` / :func:`decode_frame_spec` by
the tests.  Both decoders apply the same semantic rules (:func:`_check_header`).

Sending an authenticated frame takes one pass: :func:`encode_frame_without_tag` builds the
frame with A set and a zeroed tag slot, the link layer computes the MAC over
:func:`authenticated_bytes` and :func:`attach_tag` writes the tag into the slot.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Iterable, Union

import construct as c

from qbb.codec import IPv4Address, build, fail, parse
from qbb.errors import DecodeError, EncodeError

LAYER = "Q3P"
Q3P_HEADER_LEN = 28
Q3P_TAG_LEN = 16
Q3P_VERSION = 1
Q3P_MAX_FRAME_LEN = 0xFFFFFFFF
KEY_RATIO_MAX = 1000

FLAG_E = 0x80
FLAG_A = 0x40
FLAG_M = 0x20
PRIORITY_SHIFT = 2
FLAGS_RESERVED = 0x03

_U16, _U32, _U64 = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
_SACK_MAX_BITS = 8 * 0xFFFF


class Command(enum.IntEnum):
    """The Command byte."""

    DATA = 0  # payload: a QKDNL packet (or its ciphertext when E is set)
    ACK = 1
    HANDSHAKE = 2
    HANDSHAKE_ACK = 3
    SYNC = 4  # key-store synchronisation
    SYNC_ACK = 5
    KEEPALIVE = 6
    CLOSE = 7
    RESET = 8


class Reason(enum.IntEnum):
    """Reason codes of KEEPALIVE / CLOSE / RESET bodies (unknown codes decode as ``int``)."""

    NORMAL = 0
    RESTART = 1
    PROTOCOL_ERROR = 2
    KEY_EXHAUSTED = 3
    AUTH_FAILURE = 4
    TIMEOUT = 5


_COMMANDS = {int(cmd): cmd for cmd in Command}
_REASONS = {int(reason): reason for reason in Reason}


@dataclass(frozen=True)
class Q3PFrame:
    """One Q3P frame; ``tag`` is 16 bytes iff the frame is authenticated."""

    message_number: int
    command: Command
    payload: bytes = b""
    tag: bytes | None = None
    encrypted: bool = False
    more_fragments: bool = False
    priority: int = 0
    channel: int = 0
    e_offset: int = 0
    a_offset: int = 0
    version: int = Q3P_VERSION

    @property
    def authenticated(self) -> bool:
        return self.tag is not None


# --- specification (construct) -------------------------------------------------------

FLAGS = c.BitStruct("E" / c.Flag, "A" / c.Flag, "M" / c.Flag,
                    "priority" / c.BitsInteger(3), "reserved" / c.BitsInteger(2))


def _header_fields(length: c.Construct) -> list[c.Construct]:
    return [
        "length" / length,
        "message_number" / c.Int32ub,
        "flags" / FLAGS,
        "version" / c.Int8ub,
        "command" / c.Enum(c.Int8ub, Command),
        "channel" / c.Int8ub,
        "e_offset" / c.Int64ub,
        "a_offset" / c.Int64ub,
    ]


def _tag_len(ctx: c.Container) -> int:
    return Q3P_TAG_LEN if ctx.flags["A"] else 0


HEADER = c.Struct(*_header_fields(c.Int32ub))
FRAME = c.Struct(
    *_header_fields(c.Rebuild(c.Int32ub,
                              lambda ctx: Q3P_HEADER_LEN + len(ctx.payload) + _tag_len(ctx))),
    "payload" / c.Bytes(lambda ctx: ctx.length - Q3P_HEADER_LEN - _tag_len(ctx)),
    "tag" / c.If(lambda ctx: ctx.flags["A"], c.Bytes(Q3P_TAG_LEN)),
)

# --- semantic rules shared by both decoders ---------------------------------------------


def _check_header(length: int, size: int, flags: int, version: int, command: int,
                  e_offset: int, a_offset: int) -> None:
    """Raise :class:`DecodeError` unless the parsed header describes a valid frame."""
    if length != size:
        fail(LAYER, "length", 0, f"length field says {length} bytes, the buffer has {size}")
    if flags & FLAGS_RESERVED:
        fail(LAYER, "flags.reserved", 8,
             f"reserved flag bits are {flags & FLAGS_RESERVED}, must be 0")
    if version != Q3P_VERSION:
        fail(LAYER, "version", 9, f"unsupported version {version} (expected {Q3P_VERSION})")
    if command not in _COMMANDS:
        fail(LAYER, "command", 10, f"unknown command {command}")
    if flags & FLAG_A and length < Q3P_HEADER_LEN + Q3P_TAG_LEN:
        fail(LAYER, "tag", Q3P_HEADER_LEN,
             f"A flag set but a {length}-byte frame has no room for the tag")
    if e_offset and not flags & FLAG_E:
        fail(LAYER, "e_offset", 12, f"E flag clear but E-offset is {e_offset}")
    if a_offset and not flags & FLAG_A:
        fail(LAYER, "a_offset", 20, f"A flag clear but A-offset is {a_offset}")


# --- fast path ---------------------------------------------------------------------------

_HEADER = struct.Struct(">IIBBBBQQ")
_TRUNCATION = ((4, "length", 0), (8, "message_number", 4), (9, "flags", 8), (10, "version", 9),
               (11, "command", 10), (12, "channel", 11), (20, "e_offset", 12), (28, "a_offset", 20))


def _truncated(size: int) -> DecodeError:
    end, field, offset = next(entry for entry in _TRUNCATION if entry[0] > size)
    return DecodeError(LAYER, field, offset,
                       f"truncated: {size} bytes, the header needs {Q3P_HEADER_LEN}")


def _byte_view(data: object) -> bytes | memoryview:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return memoryview(data).cast("B")
    raise DecodeError(LAYER, "<message>", 0, f"expected bytes, got {type(data).__name__}")


_FRAME_FIELDS = tuple(Q3PFrame.__dataclass_fields__)


def _new_frame(*values: object) -> Q3PFrame:
    """``Q3PFrame(*values)`` for already validated values, without the frozen ``__init__``.

    A frozen dataclass assigns each field through ``object.__setattr__``, which costs more
    than the rest of :func:`decode_frame` together; filling ``__dict__`` directly is equal.
    """
    frame = object.__new__(Q3PFrame)
    frame.__dict__.update(zip(_FRAME_FIELDS, values))
    return frame


def decode_frame(data: bytes) -> Q3PFrame:
    """Decode one whole frame (``data`` is exactly one frame: Length must equal its size)."""
    view = _byte_view(data)
    size = len(view)
    if size < Q3P_HEADER_LEN:
        raise _truncated(size)
    length, number, flags, version, command, channel, e_offset, a_offset = _HEADER.unpack_from(view)
    _check_header(length, size, flags, version, command, e_offset, a_offset)
    tag = None
    end = length
    if flags & FLAG_A:
        end -= Q3P_TAG_LEN
        tag = bytes(view[end:])
    return _new_frame(number, _COMMANDS[command], bytes(view[Q3P_HEADER_LEN:end]), tag,
                      bool(flags & FLAG_E), bool(flags & FLAG_M), (flags >> PRIORITY_SHIFT) & 7,
                      channel, e_offset, a_offset, version)


_RANGES = (("message_number", _U32), ("priority", 7), ("channel", 0xFF),
           ("e_offset", _U64), ("a_offset", _U64))


def _check_consistency(frame: Q3PFrame, authenticated: bool) -> None:
    """The rules both encoders apply beyond plain integer ranges."""
    if not isinstance(frame.version, int) or frame.version != Q3P_VERSION:
        raise EncodeError(LAYER, "version",
                          f"only version {Q3P_VERSION} is supported, not {frame.version!r}")
    if not isinstance(frame.command, int) or frame.command not in _COMMANDS:
        raise EncodeError(LAYER, "command", f"unknown command {frame.command!r}")
    if frame.e_offset and not frame.encrypted:
        raise EncodeError(LAYER, "e_offset", "must be 0 when the payload is not encrypted")
    if frame.a_offset and not authenticated:
        raise EncodeError(LAYER, "a_offset", "must be 0 when the frame is not authenticated")


def _check_frame(frame: Q3PFrame, authenticated: bool, body_len: int) -> None:
    """Raise :class:`EncodeError` naming the first field that cannot be encoded."""
    if not isinstance(frame.payload, (bytes, bytearray, memoryview)):
        raise EncodeError(LAYER, "payload", f"expected bytes, got {type(frame.payload).__name__}")
    for name, top in _RANGES:
        value = getattr(frame, name)
        if not isinstance(value, int) or not 0 <= value <= top:
            raise EncodeError(LAYER, name, f"{value!r} is not an integer in 0..{top}")
    _check_consistency(frame, authenticated)
    if Q3P_HEADER_LEN + body_len > Q3P_MAX_FRAME_LEN:
        raise EncodeError(LAYER, "length",
                          f"frame of {Q3P_HEADER_LEN + body_len} bytes is too long")


def _pack_header(frame: Q3PFrame, authenticated: bool) -> bytes:
    """The 28 header bytes; struct's own range checks run first, the details only on failure."""
    payload, command = frame.payload, frame.command
    body_len = (len(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else 0) + (
        Q3P_TAG_LEN if authenticated else 0)
    try:
        flags = ((FLAG_E if frame.encrypted else 0) | (FLAG_A if authenticated else 0)
                 | (FLAG_M if frame.more_fragments else 0) | frame.priority << PRIORITY_SHIFT)
        header = _HEADER.pack(Q3P_HEADER_LEN + body_len, frame.message_number, flags,
                              frame.version, command, frame.channel, frame.e_offset, frame.a_offset)
    except (struct.error, TypeError, ValueError) as error:
        _check_frame(frame, authenticated, body_len)
        raise EncodeError(LAYER, "<message>", str(error)) from None
    if not (0 <= frame.priority <= 7 and frame.version == Q3P_VERSION and command in _COMMANDS
            and (frame.encrypted or not frame.e_offset) and (authenticated or not frame.a_offset)
            and isinstance(payload, (bytes, bytearray, memoryview))):
        _check_frame(frame, authenticated, body_len)
    return header


def _checked_tag(tag: object) -> bytes:
    if not isinstance(tag, (bytes, bytearray, memoryview)) or len(tag) != Q3P_TAG_LEN:
        raise EncodeError(LAYER, "tag", f"must be {Q3P_TAG_LEN} bytes or None, got {tag!r}")
    return tag


def encode_frame(frame: Q3PFrame) -> bytes:
    """Encode ``frame``; Length and the A flag are computed (A set iff ``tag`` is not None)."""
    tag = frame.tag
    if tag is None:
        return _pack_header(frame, False) + frame.payload
    return b"".join((_pack_header(frame, True), frame.payload, _checked_tag(tag)))


def encode_frame_without_tag(frame: Q3PFrame) -> bytearray:
    """Encode ``frame`` with A set and a zeroed 16-byte tag slot (``frame.tag`` is ignored).

    MAC :func:`authenticated_bytes` of the result, then :func:`attach_tag` it.
    """
    header = _pack_header(frame, True)
    buffer = bytearray(len(header) + len(frame.payload) + Q3P_TAG_LEN)
    buffer[:Q3P_HEADER_LEN] = header
    buffer[Q3P_HEADER_LEN:-Q3P_TAG_LEN] = frame.payload
    return buffer


def attach_tag(buffer: bytearray, tag: bytes) -> bytearray:
    """Write ``tag`` into the tag slot of a buffer from :func:`encode_frame_without_tag`."""
    if len(buffer) < Q3P_HEADER_LEN + Q3P_TAG_LEN or not buffer[8] & FLAG_A:
        raise EncodeError(LAYER, "tag", "buffer is not an authenticated frame with a tag slot")
    buffer[-Q3P_TAG_LEN:] = _checked_tag(tag)
    return buffer


def authenticated_bytes(frame_bytes: bytes | bytearray | memoryview) -> memoryview:
    """The bytes the A-tag covers: the whole frame except the tag (header + payload)."""
    view = _byte_view(frame_bytes)
    view = view if isinstance(view, memoryview) else memoryview(view)
    if len(view) < Q3P_HEADER_LEN:
        raise _truncated(len(view))
    if not view[8] & FLAG_A:
        return view
    if len(view) < Q3P_HEADER_LEN + Q3P_TAG_LEN:
        fail(LAYER, "tag", Q3P_HEADER_LEN, "A flag set but the frame has no room for the tag")
    return view[:-Q3P_TAG_LEN]


# --- construct path (the specification, used to cross-check the fast path) -------------


def _flags_byte(flags: c.Container) -> int:
    return (flags.E << 7 | flags.A << 6 | flags.M << 5 | flags.priority << PRIORITY_SHIFT
            | flags.reserved)


def decode_frame_spec(data: bytes) -> Q3PFrame:
    """:func:`decode_frame` through the construct specification (slow, for cross-checks)."""
    head = parse(HEADER, data, LAYER, whole=False)
    _check_header(head.length, len(_byte_view(data)), _flags_byte(head.flags), head.version,
                  int(head.command), head.e_offset, head.a_offset)
    value = parse(FRAME, data, LAYER)
    return Q3PFrame(value.message_number, _COMMANDS[int(value.command)], value.payload, value.tag,
                    value.flags.E, value.flags.M, value.flags.priority, value.channel,
                    value.e_offset, value.a_offset, value.version)


def encode_frame_spec(frame: Q3PFrame) -> bytes:
    """:func:`encode_frame` through the construct specification (slow, for cross-checks)."""
    authenticated = frame.tag is not None
    _check_consistency(frame, authenticated)
    flags = dict(E=bool(frame.encrypted), A=authenticated, M=bool(frame.more_fragments),
                 priority=frame.priority, reserved=0)
    return build(FRAME, dict(length=None, message_number=frame.message_number, flags=flags,
                             version=frame.version, command=frame.command, channel=frame.channel,
                             e_offset=frame.e_offset, a_offset=frame.a_offset,
                             payload=frame.payload, tag=frame.tag), LAYER)


# --- control bodies ---------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    """ACK body: cumulative ack (next expected number), window, selective-ack bitmap.

    Bit ``i`` of ``sack`` (byte ``i // 8``, most significant bit first) set means
    message number ``cumulative + 1 + i`` (mod 2**32) was received.
    """

    cumulative: int
    window: int
    sack: bytes = b""

    def received(self) -> list[int]:
        """The message numbers the SACK bitmap marks as received."""
        return [(self.cumulative + 1 + i) & _U32 for i in range(len(self.sack) * 8)
                if self.sack[i >> 3] & (0x80 >> (i & 7))]

    @classmethod
    def from_received(cls, cumulative: int, window: int, received: Iterable[int]) -> Ack:
        """An ACK whose bitmap marks ``received``.

        Numbers at or behind ``cumulative`` (serial-number arithmetic, RFC 1982) are
        already acknowledged and skipped; one too far ahead for the bitmap is an error.
        """
        ahead = {(n - cumulative - 1) & _U32 for n in received}
        gaps = sorted(gap for gap in ahead if gap < 2**31 - 1)
        if gaps and gaps[-1] >= _SACK_MAX_BITS:
            raise EncodeError(LAYER, "ack.sack", f"message number {cumulative + 1 + gaps[-1]} "
                              f"is beyond the {_SACK_MAX_BITS}-bit bitmap")
        bitmap = bytearray((gaps[-1] >> 3) + 1 if gaps else 0)
        for i in gaps:
            bitmap[i >> 3] |= 0x80 >> (i & 7)
        return cls(cumulative, window, bytes(bitmap))


@dataclass(frozen=True)
class Handshake:
    """HANDSHAKE / HANDSHAKE_ACK body: who I am and where my key stores stand."""

    node_id: str
    link_id: int
    session_nonce: int
    mtu: int
    window: int
    enc_next: int
    dec_next: int
    key_ratio: int  # per-mille of new key assigned to the initiator's encryption pool


@dataclass(frozen=True)
class Sync:
    """SYNC / SYNC_ACK body: key-store positions of the sender."""

    session_nonce: int
    enc_next: int
    dec_next: int
    discarded: int  # key below this offset has been released


@dataclass(frozen=True)
class Notice:
    """KEEPALIVE / CLOSE / RESET body: a reason code and an optional text."""

    reason: int = Reason.NORMAL
    text: str = ""


Body = Union[Ack, Handshake, Sync, Notice]


class _Utf8(c.Adapter):
    """UTF-8 text with a u16 byte-length prefix; bad text is a construct error with a path."""

    def _decode(self, obj: bytes, context: object, path: str) -> str:
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError as error:
            raise c.StringError(f"invalid UTF-8: {error.reason}", path=path) from None

    def _encode(self, obj: str, context: object, path: str) -> bytes:
        try:
            return obj.encode("utf-8")
        except (UnicodeEncodeError, AttributeError) as error:
            raise c.StringError(f"not encodable as UTF-8: {error}", path=path) from None


ACK = "ack" / c.Struct("cumulative" / c.Int32ub, "window" / c.Int32ub,
                      "sack" / c.Prefixed(c.Int16ub, c.GreedyBytes))
HANDSHAKE = "handshake" / c.Struct(
    "node_id" / IPv4Address,
    "link_id" / c.Int32ub,
    "session_nonce" / c.Int64ub,
    "mtu" / c.Int16ub,
    "window" / c.Int32ub,
    "enc_next" / c.Int64ub,
    "dec_next" / c.Int64ub,
    "key_ratio" / c.Int16ub,
    "flags" / c.Const(0, c.Int16ub),
)
HANDSHAKE_KEY_RATIO_OFFSET = 38
SYNC = "sync" / c.Struct("session_nonce" / c.Int64ub, "enc_next" / c.Int64ub,
                        "dec_next" / c.Int64ub, "discarded" / c.Int64ub)
NOTICE = "notice" / c.Struct("reason" / c.Enum(c.Int16ub, Reason),
                            "text" / _Utf8(c.Prefixed(c.Int16ub, c.GreedyBytes)))


def _fields(container: c.Container, cls: type) -> dict:
    return {name: container[name] for name in cls.__dataclass_fields__}


def encode_ack(ack: Ack) -> bytes:
    return build(ACK, vars(ack), LAYER)


def decode_ack(data: bytes) -> Ack:
    return Ack(**_fields(parse(ACK, data, LAYER), Ack))


def encode_handshake(handshake: Handshake) -> bytes:
    if not isinstance(handshake.key_ratio, int) or not 0 <= handshake.key_ratio <= KEY_RATIO_MAX:
        raise EncodeError(LAYER, "handshake.key_ratio",
                          f"{handshake.key_ratio!r} not in 0..{KEY_RATIO_MAX}")
    return build(HANDSHAKE, dict(vars(handshake), flags=0), LAYER)


def decode_handshake(data: bytes) -> Handshake:
    value = parse(HANDSHAKE, data, LAYER)
    if value.key_ratio > KEY_RATIO_MAX:
        fail(LAYER, "handshake.key_ratio", HANDSHAKE_KEY_RATIO_OFFSET,
             f"key ratio {value.key_ratio} exceeds {KEY_RATIO_MAX} per mille")
    return Handshake(**_fields(value, Handshake))


def encode_sync(sync: Sync) -> bytes:
    return build(SYNC, vars(sync), LAYER)


def decode_sync(data: bytes) -> Sync:
    return Sync(**_fields(parse(SYNC, data, LAYER), Sync))


def encode_notice(notice: Notice) -> bytes:
    return build(NOTICE, vars(notice), LAYER)


def decode_notice(data: bytes) -> Notice:
    value = parse(NOTICE, data, LAYER)
    reason = int(value.reason)
    return Notice(_REASONS.get(reason, reason), value.text)


BODY_TYPES: dict[Command, type] = {
    Command.ACK: Ack, Command.HANDSHAKE: Handshake, Command.HANDSHAKE_ACK: Handshake,
    Command.SYNC: Sync, Command.SYNC_ACK: Sync,
    Command.KEEPALIVE: Notice, Command.CLOSE: Notice, Command.RESET: Notice,
}
_DECODERS = {Ack: decode_ack, Handshake: decode_handshake, Sync: decode_sync, Notice: decode_notice}
_ENCODERS = {Ack: encode_ack, Handshake: encode_handshake, Sync: encode_sync, Notice: encode_notice}


def decode_body(command: int, payload: bytes) -> Body | bytes:
    """Decode the plaintext payload of a ``command`` frame (DATA payloads are returned as is).

    Error offsets are relative to the start of the payload.
    """
    if command == Command.DATA:
        return bytes(_byte_view(payload))
    body_type = BODY_TYPES.get(command) if isinstance(command, int) else None
    if body_type is None:
        fail(LAYER, "command", 10, f"unknown command {command!r}")
    return _DECODERS[body_type](payload)


def encode_body(body: Body) -> bytes:
    """Encode a control body (the payload of a frame whose command is in :data:`BODY_TYPES`)."""
    encoder = _ENCODERS.get(type(body))
    if encoder is None:
        raise EncodeError(LAYER, "payload", f"not a Q3P control body: {type(body).__name__}")
    return encoder(body)

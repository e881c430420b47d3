"""Q-RoKR signalling codec (seed 000 §IV-C), QKDNL protocol 254.

A request R = {S, D, K, DDL} is served by reserving K key bits on every link of a
path before the deadline DDL. The source node S sends a RESERVE to every
reservation node of the chosen path (intermediate nodes and D); each reservation
node b handles its predecessor link l(a,b) ("each reservation node is assigned the
responsibility of handling the key reservation for the predecessor link", §III-A)
and answers with a FEEDBACK carrying its verdict and the link's time boundary
``tag`` (§IV-B, eq. 2). When a link fails or the source abandons the path it sends
CANCEL to release the other links' reservations (§IV-C.3).

Every message is big-endian and starts with an 8-byte header::

    0        1       2          4              8
    | version| type  | length   | request id   | body ...

``version`` is 1, ``type`` a :class:`MessageType`, ``length`` the whole message
in bytes (verified on decode) and ``request id`` chosen by S, echoed in FEEDBACK
and CANCEL. Times (DDL, tag) are u64 microseconds of network time; K is u64 bits.

* RESERVE (44 + 4n bytes): S, D, K, DDL, link (a, b), n, 3 zero bytes, the n
  path addresses from S to D. The path is loop-free, starts at S, ends at D and
  (a, b) is one of its hops. The priority Pr of eq. 3 is not sent: each
  reservation node ranks its own queue Q(a,b) by K and DDL and promotes by
  Pr / (DDL - t_c) with its own clock.
* FEEDBACK (28 bytes): link (a, b), tag, :class:`FeedbackStatus`, 3 zero bytes.
* CANCEL (20 bytes): link (a, b), :class:`CancelReason`, 3 zero bytes.

Decoding is canonical (reserved bytes must be zero, enums known). The byte
layouts are tabled in ``docs/wire/qrokr.md``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

import construct as c

from qbb.codec import IPv4Address, build, fail, is_canonical_ipv4, parse
from qbb.errors import EncodeError

LAYER = "Q-RoKR"
VERSION = 1
HEADER_LEN = 8


class MessageType(enum.IntEnum):
    RESERVE = 1
    FEEDBACK = 2
    CANCEL = 3


class FeedbackStatus(enum.IntEnum):
    """Verdict of a reservation node on its predecessor link."""

    SUCCESS = 0  # K bits reserved before DDL; tag is the new time boundary
    FAILURE = 1  # predicted boundary misses DDL; tag is the link's current boundary
    EXPIRED = 2  # DDL had passed when the request was processed
    NO_LINK = 3  # the node has no QKD link to the named predecessor


class CancelReason(enum.IntEnum):
    UNSPECIFIED = 0
    LINK_FAILED = 1  # another link of the path refused
    PATH_CHANGED = 2  # the source chose another path
    WITHDRAWN = 3  # the application withdrew the request
    EXPIRED = 4  # DDL passed before every link answered


@dataclass(frozen=True)
class Reserve:
    """RESERVE: ask reservation node ``link[1]`` to reserve on l(link[0], link[1])."""

    request_id: int
    source: str
    destination: str
    key_bits: int
    deadline_us: int
    link: tuple[str, str]
    path: tuple[str, ...]


@dataclass(frozen=True)
class Feedback:
    """FEEDBACK: verdict on ``link`` and its time boundary ``tag_us``."""

    request_id: int
    link: tuple[str, str]
    status: FeedbackStatus
    tag_us: int


@dataclass(frozen=True)
class Cancel:
    """CANCEL: release the reservation held for the request on ``link``."""

    request_id: int
    link: tuple[str, str]
    reason: CancelReason


RokrMessage = Union[Reserve, Feedback, Cancel]

_ZERO3 = c.Const(bytes(3))
_LINK = ("link_a" / IPv4Address, "link_b" / IPv4Address)

_RESERVE = c.Struct(
    "source" / IPv4Address,
    "destination" / IPv4Address,
    "key_bits" / c.Int64ub,
    "deadline_us" / c.Int64ub,
    *_LINK,
    "path_len" / c.Rebuild(c.Int8ub, c.len_(c.this.path)),
    "reserved" / _ZERO3,
    "path" / c.Array(c.this.path_len, IPv4Address),
)
_FEEDBACK = c.Struct(*_LINK, "tag_us" / c.Int64ub, "status" / c.Int8ub, "reserved" / _ZERO3)
_CANCEL = c.Struct(*_LINK, "reason" / c.Int8ub, "reserved" / _ZERO3)

_HEADER_FIELDS = ("version" / c.Int8ub, "type" / c.Int8ub, "length" / c.Int16ub,
                  "request_id" / c.Int32ub)
_HEADER = c.Struct(*_HEADER_FIELDS)
_BODIES = {MessageType.RESERVE: _RESERVE, MessageType.FEEDBACK: _FEEDBACK,
           MessageType.CANCEL: _CANCEL}
_MESSAGE = c.Struct(*_HEADER_FIELDS,
                    "body" / c.Switch(c.this.type, {int(k): v for k, v in _BODIES.items()}))

# Absolute offsets of the body fields that semantic checks name.
_RESERVE_LINK_OFFSET = 32
_PATH_OFFSET = 44
_STATUS_OFFSET = 24
_REASON_OFFSET = 16


# --- semantic checks shared by encoder and decoder -------------------------------

def _path_problem(msg: Reserve) -> tuple[str, int, str] | None:
    """(field, offset, reason) if the path does not fit S, D and the link."""
    path = msg.path
    if len(path) < 2:
        return "path", _PATH_OFFSET, f"needs at least S and D, has {len(path)} node(s)"
    if path[0] != msg.source:
        return "path", _PATH_OFFSET, f"starts at {path[0]}, not at source {msg.source}"
    if path[-1] != msg.destination:
        return ("path", _PATH_OFFSET + 4 * (len(path) - 1),
                f"ends at {path[-1]}, not at destination {msg.destination}")
    for index, node in enumerate(path):
        if node in path[:index]:
            return "path", _PATH_OFFSET + 4 * index, f"visits {node} twice"
    if tuple(msg.link) not in zip(path, path[1:]):
        return "link_a", _RESERVE_LINK_OFFSET, f"link {tuple(msg.link)} is not a hop of the path"
    return None


def _address(address: object, name: str) -> str:
    """Refuse what inet_aton would accept but not round-trip ("010.0.0.1", "1.2.3.4 ")."""
    if is_canonical_ipv4(address):
        return address
    raise EncodeError(LAYER, name, f"not a canonical dotted-quad IPv4 address: {address!r}")


def _link(link: object) -> tuple[str, str]:
    if not isinstance(link, tuple) or len(link) != 2:
        raise EncodeError(LAYER, "link", f"expected a pair of addresses, got {link!r}")
    return _address(link[0], "link_a"), _address(link[1], "link_b")


def _member(enum_cls: type[enum.IntEnum], value: object, name: str) -> int:
    try:
        return int(enum_cls(value))
    except ValueError:
        raise EncodeError(LAYER, name, f"unknown {enum_cls.__name__} {value!r}") from None


# --- encoding --------------------------------------------------------------------

def _reserve_body(msg: Reserve) -> tuple[MessageType, dict]:
    link = _link(msg.link)
    if not isinstance(msg.path, tuple):
        raise EncodeError(LAYER, "path", f"expected a tuple, got {type(msg.path).__name__}")
    problem = _path_problem(msg)
    if problem:
        raise EncodeError(LAYER, problem[0], problem[2])
    for index, node in enumerate(msg.path):  # covers S and D: path[0] is S, path[-1] is D
        _address(node, f"path[{index}]")
    return MessageType.RESERVE, dict(
        source=msg.source, destination=msg.destination, key_bits=msg.key_bits,
        deadline_us=msg.deadline_us, link_a=link[0], link_b=link[1], path=list(msg.path))


def _feedback_body(msg: Feedback) -> tuple[MessageType, dict]:
    link = _link(msg.link)
    status = _member(FeedbackStatus, msg.status, "status")
    return MessageType.FEEDBACK, dict(link_a=link[0], link_b=link[1], tag_us=msg.tag_us,
                                      status=status)


def _cancel_body(msg: Cancel) -> tuple[MessageType, dict]:
    link = _link(msg.link)
    reason = _member(CancelReason, msg.reason, "reason")
    return MessageType.CANCEL, dict(link_a=link[0], link_b=link[1], reason=reason)


_ENCODERS = {Reserve: _reserve_body, Feedback: _feedback_body, Cancel: _cancel_body}


def encode_rokr(msg: RokrMessage) -> bytes:
    """Reserve | Feedback | Cancel -> bytes; the length field is computed here."""
    encoder = _ENCODERS.get(type(msg))
    if encoder is None:
        raise EncodeError(LAYER, "type", f"not a Q-RoKR message: {type(msg).__name__}")
    kind, fields = encoder(msg)
    body = build(_BODIES[kind], fields, LAYER)
    header = dict(version=VERSION, type=int(kind), length=HEADER_LEN + len(body),
                  request_id=msg.request_id)
    return build(_HEADER, header, LAYER) + body


# --- decoding --------------------------------------------------------------------

def _check_header(data: bytes) -> None:
    header = parse(_HEADER, data, LAYER, whole=False)
    if header.version != VERSION:
        fail(LAYER, "version", 0, f"unsupported version {header.version}, expected {VERSION}")
    if header.type not in MessageType._value2member_map_:
        fail(LAYER, "type", 1, f"unknown message type {header.type}")
    if header.length != len(data):
        fail(LAYER, "length", 2, f"says {header.length} bytes but the buffer holds {len(data)}")


def _decode_reserve(request_id: int, body: c.Container) -> Reserve:
    msg = Reserve(request_id, body.source, body.destination, body.key_bits,
                  body.deadline_us, (body.link_a, body.link_b), tuple(body.path))
    problem = _path_problem(msg)
    if problem:
        fail(LAYER, f"body.{problem[0]}", problem[1], problem[2])
    return msg


def _decode_feedback(request_id: int, body: c.Container) -> Feedback:
    if body.status not in FeedbackStatus._value2member_map_:
        fail(LAYER, "body.status", _STATUS_OFFSET, f"unknown feedback status {body.status}")
    return Feedback(request_id, (body.link_a, body.link_b), FeedbackStatus(body.status),
                    body.tag_us)


def _decode_cancel(request_id: int, body: c.Container) -> Cancel:
    if body.reason not in CancelReason._value2member_map_:
        fail(LAYER, "body.reason", _REASON_OFFSET, f"unknown cancel reason {body.reason}")
    return Cancel(request_id, (body.link_a, body.link_b), CancelReason(body.reason))


_DECODERS = {MessageType.RESERVE: _decode_reserve, MessageType.FEEDBACK: _decode_feedback,
             MessageType.CANCEL: _decode_cancel}


def decode_rokr(data: bytes) -> RokrMessage:
    """Bytes -> Reserve | Feedback | Cancel. Raises only DecodeError."""
    _check_header(data)
    value = parse(_MESSAGE, data, LAYER)
    return _DECODERS[MessageType(value.type)](value.request_id, value.body)

"""Scapy dissectors for Q-RoKR signalling (QKDNL protocol 254).

:class:`QRoKR` is the 8-byte common header of :mod:`qbb.routing.rokr_packet`
(``len``, the whole message, is filled in ``post_build`` when ``None``); the body
is a separate layer picked by ``type`` through ``bind_layers``:
:class:`QRoKRReserve` (1), :class:`QRoKRFeedback` (2), :class:`QRoKRCancel` (3).
Building ``QRoKR()/QRoKRFeedback(...)`` sets ``type`` from the binding. The RESERVE
path is a ``FieldListField`` of IPv4 addresses counted by ``path_len``. Importing
this module binds ``IP / QRoKR`` on ``proto=254``.
"""

from __future__ import annotations

from scapy.fields import (
    ByteEnumField,
    ByteField,
    FieldLenField,
    FieldListField,
    IntField,
    IPField,
    LongField,
    ShortField,
    X3BytesField,
)
from scapy.layers.inet import IP
from scapy.packet import Packet, bind_layers

from qbb.routing.rokr_packet import CancelReason, FeedbackStatus, MessageType
from qbb.wire import PROTO_QROKR

HEADER_LEN = 8


def _names(enum_cls: type) -> dict[int, str]:
    return {member.value: member.name for member in enum_cls}


class QRoKR(Packet):
    """Q-RoKR common header."""

    name = "Q-RoKR"
    fields_desc = [
        ByteField("version", 1),
        ByteEnumField("type", MessageType.RESERVE.value, _names(MessageType)),
        ShortField("len", None),
        IntField("request_id", 0),
    ]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.len is None:
            pkt = pkt[:2] + (len(pkt) + len(pay)).to_bytes(2, "big") + pkt[4:]
        return pkt + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes | None]:
        if self.len is None or self.len < HEADER_LEN:
            return s, None
        body = self.len - HEADER_LEN
        return s[:body], s[body:]

    def mysummary(self) -> str:
        return self.sprintf("Q-RoKR %type% request=%request_id%")


class _Body(Packet):
    """A body is the last layer: bytes after it are padding."""

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


def _link_fields() -> list:
    return [IPField("link_a", "0.0.0.0"), IPField("link_b", "0.0.0.0")]


class QRoKRReserve(_Body):
    name = "Q-RoKR reserve"
    fields_desc = [
        IPField("source", "0.0.0.0"),
        IPField("destination", "0.0.0.0"),
        LongField("key_bits", 0),
        LongField("deadline_us", 0),
        *_link_fields(),
        FieldLenField("path_len", None, count_of="path", fmt="B"),
        X3BytesField("reserved", 0),
        FieldListField("path", [], IPField("", "0.0.0.0"),
                       count_from=lambda pkt: pkt.path_len),
    ]


class QRoKRFeedback(_Body):
    name = "Q-RoKR feedback"
    fields_desc = [
        *_link_fields(),
        LongField("tag_us", 0),
        ByteEnumField("status", 0, _names(FeedbackStatus)),
        X3BytesField("reserved", 0),
    ]


class QRoKRCancel(_Body):
    name = "Q-RoKR cancel"
    fields_desc = [
        *_link_fields(),
        ByteEnumField("reason", 0, _names(CancelReason)),
        X3BytesField("reserved", 0),
    ]


bind_layers(IP, QRoKR, proto=PROTO_QROKR)
bind_layers(QRoKR, QRoKRReserve, type=MessageType.RESERVE.value)
bind_layers(QRoKR, QRoKRFeedback, type=MessageType.FEEDBACK.value)
bind_layers(QRoKR, QRoKRCancel, type=MessageType.CANCEL.value)

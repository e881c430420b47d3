"""Scapy dissectors for QKDTL segments (QKDNL protocol 253).

:class:`QKDTL` is the 20-byte segment header of :mod:`qbb.transport.packet`; ``len``
and ``chksum`` are filled in ``post_build`` when left ``None`` (the checksum is
RFC 1071 over the segment, no pseudo-header). The payload is read by the flags as
the codec does: KEY -> one :class:`QKDTLKey` (key id, bit length, key bytes) per
body, SYN with a payload -> :class:`QKDTLConnect`, anything else -> ``Raw``. Importing this module
binds ``IP / QKDTL`` on ``proto=253``, so scapy and Wireshark-style dissection of a
QKDNL packet (an IPv4 layout) continues into the transport segment.
"""

from __future__ import annotations

from scapy.fields import (
    ByteEnumField,
    FieldLenField,
    FlagsField,
    IntField,
    ShortField,
    StrLenField,
    XByteField,
    XShortField,
)
from scapy.layers.inet import IP
from scapy.packet import Packet, Raw, bind_layers
from scapy.utils import checksum

from qbb.transport.packet import SegmentFlags, ServiceClass
from qbb.wire import PROTO_QKDTL

#: Flag names by bit position (LSB first); ``R<n>`` are the reserved bits.
FLAG_NAMES = [SegmentFlags(1 << bit).name if (1 << bit) in SegmentFlags._value2member_map_
              else f"R{bit}" for bit in range(16)]


class QKDTL(Packet):
    """QKDTL segment header."""

    name = "QKDTL"
    fields_desc = [
        ShortField("sport", 0),
        ShortField("dport", 0),
        IntField("seq", 0),
        IntField("ack", 0),
        FlagsField("flags", 0, 16, FLAG_NAMES),
        ShortField("window", 0),
        ShortField("len", None),
        XShortField("chksum", None),
    ]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.len is None:
            pkt = pkt[:16] + len(pay).to_bytes(2, "big") + pkt[18:]
        if self.chksum is None:
            value = checksum(pkt[:18] + b"\x00\x00" + pkt[20:] + pay)
            pkt = pkt[:18] + value.to_bytes(2, "big") + pkt[20:]
        return pkt + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes | None]:
        if self.len is None:
            return s, None
        return s[:self.len], s[self.len:]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        if self.flags & SegmentFlags.KEY:
            return QKDTLKey
        if self.flags & SegmentFlags.SYN:
            return QKDTLConnect
        return Raw

    def mysummary(self) -> str:
        return self.sprintf("QKDTL %sport% > %dport% %flags% seq=%seq% ack=%ack%")


class QKDTLKey(Packet):
    """Key-delivery body of a KEY segment; further bodies of the same segment follow as
    further ``QKDTLKey`` layers (``packet[QKDTLKey:2]`` is the second key)."""

    name = "QKDTL key delivery"
    fields_desc = [
        IntField("key_id", 0),
        FieldLenField("key_bits", None, length_of="key", fmt="H",
                      adjust=lambda pkt, length: 8 * length),
        StrLenField("key", b"", length_from=lambda pkt: (pkt.key_bits + 7) // 8),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, None]:
        return s, None  # QKDTL.extract_padding already cut the segment at ``len``

    def default_payload_class(self, payload: bytes) -> type[Packet]:
        return QKDTLKey


class QKDTLConnect(Packet):
    """Connect-request body of a SYN segment."""

    name = "QKDTL connect request"
    fields_desc = [
        ByteEnumField("service", 0, {m.value: m.name for m in ServiceClass}),
        XByteField("reserved", 0),
        FieldLenField("name_len", None, length_of="application", fmt="H"),
        IntField("rate", 0),
        IntField("burst", 0),
        StrLenField("application", b"", length_from=lambda pkt: pkt.name_len),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


bind_layers(IP, QKDTL, proto=PROTO_QKDTL)

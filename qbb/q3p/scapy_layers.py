"""Scapy dissectors for Q3P frames (layout: ``qbb.q3p.packet``, ``docs/wire/q3p.md``).

``Q3P`` carries every header field under the names of ``Q3PFrame`` except the command,
which is ``cmd`` (``Packet.command()`` is a scapy method); E, A and M show as ``flags``
and the priority as its own field.  The A-tag sits at the end of the frame, after the
payload, but is a field of ``Q3P`` (``pkt[Q3P].tag``): on dissection the tag is moved in
front of the payload before the fields are read, and on building ``post_build`` moves it
back behind the payload and fills ``length`` when it is ``None``.  A frame whose Length
disagrees with its size is kept in field order both ways, so scapy always rebuilds the
bytes it dissected.

The payload dissects by command: DATA with E clear as scapy's ``IP`` (the QKDNL header
is laid out as IPv4), anything with E set as :class:`Q3PCiphertext`, control frames as
:class:`Q3PAck`, :class:`Q3PHandshake`, :class:`Q3PSync` or :class:`Q3PNotice`.  Bytes
of the payload that the inner layers leave over show as ``Raw``; only bytes after the frame
(beyond Length) show as ``Padding``.
Importing this module binds ``Q3P`` to UDP port ``qbb.wire.Q3P_UDP_PORT`` (either side).
"""

from __future__ import annotations

from scapy.fields import (
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    FieldLenField,
    FlagsField,
    IntField,
    IPField,
    LongField,
    ShortEnumField,
    ShortField,
    StrLenField,
    XShortField,
    XStrField,
    XStrLenField,
)
from scapy.layers.inet import IP, UDP
from scapy.packet import NoPayload, Packet, Padding, Raw, bind_layers

from qbb.q3p.packet import (
    FLAG_A,
    Q3P_HEADER_LEN,
    Q3P_TAG_LEN,
    Q3P_VERSION,
    BODY_TYPES,
    Ack,
    Command,
    Handshake,
    Notice,
    Reason,
    Sync,
)
from qbb.wire import Q3P_UDP_PORT

_COMMAND_NAMES = {int(cmd): cmd.name for cmd in Command}
_REASON_NAMES = {int(reason): reason.name for reason in Reason}


def _tag_end(s: bytes) -> int | None:
    """Where the tag of the frame at the start of ``s`` ends, if A is set and Length is sane.

    A frame whose Length disagrees with the buffer is left in wire order, so that scapy
    rebuilds exactly the bytes it was given.
    """
    if len(s) < Q3P_HEADER_LEN or not s[8] & FLAG_A:
        return None
    length = int.from_bytes(s[0:4], "big")
    return length if Q3P_HEADER_LEN + Q3P_TAG_LEN <= length <= len(s) else None


def _inner_padding_to_raw(pkt: Packet) -> None:
    """Turn padding inside the payload (e.g. beyond an IP total length) into ``Raw``.

    Scapy builds ``Padding`` after the outermost layer, which would put these bytes behind
    the tag; as ``Raw`` they stay where they were, in front of it.
    """
    layer = pkt
    while not isinstance(layer.payload, NoPayload):
        if isinstance(layer.payload, Padding):
            trailing = layer.payload.build_padding()
            layer.remove_payload()
            layer.add_payload(Raw(trailing))
            return
        layer = layer.payload


class Q3P(Packet):
    """Q3P / QKDLL frame header with its trailing A-tag."""

    name = "Q3P"
    fields_desc = [
        IntField("length", None),
        IntField("message_number", 0),
        FlagsField("flags", 0, 3, ["M", "A", "E"]),
        BitField("priority", 0, 3),
        BitField("reserved", 0, 2),
        ByteField("version", Q3P_VERSION),
        ByteEnumField("cmd", Command.DATA, _COMMAND_NAMES),
        ByteField("channel", 0),
        LongField("e_offset", 0),
        LongField("a_offset", 0),
        # Length-from rather than fixed length: a truncated tag rebuilds as captured.
        ConditionalField(XStrLenField("tag", b"\x00" * Q3P_TAG_LEN,
                                      length_from=lambda pkt: Q3P_TAG_LEN),
                         lambda pkt: pkt.flags.A),
    ]

    def pre_dissect(self, s: bytes) -> bytes:
        end = _tag_end(s)
        if end is None:
            return s
        tag_start = end - Q3P_TAG_LEN
        return s[:Q3P_HEADER_LEN] + s[tag_start:end] + s[Q3P_HEADER_LEN:tag_start] + s[end:]

    def post_dissect(self, s: bytes) -> bytes:
        # The cached raw header holds the tag in front of the payload: always rebuild.
        self.raw_packet_cache = None
        return s

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        length = self.length or 0
        body = max(length - Q3P_HEADER_LEN - (Q3P_TAG_LEN if self.flags.A else 0), 0)
        return s[:body], s[body:]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        header, tag = pkt[:Q3P_HEADER_LEN], pkt[Q3P_HEADER_LEN:]
        if self.length is None:
            header = (len(pkt) + len(pay)).to_bytes(4, "big") + header[4:]
        elif self.length != len(pkt) + len(pay):
            return pkt + pay  # a Length that disagrees: keep field order, as dissected
        return header + pay + tag

    def do_dissect_payload(self, s: bytes) -> None:
        super().do_dissect_payload(s)
        _inner_padding_to_raw(self)

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        if self.flags.E:
            return Q3PCiphertext
        if self.cmd == Command.DATA:
            return IP
        return _BODY_LAYERS.get(self.cmd, Raw)

    def mysummary(self) -> str:
        return self.sprintf("Q3P %Q3P.cmd% #%Q3P.message_number% [%Q3P.flags%]")


class Q3PCiphertext(Packet):
    """A one-time-pad encrypted payload (E set): opaque bytes."""

    name = "Q3P ciphertext"
    fields_desc = [XStrField("ciphertext", b"")]


class Q3PAck(Packet):
    name = "Q3P ACK"
    fields_desc = [
        IntField("cumulative", 0),
        IntField("window", 0),
        FieldLenField("sack_len", None, length_of="sack", fmt="!H"),
        XStrLenField("sack", b"", length_from=lambda pkt: pkt.sack_len),
    ]


class Q3PHandshake(Packet):
    name = "Q3P HANDSHAKE"
    fields_desc = [
        IPField("node_id", "0.0.0.0"),
        IntField("link_id", 0),
        LongField("session_nonce", 0),
        ShortField("mtu", 0),
        IntField("window", 0),
        LongField("enc_next", 0),
        LongField("dec_next", 0),
        ShortField("key_ratio", 500),
        XShortField("flags", 0),
    ]


class Q3PSync(Packet):
    name = "Q3P SYNC"
    fields_desc = [
        LongField("session_nonce", 0),
        LongField("enc_next", 0),
        LongField("dec_next", 0),
        LongField("discarded", 0),
    ]


class Q3PNotice(Packet):
    name = "Q3P notice"
    fields_desc = [
        ShortEnumField("reason", Reason.NORMAL, _REASON_NAMES),
        FieldLenField("text_len", None, length_of="text", fmt="!H"),
        StrLenField("text", b"", length_from=lambda pkt: pkt.text_len),
    ]


_LAYER_OF_BODY = {Ack: Q3PAck, Handshake: Q3PHandshake, Sync: Q3PSync, Notice: Q3PNotice}
_BODY_LAYERS = {int(cmd): _LAYER_OF_BODY[body] for cmd, body in BODY_TYPES.items()}

bind_layers(UDP, Q3P, dport=Q3P_UDP_PORT)
bind_layers(UDP, Q3P, sport=Q3P_UDP_PORT)
bind_layers(UDP, Q3P, sport=Q3P_UDP_PORT, dport=Q3P_UDP_PORT)  # UDP()/Q3P() sets both ports
# The last binding of a layer sets the command that Q3P()/Layer() builds by default.
for _command in (Command.RESET, Command.CLOSE, Command.KEEPALIVE, Command.SYNC_ACK, Command.SYNC,
                 Command.HANDSHAKE_ACK, Command.HANDSHAKE, Command.ACK, Command.DATA):
    bind_layers(Q3P, _BODY_LAYERS.get(int(_command), IP), cmd=int(_command))

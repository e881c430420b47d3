"""Scapy layers for QKDTL (proto 253) and Q-RoKR (proto 254) agree with our codecs.

Everything goes through ``scapy.layers.inet.IP`` so the ``bind_layers`` on the
protocol number is exercised in both directions.
"""

from __future__ import annotations

from hypothesis import given
from scapy.layers.inet import IP
from scapy.packet import Raw

from qbb.routing.rokr_packet import Cancel, Feedback, Reserve, decode_rokr, encode_rokr
from qbb.routing.rokr_scapy import QRoKR, QRoKRCancel, QRoKRFeedback, QRoKRReserve
from qbb.transport.packet import (
    ConnectRequest,
    KeyDelivery,
    Segment,
    SegmentFlags,
    decode_body,
    decode_segment,
    encode_segment,
)
from qbb.transport.scapy_layers import QKDTL, QKDTLConnect, QKDTLKey
from qbb.wire import PROTO_QKDTL, PROTO_QROKR
from strategies_transport import rokr_messages, segments

F = SegmentFlags
IP_HEADER = dict(src="192.0.2.1", dst="192.0.2.2")


def dissect(proto: int, payload: bytes) -> IP:
    """Wrap ``payload`` in an IPv4 header with ``proto`` and dissect the bytes."""
    return IP(bytes(IP(proto=proto, **IP_HEADER) / Raw(payload)))


def transport_bytes(packet) -> bytes:
    raw = bytes(packet)
    assert IP(raw).proto in (PROTO_QKDTL, PROTO_QROKR)  # set by bind_layers
    return raw[20:]


# --- QKDTL -----------------------------------------------------------------------

def assert_header_matches(layer: QKDTL, segment: Segment, data: bytes) -> None:
    assert (layer.sport, layer.dport, layer.seq, layer.ack) == (
        segment.src_port, segment.dst_port, segment.seq, segment.ack)
    assert int(layer.flags) == int(segment.flags) and layer.window == segment.window
    assert layer.len == len(segment.payload)
    assert layer.chksum == int.from_bytes(data[18:20], "big")


@given(segments())
def test_our_segments_dissect_in_scapy(segment):
    data = encode_segment(segment)
    packet = dissect(PROTO_QKDTL, data)
    assert_header_matches(packet[QKDTL], segment, data)
    body = decode_body(segment)
    if isinstance(body, KeyDelivery):
        key = packet[QKDTLKey]
        assert (key.key_id, key.key_bits, key.key) == (body.key_id, body.key_bits, body.key)
    elif isinstance(body, ConnectRequest):
        connect = packet[QKDTLConnect]
        assert (connect.service, connect.rate, connect.burst) == (
            body.service, body.rate, body.burst)
        assert connect.application == body.application.encode("utf-8")
        assert connect.reserved == 0
    elif body:
        assert packet[Raw].load == body
    else:
        assert not packet[QKDTL].payload


def scapy_segment(segment: Segment):
    header = QKDTL(sport=segment.src_port, dport=segment.dst_port, seq=segment.seq,
                   ack=segment.ack, flags=int(segment.flags), window=segment.window)
    body = decode_body(segment)
    if isinstance(body, KeyDelivery):
        return header / QKDTLKey(key_id=body.key_id, key_bits=body.key_bits, key=body.key)
    if isinstance(body, ConnectRequest):
        return header / QKDTLConnect(service=int(body.service), rate=body.rate,
                                     burst=body.burst,
                                     application=body.application.encode("utf-8"))
    return header / Raw(body) if body else header


@given(segments())
def test_scapy_built_segments_decode_with_ours(segment):
    packet = IP(**IP_HEADER) / scapy_segment(segment)
    data = transport_bytes(packet)  # len and chksum filled in by scapy
    assert decode_segment(data) == segment
    assert data == encode_segment(segment)


def test_key_bits_default_from_key_length():
    data = transport_bytes(IP() / QKDTL(flags="KEY") / QKDTLKey(key_id=3, key=b"\x01\x02"))
    assert decode_body(decode_segment(data)) == KeyDelivery(3, 16, b"\x01\x02")


def test_empty_segment_raw_round_trip():
    raw = bytes(IP() / QKDTL())
    assert bytes(IP(raw)) == raw
    assert IP(raw).proto == PROTO_QKDTL and IP(raw).haslayer(QKDTL)
    assert decode_segment(raw[20:]) == Segment(0, 0)


def test_syn_key_ack_raw_round_trip():
    raw = bytes(IP() / QKDTL(sport=5, dport=6, flags="SYN+ACK")
                / QKDTLConnect(service=1, rate=10, burst=20, application=b"srv"))
    assert bytes(IP(raw)) == raw
    segment = decode_segment(raw[20:])
    assert segment.flags == F.SYN | F.ACK
    assert decode_body(segment) == ConnectRequest(1, 10, 20, "srv")


def test_padding_after_segment_is_not_payload():
    data = encode_segment(Segment(1, 2, flags=F.ACK, payload=b"abc"))
    packet = IP(bytes(IP(proto=PROTO_QKDTL) / Raw(data + b"\x00\x00")))
    assert packet[Raw].load == b"abc"


# --- Q-RoKR ----------------------------------------------------------------------

def assert_rokr_matches(packet: IP, msg) -> None:
    header = packet[QRoKR]
    assert (header.version, header.request_id) == (1, msg.request_id)
    if isinstance(msg, Reserve):
        body = packet[QRoKRReserve]
        assert (body.source, body.destination, body.key_bits, body.deadline_us) == (
            msg.source, msg.destination, msg.key_bits, msg.deadline_us)
        assert body.path_len == len(msg.path) and tuple(body.path) == msg.path
    elif isinstance(msg, Feedback):
        body = packet[QRoKRFeedback]
        assert (body.status, body.tag_us) == (msg.status, msg.tag_us)
    else:
        body = packet[QRoKRCancel]
        assert body.reason == msg.reason
    assert (body.link_a, body.link_b) == msg.link and body.reserved == 0


@given(rokr_messages())
def test_our_rokr_messages_dissect_in_scapy(msg):
    data = encode_rokr(msg)
    packet = dissect(PROTO_QROKR, data)
    assert packet[QRoKR].len == len(data)
    assert_rokr_matches(packet, msg)


def scapy_rokr(msg):
    link = dict(link_a=msg.link[0], link_b=msg.link[1])
    if isinstance(msg, Reserve):
        body = QRoKRReserve(source=msg.source, destination=msg.destination,
                            key_bits=msg.key_bits, deadline_us=msg.deadline_us,
                            path=list(msg.path), **link)
    elif isinstance(msg, Feedback):
        body = QRoKRFeedback(tag_us=msg.tag_us, status=int(msg.status), **link)
    else:
        assert isinstance(msg, Cancel)
        body = QRoKRCancel(reason=int(msg.reason), **link)
    return QRoKR(request_id=msg.request_id) / body  # type and len filled in by scapy


@given(rokr_messages())
def test_scapy_built_rokr_decode_with_ours(msg):
    data = transport_bytes(IP(**IP_HEADER) / scapy_rokr(msg))
    assert decode_rokr(data) == msg
    assert data == encode_rokr(msg)


def test_rokr_raw_round_trip():
    raw = bytes(IP() / QRoKR(request_id=1) / QRoKRCancel(link_a="1.1.1.1", link_b="2.2.2.2"))
    assert bytes(IP(raw)) == raw
    assert IP(raw).proto == PROTO_QROKR and IP(raw).haslayer(QRoKRCancel)
    assert isinstance(decode_rokr(raw[20:]), Cancel)

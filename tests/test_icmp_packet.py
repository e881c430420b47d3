"""ICMP-style messages of the QKDNL (RFC 792 layout): round trips, rejection, scapy."""

import socket

import pytest
from hypothesis import given, strategies as st
from scapy.all import raw
from scapy.layers.inet import ICMP, IP, IPerror
from scapy.utils import checksum as scapy_checksum

from qbb.errors import DecodeError, EncodeError
from qbb.netlayer.icmp import (
    DestinationUnreachable, EchoReply, EchoRequest, IcmpType, ParameterProblem,
    ParameterProblemCode, SourceQuench, TimeExceeded, TimeExceededCode, UnreachableCode,
    decode_icmp, encode_icmp, quote_original,
)
from qbb.netlayer.packet import QKDNLPacket, decode_packet, encode_packet
from qbb.wire import PROTO_ICMP
from strategies_netlayer import (
    addresses, icmp_bytes, icmp_messages, icmp_messages_with, mutated, qkdnl_packets,
    quoted_originals, u8, u16,
)

ORIGINAL = encode_packet(QKDNLPacket("10.0.0.9", "10.0.0.7", 253, b"12345678-rest"))


@given(icmp_messages)
def test_decode_inverts_encode(msg):
    assert decode_icmp(encode_icmp(msg)) == msg


@given(icmp_bytes)
def test_encode_inverts_decode(data):
    assert encode_icmp(decode_icmp(data)) == data


@given(st.one_of(st.binary(max_size=48), mutated(icmp_bytes)))
def test_random_and_mutated_bytes(data):
    try:
        msg = decode_icmp(data)
    except DecodeError:
        return
    assert encode_icmp(msg) == data


@pytest.mark.parametrize("value", [None, "text", 3])
def test_non_bytes_input(value):
    with pytest.raises(DecodeError):
        decode_icmp(value)


def with_checksum(data):
    return data[:2] + scapy_checksum(data[:2] + b"\0\0" + data[4:]).to_bytes(2, "big") + data[4:]


@pytest.mark.parametrize("data, field, offset", [
    (b"", "type", 0),
    (b"\x08\x00\x00", "checksum", 2),
    (b"\x08\x00\xf7\xff\x00\x00\x00", "body.sequence", 6),
    (with_checksum(b"\x07\x00\x00\x00\x00\x00\x00\x00"), "type", 0),
    (with_checksum(b"\x0d\x00\x00\x00\x00\x00\x00\x00"), "type", 0),
    (with_checksum(b"\x08\x01\x00\x00\x00\x00\x00\x00"), "code", 1),
    (with_checksum(b"\x03\x10\x00\x00\x00\x00\x00\x00"), "code", 1),
    (with_checksum(b"\x0b\x02\x00\x00\x00\x00\x00\x00"), "code", 1),
    (with_checksum(b"\x0c\x03\x00\x00\x00\x00\x00\x00"), "code", 1),
    (with_checksum(b"\x04\x01\x00\x00\x00\x00\x00\x00"), "code", 1),
    (with_checksum(b"\x03\x01\x00\x00\x00\x00\x05\xdc"), "body.next_hop_mtu", 6),
    (with_checksum(b"\x03\x04\x00\x00\x00\x01\x05\xdc"), "body.unused", 4),
    (with_checksum(b"\x0b\x00\x00\x00\x00\x00\x00\x01"), "body.unused", 4),
    (with_checksum(b"\x04\x00\x00\x00\x80\x00\x00\x00"), "body.unused", 4),
    (with_checksum(b"\x0c\x00\x00\x00\x14\x00\x01\x00"), "body.unused", 5),
    (b"\x08\x00\x12\x34\x00\x00\x00\x00", "checksum", 2),
])
def test_rejections_name_field_and_offset(data, field, offset):
    with pytest.raises(DecodeError) as info:
        decode_icmp(data)
    assert (info.value.field, info.value.offset) == (field, offset)
    assert info.value.layer == "ICMP"


def test_checksum_mismatch_names_expected_and_found():
    good = encode_icmp(EchoRequest(1, 2, b"ping"))
    with pytest.raises(DecodeError) as info:
        decode_icmp(good[:2] + b"\xab\xcd" + good[4:])
    assert "0xabcd" in str(info.value) and f"0x{good[2:4].hex()}" in str(info.value)


def test_odd_length_checksum_pads_with_zero():
    data = encode_icmp(EchoReply(7, 9, b"odd"))
    assert int.from_bytes(data[2:4], "big") == scapy_checksum(data[:2] + b"\0\0" + data[4:])


@pytest.mark.parametrize("msg, field", [
    (EchoRequest(1 << 16, 0), "body.identifier"), (EchoReply(0, -1), "body.sequence"),
    (EchoRequest(0, 0, "text"), "body.data"), (TimeExceeded(2), "code"),
    (DestinationUnreachable(16), "code"), (DestinationUnreachable("net"), "code"),
    (DestinationUnreachable(UnreachableCode.HOST_UNREACHABLE, b"", 1500), "body.next_hop_mtu"),
    (DestinationUnreachable(UnreachableCode.FRAGMENTATION_NEEDED, b"", 1 << 16),
     "body.next_hop_mtu"),
    (ParameterProblem(256), "body.pointer"), (ParameterProblem(0, b"", 3), "code"),
    (SourceQuench(None), "body.original"), ("not a message", "<message>"),
])
def test_encode_errors(msg, field):
    with pytest.raises(EncodeError) as info:
        encode_icmp(msg)
    assert info.value.field == field


def test_codes_decode_as_enums():
    msg = decode_icmp(encode_icmp(DestinationUnreachable(2, ORIGINAL[:28])))
    assert msg.code is UnreachableCode.PROTOCOL_UNREACHABLE
    assert decode_icmp(encode_icmp(TimeExceeded(0))).code is \
        TimeExceededCode.TTL_EXCEEDED_IN_TRANSIT
    assert decode_icmp(encode_icmp(ParameterProblem(1))).code is \
        ParameterProblemCode.POINTER_INDICATES_ERROR


def test_quote_original():
    assert quote_original(ORIGINAL) == ORIGINAL[:28]
    with_options = encode_packet(QKDNLPacket("1.1.1.1", "2.2.2.2", 1, b"abc", options=bytes(8)))
    assert quote_original(with_options) == with_options
    assert quote_original(b"") == b""


# --- scapy cross-checks -----------------------------------------------------------------

def expected_scapy_fields(msg):
    """The fields scapy's ICMP layer should show for ``msg``."""
    fields = dict(type=int(msg.TYPE), code=int(getattr(msg, "code", 0)))
    if isinstance(msg, (EchoRequest, EchoReply)):
        fields.update(id=msg.identifier, seq=msg.sequence)
    elif isinstance(msg, DestinationUnreachable):
        fields.update(reserved=0, length=0, nexthopmtu=msg.next_hop_mtu)
    elif isinstance(msg, TimeExceeded):
        fields.update(reserved=0, length=0, unused=0)
    elif isinstance(msg, ParameterProblem):
        fields.update(ptr=msg.pointer, length=0, unused=0)
    else:
        fields.update(unused=0)
    return fields


def check_scapy_icmp(p, msg, data):
    for name, value in expected_scapy_fields(msg).items():
        assert p.getfieldval(name) == value, name
    assert p.chksum == int.from_bytes(data[2:4], "big")
    assert p.chksum == scapy_checksum(data[:2] + b"\0\0" + data[4:])
    tail = getattr(msg, "data", None)
    assert data[8:] == (tail if tail is not None else msg.original)


@given(icmp_messages)
def test_ours_parses_in_scapy(msg):
    data = encode_icmp(msg)
    check_scapy_icmp(ICMP(data), msg, data)


@given(icmp_messages_with(quoted_originals))
def test_scapy_rebuilds_our_checksum(msg):
    p = ICMP(encode_icmp(msg))
    found = p.chksum
    del p.chksum
    assert ICMP(raw(p)).chksum == found


@given(qkdnl_packets(payloads=st.just(b"")), icmp_messages_with(quoted_originals))
def test_qkdnl_carrying_icmp_dissects_in_scapy(outer, msg):
    outer = QKDNLPacket(outer.source, outer.destination, PROTO_ICMP, encode_icmp(msg),
                        ttl=outer.ttl, identification=outer.identification)
    data = encode_packet(outer)
    p = IP(data)
    assert (p.src, p.dst, p.proto, p.len) == (outer.source, outer.destination, 1, len(data))
    check_scapy_icmp(p[ICMP], msg, outer.payload)
    if msg.TYPE not in (IcmpType.ECHO_REQUEST, IcmpType.ECHO_REPLY):
        quoted = msg.original
        assert (p[IPerror].src, p[IPerror].dst, p[IPerror].proto) == (
            socket.inet_ntoa(quoted[12:16]), socket.inet_ntoa(quoted[16:20]), quoted[9])


@given(u16, u16, st.binary(max_size=32), st.booleans())
def test_scapy_echo_decodes(ident, seq, payload, reply):
    data = raw(ICMP(type=0 if reply else 8, id=ident, seq=seq) / payload)
    expected = (EchoReply if reply else EchoRequest)(ident, seq, payload)
    assert decode_icmp(data) == expected and encode_icmp(expected) == data


@given(quoted_originals, st.sampled_from(UnreachableCode), u16)
def test_scapy_unreachable_decodes(original, code, mtu):
    mtu = mtu if code == UnreachableCode.FRAGMENTATION_NEEDED else 0
    data = raw(ICMP(type=3, code=int(code), nexthopmtu=mtu) / original)
    assert decode_icmp(data) == DestinationUnreachable(code, original, mtu)


@given(quoted_originals, u8)
def test_scapy_error_messages_decode(original, pointer):
    assert decode_icmp(raw(ICMP(type=11, code=1) / original)) == TimeExceeded(1, original)
    assert decode_icmp(raw(ICMP(type=4) / original)) == SourceQuench(original)
    assert decode_icmp(raw(ICMP(type=12, ptr=pointer) / original)) == \
        ParameterProblem(pointer, original)


@given(addresses, addresses, u8)
def test_scapy_ip_icmp_stack_decodes(src, dst, ttl):
    offending = IP(src=dst, dst="10.0.0.7", proto=253, ttl=1) / b"12345678-and-more"
    stack = IP(src=src, dst=dst, ttl=ttl) / ICMP(type=11, code=0) / IPerror(raw(offending)[:28])
    pkt = decode_packet(raw(stack))
    assert (pkt.source, pkt.destination, pkt.protocol, pkt.ttl) == (src, dst, 1, ttl)
    assert decode_icmp(pkt.payload) == TimeExceeded(0, raw(offending)[:28])
    ping = decode_packet(raw(IP(src=src, dst=dst) / ICMP(id=5, seq=6) / b"hello"))
    assert decode_icmp(ping.payload) == EchoRequest(5, 6, b"hello")

"""The QKDNL header codec (RFC 791 layout): round trips, rejection, fast path, scapy, RFC 1624."""

from dataclasses import replace

import pytest
from hypothesis import given, strategies as st
from scapy.all import raw
from scapy.layers.inet import IP, IPOption_NOP, IPOption_Router_Alert, IPOption_RR

from qbb.codec import internet_checksum
from qbb.errors import DecodeError, EncodeError
from qbb.netlayer.packet import (
    QKDNLHeader, QKDNLPacket, decode_header, decode_packet, decode_packet_spec,
    decrement_ttl, encode_packet, encode_packet_spec, header_checksum,
)
from strategies_netlayer import (
    addresses, mutated, qkdnl_bytes, qkdnl_packets, scapy_options, u8, u16,
)

# A published IPv4 header (UDP, 115 bytes, DF) whose checksum is 0xb861.
KNOWN_HEADER = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
KNOWN_PACKET = QKDNLPacket("192.168.0.1", "192.168.0.199", 17, bytes(range(95)),
                           ttl=64, dont_fragment=True)


def outcome(decoder, data):
    try:
        return ("ok", decoder(data))
    except DecodeError as error:
        return ("error", error.field, error.offset)


# --- round trips ------------------------------------------------------------------------

@given(qkdnl_packets())
def test_decode_inverts_encode(pkt):
    data = encode_packet(pkt)
    assert decode_packet(data) == pkt
    assert len(data) == 20 + len(pkt.options) + len(pkt.payload)


@given(qkdnl_bytes())
def test_encode_inverts_decode(data):
    assert encode_packet(decode_packet(data)) == data


@given(qkdnl_packets())
def test_decode_header_gives_header_and_payload_offset(pkt):
    data = encode_packet(pkt)
    header, offset = decode_header(memoryview(data))
    assert header == pkt.header
    assert offset == header.header_length == 20 + len(pkt.options)
    assert data[offset:] == pkt.payload


# --- every decoder: a value or DecodeError, nothing else ---------------------------------

@given(st.one_of(st.binary(max_size=80), mutated(qkdnl_bytes())))
def test_random_and_mutated_bytes(data):
    for decoder in (decode_packet, decode_packet_spec, decode_header):
        try:
            value = decoder(data)
        except DecodeError:
            continue
        pkt = value if isinstance(value, QKDNLPacket) else decode_packet(data)
        assert encode_packet(pkt) == data


@given(st.one_of(st.binary(max_size=80), mutated(qkdnl_bytes()), qkdnl_bytes()))
def test_fast_path_agrees_with_specification(data):
    assert outcome(decode_packet, data) == outcome(decode_packet_spec, data)


@given(qkdnl_packets())
def test_fast_encoder_agrees_with_specification(pkt):
    assert encode_packet(pkt) == encode_packet_spec(pkt)


@pytest.mark.parametrize("value", [None, "text", 42, [1, 2]])
def test_non_bytes_input(value):
    with pytest.raises(DecodeError):
        decode_packet(value)


# --- named rejections -------------------------------------------------------------------

VALID = encode_packet(QKDNLPacket("10.0.0.1", "10.0.0.2", 253, b"payload!",
                                  options=b"\x01\x01\x01\x00"))


def patched(data, offset, value):
    """``data`` with one byte replaced and the checksum recomputed where there is a header."""
    out = bytearray(data)
    out[offset] = value
    header_length = 4 * (out[0] & 15)
    if 20 <= header_length <= len(out):
        out[10:12] = header_checksum(out[:header_length]).to_bytes(2, "big")
    return bytes(out)


@pytest.mark.parametrize("data, field, offset", [
    (b"", "version_ihl", 0),
    (VALID[:7], "flags", 6),
    (VALID[:19], "destination", 16),
    (VALID[:22], "options", 20),
    (VALID[:-1], "total_length", 2),
    (VALID + b"\x00", "total_length", 2),
    (patched(VALID, 0, 0x66), "version_ihl.version", 0),
    (patched(VALID, 0, 0x44), "version_ihl.ihl", 0),
    (patched(VALID, 0, 0x4F), "options", 20),
    (patched(VALID, 6, 0x80), "flags.reserved", 6),
])
def test_rejections_name_field_and_offset(data, field, offset):
    for decoder in (decode_packet, decode_packet_spec):
        with pytest.raises(DecodeError) as info:
            decoder(data)
        assert (info.value.field, info.value.offset) == (field, offset)
        assert f"field {field!r} at byte {offset}" in str(info.value)


def test_checksum_mismatch_names_expected_and_found():
    bad = bytearray(VALID)
    bad[10:12] = b"\x12\x34"
    with pytest.raises(DecodeError) as info:
        decode_packet(bytes(bad))
    expected = int.from_bytes(VALID[10:12], "big")
    assert info.value.field == "checksum" and info.value.offset == 10
    assert "0x1234" in str(info.value) and f"0x{expected:04x}" in str(info.value)


def test_checksum_0000_and_ffff_are_not_interchangeable():
    # A header whose other words sum to 0xFFFF: the one's-complement checksum 0x0000 also
    # has the equivalent form 0xFFFF, which decoding must refuse to stay canonical.
    pkt = QKDNLPacket("0.0.0.0", "0.0.0.0", 0, ttl=0, identification=0xFFFF - 0x4514)
    data = encode_packet(pkt)
    assert data[10:12] == b"\x00\x00"
    with pytest.raises(DecodeError, match="checksum"):
        decode_packet(data[:10] + b"\xff\xff" + data[12:])


@pytest.mark.parametrize("change, field", [
    (dict(tos=256), "tos"), (dict(ttl=-1), "ttl"), (dict(protocol="udp"), "protocol"),
    (dict(identification=1 << 16), "identification"),
    (dict(fragment_offset=1 << 13), "fragment_offset"),
    (dict(dont_fragment=1), "dont_fragment"), (dict(options=b"abc"), "options"),
    (dict(options=bytes(44)), "options"), (dict(payload="text"), "payload"),
    (dict(payload=bytes(65516)), "total_length"), (dict(source="10.0.0"), "source"),
    (dict(destination="010.0.0.1"), "destination"), (dict(source=None), "source"),
])
def test_encode_errors(change, field):
    pkt = replace(QKDNLPacket("10.0.0.1", "10.0.0.2", 1), **change)
    for encoder in (encode_packet, encode_packet_spec):
        with pytest.raises(EncodeError) as info:
            encoder(pkt)
        assert info.value.field == field


def test_largest_packet():
    pkt = QKDNLPacket("10.0.0.1", "10.0.0.2", 1, bytes(65535 - 60), options=bytes(40))
    data = encode_packet(pkt)
    assert data[2:4] == b"\xff\xff" and decode_packet(data) == pkt


# --- checksums: known answers, RFC 1624 -------------------------------------------------

def test_rfc1071_example():
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2, checksum 0x220d.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_published_header_checksum():
    assert header_checksum(KNOWN_HEADER) == 0xB861
    data = encode_packet(KNOWN_PACKET)
    assert data[:20] == KNOWN_HEADER[:10] + b"\xb8\x61" + KNOWN_HEADER[12:]
    assert decode_packet(data) == KNOWN_PACKET


@given(qkdnl_packets(opts=st.just(b"") | st.binary(min_size=8, max_size=8)))
def test_decrement_ttl_equals_full_recompute(pkt):
    pkt = replace(pkt, ttl=max(pkt.ttl, 1))
    forwarded = decrement_ttl(encode_packet(pkt))
    assert forwarded == encode_packet(replace(pkt, ttl=pkt.ttl - 1))
    header_length = 20 + len(pkt.options)
    assert int.from_bytes(forwarded[10:12], "big") == header_checksum(forwarded[:header_length])


def test_decrement_ttl_exhaustive_over_ttl_and_protocol():
    for ttl in range(1, 256):
        for protocol in (0, 1, 89, 253, 254, 255):
            pkt = QKDNLPacket("10.1.2.3", "10.3.2.1", protocol, b"x", ttl=ttl)
            assert decrement_ttl(encode_packet(pkt)) == encode_packet(replace(pkt, ttl=ttl - 1))


@pytest.mark.parametrize("data", [b"", VALID[:19], encode_packet(QKDNLPacket(
    "10.0.0.1", "10.0.0.2", 1, ttl=0))])
def test_decrement_ttl_rejects_short_or_expired(data):
    with pytest.raises(DecodeError) as info:
        decrement_ttl(data)
    assert info.value.field == "ttl"


@pytest.mark.parametrize("data", [b"", bytes(19), bytes(21), "text"])
def test_header_checksum_needs_a_header(data):
    with pytest.raises(DecodeError):
        header_checksum(data)


# --- scapy cross-checks -----------------------------------------------------------------

def scapy_fields(p):
    return dict(version=p.version, ihl=p.ihl, tos=p.tos, len=p.len, id=p.id,
                flags=int(p.flags), frag=p.frag, ttl=p.ttl, proto=p.proto, src=p.src,
                dst=p.dst)


def scapy_checksum(p):
    """The checksum scapy computes for the header of ``p``."""
    q = p.copy()
    q.remove_payload()
    del q.chksum
    return IP(raw(q)).chksum


@given(qkdnl_packets(opts=scapy_options, protos=st.sampled_from([1, 89, 253, 254])))
def test_ours_parses_in_scapy(pkt):
    data = encode_packet(pkt)
    p = IP(data)
    assert scapy_fields(p) == dict(
        version=4, ihl=5 + len(pkt.options) // 4, tos=pkt.tos, len=len(data),
        id=pkt.identification, flags=pkt.dont_fragment << 1 | pkt.more_fragments,
        frag=pkt.fragment_offset, ttl=pkt.ttl, proto=pkt.protocol, src=pkt.source,
        dst=pkt.destination)
    assert p.chksum == scapy_checksum(p) == int.from_bytes(data[10:12], "big")
    assert b"".join(raw(o) for o in p.options) == pkt.options


@given(st.builds(dict, src=addresses, dst=addresses, ttl=u8, tos=u8, id=u16,
                 frag=st.integers(0, 0x1FFF), flags=st.integers(0, 3),
                 proto=st.sampled_from([253, 254])),
       st.binary(max_size=40))
def test_scapy_built_packets_decode(fields, payload):
    data = raw(IP(**fields) / payload)
    pkt = decode_packet(data)
    assert (pkt.source, pkt.destination, pkt.ttl, pkt.tos, pkt.identification) == (
        fields["src"], fields["dst"], fields["ttl"], fields["tos"], fields["id"])
    assert (pkt.dont_fragment, pkt.more_fragments) == (
        bool(fields["flags"] & 2), bool(fields["flags"] & 1))
    assert pkt.fragment_offset == fields["frag"] and pkt.payload == payload
    assert encode_packet(pkt) == data


@pytest.mark.parametrize("options", [
    [IPOption_Router_Alert()], [IPOption_NOP(), IPOption_Router_Alert()], [IPOption_RR()],
    [IPOption_RR(routers=["10.9.9.9", "10.8.8.8"]), IPOption_NOP()],
])
def test_scapy_built_packets_with_options_decode(options):
    data = raw(IP(src="10.0.0.1", dst="10.0.0.2", proto=253, options=options) / b"key-seg")
    header, offset = decode_header(data)
    assert header.options == data[20:offset] and offset == 4 * (data[0] & 15) > 20
    assert isinstance(header, QKDNLHeader) and data[offset:] == b"key-seg"
    assert encode_packet(decode_packet(data)) == data

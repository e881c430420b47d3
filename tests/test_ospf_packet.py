"""OSPFv2 packets: round trips, canonical decoding, captured vectors, robustness against
random and mutated bytes, semantic checks, and cross-checks with scapy's contrib OSPF."""

from __future__ import annotations

import dataclasses

import pytest
import strategies_ospf as so
from hypothesis import given
from hypothesis import strategies as st
from scapy.contrib.ospf import OSPF_Hdr

from qbb.errors import DecodeError, EncodeError
from qbb.routing.common import Options
from qbb.routing.lsa import LinkType, LsaHeader, LsType, RouterFlags, RouterLSA, UnknownLSA
from qbb.routing.packet import (
    AuType, DatabaseDescription, DdFlags, Hello, LinkStateRequest,
    LinkStateUpdate, LsRequest, OspfPacket, PacketType, decode_packet, encode_packet,
    packet_checksum)

# Two OSPF packets from captures (scapy test/contrib/ospf.uts), without their Ethernet
# and IP headers: an LS Update with one Router-LSA (packet checksum 0x961f, area 0.0.0.1)
# and an LS Update with one area-scope opaque LSA (type 10, packet checksum 0x399f).
CAPTURED_LSU = bytes.fromhex(
    "02040040c0a8aa0800000001961f00000000000000000000" "00000001"
    "03e20201c0a8aa08c0a8aa0880000dc325060024" "02000001" "c0a8aa00ffffff000300000a")
CAPTURED_OPAQUE_LSU = bytes.fromhex(
    "020400a01103030300000064399f00000000000000000000" "00000001"
    "0001200a01000000110303038000001fabd90084"
    "000100041103030300020064000100010200000000020004d200000200030004"
    "d200000100040004d200000200050004000003e8000600044998968000070004"
    "4998968000080020491896804918968049189680491896804918968049189680"
    "49189680491896800009000400000000")


def _try_decode(data: bytes) -> None:
    try:
        packet = decode_packet(data)
    except DecodeError:
        return
    assert encode_packet(packet) == data


# -- round trips and canonical decoding -------------------------------------------------

@pytest.mark.parametrize("body", [
    so.hellos(), so.database_descriptions(), so.link_state_requests(),
    so.link_state_updates(), so.link_state_acks()],
    ids=["hello", "dd", "lsr", "lsu", "lsack"])
@given(data=st.data())
def test_round_trip(body, data):
    packet = data.draw(so.packets(body))
    encoded = encode_packet(packet)
    assert decode_packet(encoded) == packet
    assert encode_packet(decode_packet(encoded)) == encoded
    assert int.from_bytes(encoded[2:4], "big") == len(encoded)
    assert decode_packet(encoded).packet_type == packet.packet_type


@pytest.mark.parametrize("data", [CAPTURED_LSU, CAPTURED_OPAQUE_LSU], ids=["router", "opaque"])
def test_captured_packets(data):
    packet = decode_packet(data)
    assert encode_packet(packet) == data
    assert packet.packet_type == PacketType.LINK_STATE_UPDATE
    (lsa,) = packet.body.lsas
    assert packet_checksum(data) == int.from_bytes(data[12:14], "big")
    if data is CAPTURED_LSU:
        assert (packet.router_id, packet.area_id) == ("192.168.170.8", "0.0.0.1")
        assert isinstance(lsa, RouterLSA) and lsa.flags == RouterFlags.E
        assert lsa.links[0].link_type == LinkType.STUB
    else:
        assert isinstance(lsa, UnknownLSA) and lsa.ls_type == 10 and len(lsa.body) == 112


@given(st.binary(max_size=120))
def test_random_bytes(data):
    _try_decode(data)


@given(st.integers(1, 5), st.binary(max_size=90))
def test_random_bodies_with_valid_header(packet_type, body):
    header = bytes([2, packet_type]) + bytes(22)
    _try_decode(so.reseal_packet(header + body))


@given(st.data())
def test_mutated_packets(data):
    original = encode_packet(data.draw(so.packets()))
    mutant = data.draw(so.mutated(original))
    _try_decode(mutant)
    _try_decode(so.reseal_packet(mutant))


# -- header checks -----------------------------------------------------------------------

HELLO = OspfPacket(router_id="10.0.0.1", area_id="0.0.0.0",
                   body=Hello(network_mask="255.255.255.252", neighbors=("10.0.0.2",)))


def _decode_error(data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_packet(data)
    return info.value


def _patched(data: bytes, offset: int, value: bytes, reseal: bool = True) -> bytes:
    data = data[:offset] + value + data[offset + len(value):]
    return so.reseal_packet(data) if reseal else data


@pytest.mark.parametrize("offset, value, field", [
    (0, b"\x03", "header.version"),
    (1, b"\x06", "header.packet_type"),
    (14, b"\x00\x02", "header.au_type"),
    (14, b"\x00\x07", "header.au_type"),
])
def test_header_fields(offset, value, field):
    error = _decode_error(_patched(encode_packet(HELLO), offset, value))
    assert (error.field, error.offset) == (field, offset)
    assert field in str(error) and f"byte {offset}" in str(error)


def test_length_and_checksum():
    data = encode_packet(HELLO)
    error = _decode_error(data + bytes(4))
    assert (error.field, error.offset) == ("header.length", 2)
    error = _decode_error(_patched(data, 2, b"\x00\x34", reseal=False))
    assert (error.field, error.offset) == ("header.length", 2)
    error = _decode_error(_patched(data, 40, b"\x0b", reseal=False))
    assert (error.field, error.offset) == ("header.checksum", 12)
    assert _decode_error(data[:10]).offset == 8


def test_checksum_excludes_authentication():
    data = encode_packet(HELLO)
    other = encode_packet(dataclasses.replace(HELLO, authentication=b"password"))
    assert data[12:14] == other[12:14]
    assert decode_packet(_patched(data, 16, b"secret!!", reseal=False)).authentication == \
        b"secret!!"


# -- body checks -------------------------------------------------------------------------

def test_hello_partial_neighbor():
    error = _decode_error(so.reseal_packet(encode_packet(HELLO) + b"\x01\x02"))
    assert (error.field, error.offset) == ("hello.neighbors", 44)
    error = _decode_error(so.reseal_packet(encode_packet(HELLO)[:40]))
    assert error.field.startswith("hello.") and error.offset == 40


def test_dd_reserved_flags_and_partial_header():
    dd = dataclasses.replace(HELLO, body=DatabaseDescription(
        interface_mtu=1500, dd_sequence_number=7, flags=DdFlags.I | DdFlags.M | DdFlags.MS,
        lsa_headers=(LsaHeader(ls_type=1, link_state_id="1.1.1.1",
                               advertising_router="1.1.1.1"),)))
    data = encode_packet(dd)
    error = _decode_error(_patched(data, 27, b"\x0f"))
    assert (error.field, error.offset) == ("dd.flags", 27)
    error = _decode_error(so.reseal_packet(data[:-1]))
    assert (error.field, error.offset) == ("dd.lsa_headers", 32)
    error = _decode_error(_patched(data, 50, b"\x00\x13"))
    assert (error.field, error.offset) == ("dd.lsa_headers[0].length", 50)


def test_lsr_checks():
    lsr = dataclasses.replace(HELLO, body=LinkStateRequest((
        LsRequest(1, "1.1.1.1", "1.1.1.1"), LsRequest(3, "10.0.0.0", "2.2.2.2"))))
    data = encode_packet(lsr)
    assert decode_packet(data).body.requests[1].ls_type == LsType.SUMMARY_NETWORK
    error = _decode_error(_patched(data, 36, b"\x00\x00\x01\x03"))
    assert (error.field, error.offset) == ("lsr.requests[1].ls_type", 36)
    error = _decode_error(so.reseal_packet(data + b"\x00"))
    assert (error.field, error.offset) == ("lsr.requests", 24)


def test_lsu_count_and_lsa_errors():
    lsu = dataclasses.replace(HELLO, body=LinkStateUpdate((
        RouterLSA(link_state_id="10.0.0.1", advertising_router="10.0.0.1"),)))
    data = encode_packet(lsu)
    for count in (b"\x00\x00\x00\x00", b"\x00\x00\x00\x02", b"\xff\xff\xff\xff"):
        error = _decode_error(_patched(data, 24, count))
        assert (error.field, error.offset) == ("lsu.lsa_count", 24)
    error = _decode_error(_patched(data, 45, b"\x00"))
    assert (error.field, error.offset) == ("lsu.lsas[0].ls_checksum", 44)
    error = _decode_error(_patched(data, 46, b"\x01\x00"))
    assert (error.field, error.offset) == ("lsu.lsas[0].length", 46)


# -- encode errors ------------------------------------------------------------------------

@pytest.mark.parametrize("packet, field", [
    (dataclasses.replace(HELLO, au_type=AuType.CRYPTOGRAPHIC), "header.au_type"),
    (dataclasses.replace(HELLO, authentication=b"short"), "header.authentication"),
    (dataclasses.replace(HELLO, body="hello"), "body"),
    (dataclasses.replace(HELLO, body=Hello(network_mask="0.0.0.0", hello_interval=-1)),
     "hello.hello_interval"),
    (dataclasses.replace(HELLO, body=Hello(network_mask="0.0.0.0", options=256)),
     "hello.options"),
    (dataclasses.replace(HELLO, body=Hello(network_mask="0.0.0.0",
                                           neighbors=("1.1.1.1",) * 20000)), "header.length"),
    (dataclasses.replace(HELLO, body=DatabaseDescription(
        interface_mtu=1500, dd_sequence_number=1 << 32)), "dd.dd_sequence_number"),
    (dataclasses.replace(HELLO, body=DatabaseDescription(
        interface_mtu=1500, dd_sequence_number=1, lsa_headers=(LsaHeader(
            ls_type=1, link_state_id="1.1.1.1", advertising_router="1.1.1.1",
            length=4),))), "dd.lsa_headers[0].length"),
    (dataclasses.replace(HELLO, body=LinkStateRequest((LsRequest(256, "1.1.1.1",
                                                                 "1.1.1.1"),))),
     "lsr.requests[0].ls_type"),
    (dataclasses.replace(HELLO, body=LinkStateUpdate((RouterLSA(
        link_state_id="1.1.1.1", advertising_router="1.1.1.1", ls_age=-1),))),
     "lsu.lsas[0].ls_age"),
])
def test_encode_errors(packet, field):
    with pytest.raises(EncodeError) as info:
        encode_packet(packet)
    assert info.value.field == field


# -- scapy cross-checks -----------------------------------------------------------------

@given(so.scapy_packets())
def test_scapy_parses_ours(packet):
    so.assert_packet_matches_scapy(packet, OSPF_Hdr(encode_packet(packet)))


@given(so.scapy_packets())
def test_we_parse_scapy(packet):
    built = bytes(so.scapy_packet(packet))  # scapy fills lengths and both checksums
    assert decode_packet(built) == packet
    assert built == encode_packet(packet)


def test_scapy_hello_with_lls_block():
    # scapy's own regression vector: a Hello (options E|L) followed by an RFC 5613 LLS
    # block that the OSPF length excludes.  The OSPF packet alone decodes; scapy's
    # checksum also covers the LLS block, which is neutral because that block carries
    # its own one's-complement checksum.
    frame = bytes.fromhex(
        "020100304b010301000000003e0100000000000000000000"
        "ffffff00000a1201000000280a4b00fe0a4b00014b010001" "fff600030001000400000001")
    packet = decode_packet(frame[:48])
    assert packet.body.options == Options.E | Options.L
    assert packet.body.neighbors == ("75.1.0.1",)
    assert _decode_error(frame).field == "header.length"

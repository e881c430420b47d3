"""OSPFv2 LSAs: round trips, canonical decoding, Fletcher checksum, scapy cross-checks,
database keys and the RFC 2328 13.1 ordering."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.contrib.ospf import OSPF_Router_LSA, OSPF_SummaryASBR_LSA, OSPF_SummaryIP_LSA

from qbb.errors import DecodeError, EncodeError
from qbb.routing.checksum import fletcher_sums
from qbb.routing.common import Options
from qbb.routing.lsa import (
    INITIAL_SEQUENCE_NUMBER, MAX_AGE, LinkType, LsaHeader, LsType, RouterFlags, RouterLink,
    RouterLSA, SummaryLSA, TosMetric, UnknownLSA, compare_lsa, decode_lsa,
    decode_lsa_header, encode_lsa, encode_lsa_header, is_newer, lsa_checksum, lsa_header,
    lsa_key, verify_lsa_checksum)
import strategies_ospf as so

# Router-LSA from a captured LS Update (scapy test/contrib/ospf.uts, "basic
# instantiation"): 192.168.170.8, seq 0x80000dc3, age 994, checksum 0x2506.
CAPTURED_ROUTER_LSA = bytes.fromhex(
    "03e20201c0a8aa08c0a8aa0880000dc325060024" "02000001" "c0a8aa00ffffff000300000a")
# Area-scope opaque LSA (type 10) from a captured LS Update (same file), checksum 0xabd9.
CAPTURED_OPAQUE_HEADER = bytes.fromhex("0001200a" "01000000" "11030303" "8000001f" "abd90084")


def _try_decode(data: bytes) -> None:
    try:
        lsa = decode_lsa(data)
    except DecodeError:
        return
    assert encode_lsa(lsa) == data


# -- round trips and canonical decoding -------------------------------------------------

@given(so.lsas())
def test_lsa_round_trip(lsa):
    data = encode_lsa(lsa)
    assert decode_lsa(data) == lsa
    assert encode_lsa(decode_lsa(data)) == data
    assert verify_lsa_checksum(data)


@given(so.lsa_headers())
def test_lsa_header_round_trip(header):
    data = encode_lsa_header(header)
    assert len(data) == 20
    assert decode_lsa_header(data) == header


@given(so.lsas())
def test_lsa_header_of_encoded_lsa(lsa):
    data = encode_lsa(lsa)
    header = lsa_header(lsa)
    assert encode_lsa_header(header) == data[:20]
    assert header.length == len(data)
    assert lsa_key(lsa) == lsa_key(header) == (lsa.ls_type, lsa.link_state_id,
                                               lsa.advertising_router)


def test_captured_router_lsa():
    lsa = decode_lsa(CAPTURED_ROUTER_LSA)
    assert lsa == RouterLSA(
        link_state_id="192.168.170.8", advertising_router="192.168.170.8",
        ls_sequence_number=0x80000DC3 - 2**32, ls_age=994, options=Options.E,
        flags=RouterFlags.E,
        links=(RouterLink(link_id="192.168.170.0", link_data="255.255.255.0",
                          link_type=LinkType.STUB, metric=10),))
    assert encode_lsa(lsa) == CAPTURED_ROUTER_LSA
    assert lsa_checksum(CAPTURED_ROUTER_LSA) == 0x2506


@given(st.binary(max_size=80))
def test_random_bytes(data):
    _try_decode(data)
    try:
        decode_lsa_header(data)
    except DecodeError:
        pass


@given(st.data())
def test_mutated_lsas(data):
    original = encode_lsa(data.draw(so.lsas()))
    mutant = data.draw(so.mutated(original))
    _try_decode(mutant)
    _try_decode(so.reseal_lsa(mutant))


# -- Fletcher checksum -----------------------------------------------------------------

@given(so.lsas(), st.integers(0, 0xFFFF))
def test_checksum_ignores_age_and_zeroes_sums(lsa, age):
    data = encode_lsa(lsa)
    aged = age.to_bytes(2, "big") + data[2:]
    assert verify_lsa_checksum(aged)
    assert fletcher_sums(data[2:]) == (0, 0)
    assert 0 not in data[16:18]


def test_checksum_rejects_zero_spelling_of_255():
    # Find an LSA whose first check octet is 0xFF: 0x00 is the same residue mod 255.
    for seq in range(2000):
        data = encode_lsa(RouterLSA(link_state_id="10.0.0.1", advertising_router="10.0.0.1",
                                    ls_sequence_number=seq))
        if data[16] == 0xFF:
            break
    else:
        pytest.skip("no LSA with check octet 0xFF found")
    alias = data[:16] + b"\x00" + data[17:]
    assert fletcher_sums(alias[2:]) == (0, 0)
    assert not verify_lsa_checksum(alias)
    with pytest.raises(DecodeError, match="ls_checksum"):
        decode_lsa(alias)


def test_checksum_mismatch_names_field():
    bad = CAPTURED_ROUTER_LSA[:17] + b"\x07" + CAPTURED_ROUTER_LSA[18:]
    with pytest.raises(DecodeError) as info:
        decode_lsa(bad)
    assert (info.value.field, info.value.offset) == ("lsa.ls_checksum", 16)
    assert not verify_lsa_checksum(bad) and not verify_lsa_checksum(b"short")


@given(so.scapy_lsas())
def test_checksum_matches_scapy(lsa):
    ours = encode_lsa(lsa)
    theirs = bytes(so.scapy_lsa(lsa))  # scapy's post_build fills length and checksum
    assert theirs == ours


def test_captured_opaque_checksum_header():
    header = decode_lsa_header(CAPTURED_OPAQUE_HEADER)
    assert (header.ls_type, header.ls_checksum, header.length) == (10, 0xABD9, 132)


# -- scapy cross-checks ----------------------------------------------------------------

@given(so.scapy_lsas())
def test_scapy_parses_ours(lsa):
    cls = {1: OSPF_Router_LSA, 3: OSPF_SummaryIP_LSA, 4: OSPF_SummaryASBR_LSA}[lsa.ls_type]
    so.assert_lsa_matches_scapy(lsa, cls(encode_lsa(lsa)))


@given(so.scapy_lsas())
def test_we_parse_scapy(lsa):
    assert decode_lsa(bytes(so.scapy_lsa(lsa))) == lsa


# -- semantic checks and encode errors --------------------------------------------------

def _router(**kw):
    return RouterLSA(**{"link_state_id": "1.1.1.1", "advertising_router": "1.1.1.1", **kw})


@pytest.mark.parametrize("offset, value, field", [
    (20, 0x08, "lsa.router.flags"),  # W bit: reserved in RFC 2328
    (21, 0x01, "lsa.router.reserved"),
    (32, 0x09, "lsa.router.links.link_type"),
])
def test_router_reserved_and_enum_checks(offset, value, field):
    lsa = _router(links=(RouterLink(link_id="2.2.2.2", link_data="3.3.3.3",
                                    link_type=LinkType.POINT_TO_POINT, metric=5),))
    data = bytearray(encode_lsa(lsa))
    data[offset] = value
    with pytest.raises(DecodeError) as info:
        decode_lsa(so.reseal_lsa(bytes(data)))
    assert (info.value.field, info.value.offset) == (field, offset)


def test_router_tos_reserved_and_link_count():
    link = RouterLink(link_id="2.2.2.2", link_data="3.3.3.3", link_type=LinkType.STUB,
                      metric=5, tos_metrics=(TosMetric(2, 7),))
    data = encode_lsa(_router(links=(link,)))
    with pytest.raises(DecodeError, match="tos_metrics.reserved"):
        decode_lsa(so.reseal_lsa(data[:37] + b"\x01" + data[38:]))
    with pytest.raises(DecodeError, match="link_count|links"):
        decode_lsa(so.reseal_lsa(data[:22] + b"\x00\x02" + data[24:]))
    with pytest.raises(DecodeError) as info:
        decode_lsa(so.reseal_lsa(data[:22] + b"\x00\x00" + data[24:]))
    assert (info.value.field, info.value.offset) == ("lsa.router.link_count", 22)
    assert "16 bytes after the announced links" in info.value.reason


def test_summary_checks():
    lsa = SummaryLSA(ls_type=LsType.SUMMARY_NETWORK, link_state_id="10.1.0.0",
                     advertising_router="1.1.1.1", network_mask="255.255.0.0", metric=8)
    data = encode_lsa(lsa)
    with pytest.raises(DecodeError, match="summary.reserved"):
        decode_lsa(so.reseal_lsa(data[:24] + b"\x01" + data[25:]))
    with pytest.raises(DecodeError, match="summary.tos_metrics"):
        decode_lsa(so.reseal_lsa(data + b"\x00\x00"))


def test_length_checks():
    with pytest.raises(DecodeError) as info:
        decode_lsa(CAPTURED_ROUTER_LSA[:30])
    assert (info.value.field, info.value.offset) == ("lsa.length", 18)
    with pytest.raises(DecodeError, match="lsa.length"):
        decode_lsa(CAPTURED_ROUTER_LSA + bytes(4))
    short = CAPTURED_ROUTER_LSA[:18] + b"\x00\x13" + CAPTURED_ROUTER_LSA[20:]
    with pytest.raises(DecodeError, match="lsa.length"):
        decode_lsa(short)


def test_unknown_types_are_opaque():
    lsa = UnknownLSA(ls_type=LsType.NETWORK, link_state_id="10.0.0.1",
                     advertising_router="1.1.1.1", body=b"\xff\xff\xff\x00\x01\x01\x01\x01")
    assert decode_lsa(encode_lsa(lsa)) == lsa
    with pytest.raises(EncodeError, match="ls_type"):
        encode_lsa(dataclasses.replace(lsa, ls_type=LsType.ROUTER))


@pytest.mark.parametrize("lsa, field", [
    (_router(ls_sequence_number=0x80000001), "ls_sequence_number"),
    (_router(ls_age=70000), "ls_age"),
    (_router(link_state_id="1.2.3"), "lsa"),  # qbb.codec.IPv4Address gives no path
    (_router(flags=8), "flags"),
    (_router(links=[RouterLink(link_id="1.1.1.1", link_data="0.0.0.0",
                               link_type=LinkType.STUB, metric=1 << 16)]), "metric"),
    (_router(links=[RouterLink(link_id="1.1.1.1", link_data="0.0.0.0",
                               link_type=7, metric=1)]), "link_type"),
    (SummaryLSA(ls_type=LsType.SUMMARY_ASBR, link_state_id="1.1.1.1",
                advertising_router="1.1.1.1", metric=1 << 24), "metric"),
    (SummaryLSA(ls_type=LsType.ROUTER, link_state_id="1.1.1.1",
                advertising_router="1.1.1.1", metric=1), "ls_type"),
    (UnknownLSA(ls_type=2, link_state_id="1.1.1.1", advertising_router="1.1.1.1",
                body=bytes(70000)), "length"),
])
def test_encode_errors(lsa, field):
    with pytest.raises(EncodeError) as info:
        encode_lsa(lsa)
    assert field in info.value.field


def test_lists_become_tuples():
    link = RouterLink(link_id="1.1.1.1", link_data="0.0.0.0", link_type=LinkType.STUB,
                      metric=1, tos_metrics=[TosMetric(0, 1)])
    lsa = _router(links=[link])
    assert isinstance(lsa.links, tuple) and isinstance(link.tos_metrics, tuple)
    assert hash(lsa) == hash(decode_lsa(encode_lsa(lsa)))


# -- database key and RFC 2328 13.1 ordering -------------------------------------------

def _header(**kw):
    base = dict(ls_type=1, link_state_id="1.1.1.1", advertising_router="1.1.1.1",
                ls_sequence_number=INITIAL_SEQUENCE_NUMBER, ls_checksum=0x1000, ls_age=10)
    return LsaHeader(**{**base, **kw})


@pytest.mark.parametrize("a, b, expected", [
    (_header(ls_sequence_number=5), _header(ls_sequence_number=4), 1),
    (_header(ls_sequence_number=-5), _header(ls_sequence_number=4), -1),
    (_header(ls_sequence_number=0x7FFFFFFF), _header(), 1),
    (_header(ls_checksum=0xFFFF), _header(ls_checksum=0x0001), 1),
    (_header(ls_age=MAX_AGE), _header(ls_age=0), 1),
    (_header(ls_age=5), _header(ls_age=MAX_AGE), -1),
    (_header(ls_age=MAX_AGE), _header(ls_age=MAX_AGE + 100), 0),
    (_header(ls_age=100), _header(ls_age=1001), 1),
    (_header(ls_age=100), _header(ls_age=1000), 0),
    (_header(ls_age=100, options=Options(0)), _header(ls_age=200), 0),
])
def test_compare_lsa(a, b, expected):
    assert compare_lsa(a, b) == expected
    assert compare_lsa(b, a) == -expected
    assert is_newer(a, b) == (expected == 1)


def test_compare_full_lsas_uses_wire_checksum():
    old = _router(ls_sequence_number=7)
    new = dataclasses.replace(old, ls_sequence_number=8)
    assert is_newer(new, old) and not is_newer(old, new)
    assert compare_lsa(old, lsa_header(old)) == 0
    other = dataclasses.replace(old, flags=RouterFlags.B)
    expected = 1 if lsa_header(other).ls_checksum > lsa_header(old).ls_checksum else -1
    assert compare_lsa(other, old) == expected


@given(so.lsa_headers(), so.lsa_headers())
def test_compare_is_antisymmetric(a, b):
    assert compare_lsa(a, b) == -compare_lsa(b, a)
    assert compare_lsa(a, a) == 0

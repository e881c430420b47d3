"""The shared codec helpers: error mapping, IPv4 adapter, RFC 1071 checksum."""

import construct as c
import pytest
from hypothesis import given, strategies as st

from qbb.codec import IPv4Address, build, internet_checksum, parse
from qbb.errors import DecodeError, EncodeError

INNER = c.Struct("kind" / c.Const(7, c.Int8ub), "count" / c.Int16ub)
OUTER = c.Struct("length" / c.Int32ub, "inner" / INNER, "addr" / IPv4Address)


def test_truncation_names_field_and_offset():
    with pytest.raises(DecodeError) as info:
        parse(OUTER, b"\x00\x00\x00\x01\x07\x00", "T")
    assert info.value.field == "inner.count"
    assert info.value.offset == 5
    assert "T: field 'inner.count' at byte 5" in str(info.value)


def test_bad_constant_names_field():
    with pytest.raises(DecodeError) as info:
        parse(OUTER, b"\x00\x00\x00\x01\x08\x00\x01\x01\x02\x03\x04", "T")
    assert info.value.field == "inner.kind"
    assert info.value.offset == 4


def test_trailing_bytes_rejected_unless_allowed():
    data = OUTER.build(dict(length=1, inner=dict(count=2), addr="10.0.0.1")) + b"x"
    with pytest.raises(DecodeError) as info:
        parse(OUTER, data, "T")
    assert info.value.field == "<end>" and info.value.offset == 11
    assert parse(OUTER, data, "T", whole=False).addr == "10.0.0.1"


def test_non_bytes_input_is_a_decode_error():
    with pytest.raises(DecodeError):
        parse(OUTER, "text", "T")


@pytest.mark.parametrize("addr", ["1.2.3", "1.2.3.256", None, "a.b.c.d"])
def test_bad_address_is_an_encode_error(addr):
    with pytest.raises(EncodeError):
        build(OUTER, dict(length=1, inner=dict(count=2), addr=addr), "T")


@given(st.binary())
def test_random_bytes_give_value_or_decode_error(data):
    try:
        parse(OUTER, data, "T")
    except DecodeError:
        pass


def _reference_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum((data[i] << 8) | data[i + 1] for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_checksum_known_answers():
    # RFC 1071 section 3 example: the one's-complement sum of these words is 0xddf2.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF
    # A published IPv4 header (checksum field zeroed): 0xb861.
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(header) == 0xB861
    assert internet_checksum(header[:10] + b"\xb8\x61" + header[12:]) == 0


@given(st.binary(max_size=200))
def test_checksum_matches_reference(data):
    assert internet_checksum(data) == _reference_checksum(data)

"""QKDTL segment and body codecs: round trips, canonical decoding, robustness, errors."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qbb.codec import internet_checksum
from qbb.errors import DecodeError, EncodeError
from qbb.transport.packet import (
    HEADER_LEN,
    RESERVED_FLAGS,
    ConnectRequest,
    KeyDelivery,
    Segment,
    SegmentFlags,
    ServiceClass,
    decode_body,
    decode_connect_request,
    decode_key_deliveries,
    decode_key_delivery,
    decode_segment,
    encode_connect_request,
    encode_key_deliveries,
    encode_key_delivery,
    encode_segment,
)
from strategies_transport import (connect_requests, key_batches, key_deliveries, mutations,
                                  segments)

F = SegmentFlags
CODECS = {
    "segment": (decode_segment, encode_segment),
    "key": (decode_key_delivery, encode_key_delivery),
    "keys": (decode_key_deliveries, encode_key_deliveries),
    "connect": (decode_connect_request, encode_connect_request),
}
VALID = {
    "segment": segments().map(encode_segment),
    "key": key_deliveries().map(encode_key_delivery),
    "keys": key_batches().map(encode_key_deliveries),
    "connect": connect_requests().map(encode_connect_request),
}


def with_checksum(data: bytes) -> bytes:
    """Recompute the checksum of a (possibly mutated) segment of >= 20 bytes."""
    zeroed = data[:18] + b"\x00\x00" + data[20:]
    return data[:18] + internet_checksum(zeroed).to_bytes(2, "big") + data[20:]


def assert_value_or_decode_error(decode, encode, data: bytes) -> None:
    try:
        value = decode(data)
    except DecodeError as error:
        assert error.layer == "QKDTL" and f"byte {error.offset}" in str(error)
        return
    assert encode(value) == data  # canonical: accepted bytes re-encode identically


def expect_decode_error(decode, data: bytes, field: str, offset: int) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert (info.value.field, info.value.offset) == (field, offset), str(info.value)
    return info.value


# --- round trips -----------------------------------------------------------------

@given(segments())
def test_segment_round_trip(segment):
    data = encode_segment(segment)
    assert len(data) == HEADER_LEN + len(segment.payload)
    assert decode_segment(data) == segment
    assert encode_segment(decode_segment(data)) == data


@given(key_deliveries())
def test_key_delivery_round_trip(body):
    data = encode_key_delivery(body)
    assert len(data) == 6 + (body.key_bits + 7) // 8
    assert decode_key_delivery(data) == body


@given(key_batches())
def test_key_deliveries_round_trip(keys):
    data = encode_key_deliveries(keys)
    assert data == b"".join(encode_key_delivery(k) for k in keys)  # bodies back to back
    assert decode_key_deliveries(data) == keys
    assert encode_key_deliveries(decode_key_deliveries(data)) == data


@given(key_batches())
def test_decode_body_of_several_keys(keys):
    segment = Segment(1, 2, 3, flags=F.KEY, payload=encode_key_deliveries(keys))
    assert decode_body(decode_segment(encode_segment(segment))) == (
        keys if len(keys) > 1 else keys[0])


@given(key_deliveries())
def test_one_body_reads_the_same_both_ways(body):
    data = encode_key_delivery(body)
    assert decode_key_deliveries(data) == (body,)
    assert encode_key_deliveries([body]) == data


@given(connect_requests())
def test_connect_request_round_trip(body):
    assert decode_connect_request(encode_connect_request(body)) == body


@given(segments())
def test_decode_body_dispatch(segment):
    body = decode_body(segment)
    if segment.flags & F.KEY:
        assert encode_key_delivery(body) == segment.payload
    elif segment.flags & F.SYN and segment.payload:
        assert encode_connect_request(body) == segment.payload
    else:
        assert body == segment.payload


def test_golden_layout():
    key = KeyDelivery(key_id=0x01020304, key_bits=12, key=b"\xab\xc0")
    segment = Segment(7355, 443, 0x11223344, 0x55667788, F.KEY | F.ACK, 64,
                      encode_key_delivery(key))
    body = bytes.fromhex("01020304" "000c" "abc0")
    header = struct.pack("!HHIIHHHH", 7355, 443, 0x11223344, 0x55667788, 0x0018, 64, 8, 0)
    expected = with_checksum(header + body)
    assert encode_segment(segment) == expected
    assert internet_checksum(expected) == 0  # RFC 1071: verifies to zero


def test_connect_request_layout():
    body = ConnectRequest(ServiceClass.GUARANTEED_RATE, 1000, 4096, "srv")
    assert encode_connect_request(body) == bytes.fromhex("01000003" "000003e8" "00001000") + b"srv"


def test_reserved_mask_is_complement_of_flags():
    assert RESERVED_FLAGS == 0xFF20
    assert RESERVED_FLAGS & sum(F) == 0 and RESERVED_FLAGS | sum(F) == 0xFFFF


# --- robustness ------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CODECS))
@given(data=st.binary(max_size=80))
def test_random_bytes(name, data):
    assert_value_or_decode_error(*CODECS[name], data)


@pytest.mark.parametrize("name", sorted(CODECS))
@given(data=st.data())
def test_mutated_encodings(name, data):
    assert_value_or_decode_error(*CODECS[name], data.draw(mutations(VALID[name])))


@given(mutations(VALID["segment"]))
def test_mutated_segments_with_repaired_checksum(data):
    if len(data) >= HEADER_LEN:
        data = with_checksum(data)
    assert_value_or_decode_error(decode_segment, encode_segment, data)
    try:
        segment = decode_segment(data)
    except DecodeError:
        return
    try:
        decode_body(segment)
    except DecodeError as error:
        assert error.field.startswith("payload.") and error.offset >= HEADER_LEN


def test_non_bytes_input():
    for decode, _ in CODECS.values():
        with pytest.raises(DecodeError):
            decode("not bytes")


# --- decode errors name the field ------------------------------------------------

GOOD = encode_segment(Segment(1, 2, 3, 4, F.ACK, 5, b"payload"))


def test_bad_checksum():
    bad = GOOD[:18] + bytes([GOOD[18] ^ 1]) + GOOD[19:]
    expect_decode_error(decode_segment, bad, "checksum", 18)
    expect_decode_error(decode_segment, GOOD[:-1] + b"?", "checksum", 18)


@pytest.mark.parametrize("data", [GOOD[:-1], GOOD + b"x", GOOD[:HEADER_LEN]])
def test_length_disagrees_with_buffer(data):
    error = expect_decode_error(decode_segment, data, "length", 16)
    assert "payload bytes" in error.reason


def test_truncated_header_names_field():
    expect_decode_error(decode_segment, GOOD[:5], "seq", 4)
    expect_decode_error(decode_segment, b"", "src_port", 0)


@pytest.mark.parametrize("flags", [0x0020, 0x0100, 0x8000, int(F.KEY | F.SYN)])
def test_bad_flags(flags):
    bad = with_checksum(GOOD[:12] + flags.to_bytes(2, "big") + GOOD[14:])
    expect_decode_error(decode_segment, bad, "flags", 12)


def test_key_delivery_errors():
    expect_decode_error(decode_key_delivery, bytes.fromhex("00000001" "0000"), "key_bits", 4)
    expect_decode_error(decode_key_delivery, bytes.fromhex("00000001" "000c" "abc1"), "key", 7)
    expect_decode_error(decode_key_delivery, bytes.fromhex("00000001" "0010" "ab"), "key", 6)
    expect_decode_error(decode_key_delivery, bytes.fromhex("00000001" "0008" "abcd"), "<end>", 7)


def test_key_deliveries_errors():
    one = bytes.fromhex("00000001" "000c" "abc0")
    expect_decode_error(decode_key_deliveries, b"", "key_id", 0)
    expect_decode_error(decode_key_deliveries, one + bytes.fromhex("00000002" "0000"),
                        "key_bits", 8 + 4)
    expect_decode_error(decode_key_deliveries, one + bytes.fromhex("00000002" "000c" "abc1"),
                        "key", 8 + 7)
    expect_decode_error(decode_key_deliveries, one + bytes.fromhex("00000002" "0010" "ab"),
                        "key", 8 + 6)
    expect_decode_error(decode_key_deliveries, one + b"\x00\x00", "key_id", 8)
    error = expect_decode_error(decode_key_deliveries, one + one[:5], "key_bits", 12)
    assert "key delivery 1" in error.reason


def test_connect_request_errors():
    good = encode_connect_request(ConnectRequest(ServiceClass.BEST_EFFORT, 0, 0, "app"))
    expect_decode_error(decode_connect_request, b"\x07" + good[1:], "service", 0)
    expect_decode_error(decode_connect_request, good[:1] + b"\x01" + good[2:], "reserved", 1)
    expect_decode_error(decode_connect_request, good[:-2] + b"\xff" + good[-1:], "application", 13)
    expect_decode_error(decode_connect_request, good[:2] + b"\x00\x00" + good[4:12],
                        "application", 12)


def test_decode_body_offsets_are_segment_relative():
    segment = Segment(1, 2, flags=F.KEY, payload=bytes.fromhex("00000001" "000c" "abc1"))
    expect_decode_error(decode_body, segment, "payload.key", HEADER_LEN + 7)
    syn = Segment(1, 2, flags=F.SYN, payload=b"\x05")
    expect_decode_error(decode_body, syn, "payload.reserved", HEADER_LEN + 1)


# --- encode errors ---------------------------------------------------------------

@pytest.mark.parametrize("segment, field", [
    (Segment(-1, 2), "src_port"),
    (Segment(1, 0x10000), "dst_port"),
    (Segment(1, 2, seq=2**32), "seq"),
    (Segment(1, 2, window=-5), "window"),
    (Segment(1, 2, flags=0x0100), "flags"),
    (Segment(1, 2, flags=F.KEY | F.SYN), "flags"),
    (Segment(1, 2, flags=None), "flags"),
    (Segment(1, 2, payload="text"), "payload"),
    (Segment(1, 2, payload=bytes(0x10000)), "length"),
])
def test_encode_segment_errors(segment, field):
    with pytest.raises(EncodeError) as info:
        encode_segment(segment)
    assert info.value.field == field, str(info.value)


@pytest.mark.parametrize("body, field", [
    (KeyDelivery(1, 0, b""), "key_bits"),
    (KeyDelivery(1, 0x10000, bytes(0x2000)), "key_bits"),
    (KeyDelivery(1, 12, b"\xab"), "key"),
    (KeyDelivery(1, 12, b"\xab\xc1"), "key"),
    (KeyDelivery(2**32, 8, b"\xab"), "key_id"),
    (KeyDelivery(1, 8, "k"), "key"),
])
def test_encode_key_delivery_errors(body, field):
    with pytest.raises(EncodeError) as info:
        encode_key_delivery(body)
    assert info.value.field == field, str(info.value)


@pytest.mark.parametrize("body, field", [
    (ConnectRequest(9, 0, 0, "app"), "service"),
    (ConnectRequest(ServiceClass.BEST_EFFORT, 0, 0, ""), "application"),
    (ConnectRequest(ServiceClass.BEST_EFFORT, 0, 0, "\udc80"), "application"),
    (ConnectRequest(ServiceClass.BEST_EFFORT, -1, 0, "app"), "rate"),
    (ConnectRequest(ServiceClass.BEST_EFFORT, 0, 2**32, "app"), "burst"),
])
def test_encode_connect_request_errors(body, field):
    with pytest.raises(EncodeError) as info:
        encode_connect_request(body)
    assert info.value.field == field, str(info.value)


@pytest.mark.parametrize("keys, field", [
    ((), "keys"),
    (KeyDelivery(1, 8, b"\xab"), "keys"),
    (None, "keys"),
    ((KeyDelivery(1, 8, b"\xab"), KeyDelivery(2, 12, b"\xab")), "key"),
    ((KeyDelivery(1, 0xFFFF, bytes(0x2000)),) * 8, "keys"),
])
def test_encode_key_deliveries_errors(keys, field):
    with pytest.raises(EncodeError) as info:
        encode_key_deliveries(keys)
    assert info.value.field == field, str(info.value)


def test_key_material_not_in_repr():
    body = KeyDelivery(1, 16, b"\x13\x37")
    segment = Segment(1, 2, flags=F.KEY, payload=encode_key_delivery(body))
    assert "1337" not in repr(body) and "\\x13" not in repr(body)
    assert "payload" not in repr(segment)

"""The vectorised RFC 1071 checksum (``qbb.codec``) and its use in the relay fast path."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from qbb.codec import NUMPY_CHECKSUM_MIN, _checksum_numpy, internet_checksum
from qbb.errors import DecodeError
from qbb.relay import encode_keys_segment, parse_keys_segment


def reference(data: bytes) -> int:
    """RFC 1071 §4.1 literally: 16-bit big-endian words, end-around carry, complement."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@given(st.binary(max_size=5000))
def test_numpy_form_equals_rfc1071(data: bytes) -> None:
    expected = reference(data)
    assert _checksum_numpy(data) == expected
    assert internet_checksum(data) == expected


@given(size=st.integers(NUMPY_CHECKSUM_MIN - 8, NUMPY_CHECKSUM_MIN + 8),
       fill=st.sampled_from([0x00, 0xFF, 0x80, 0x01]), offset=st.integers(0, 3))
def test_edges_of_the_threshold_and_special_fills(size: int, fill: int, offset: int) -> None:
    data = bytes([fill]) * size
    assert internet_checksum(data) == reference(data)
    # any buffer type, any alignment
    buffer = bytearray(offset) + bytearray(data)
    view = memoryview(buffer)[offset:]
    assert internet_checksum(view) == internet_checksum(bytes(buffer[offset:])) == reference(data)


def test_all_zero_and_negative_zero() -> None:
    assert internet_checksum(bytes(4096)) == 0xFFFF  # sum 0: complement of +0
    ones = b"\xff\xff" * 2048  # sum 0xFFFF (-0): checksum 0
    assert internet_checksum(ones) == reference(ones) == 0


@given(keys=st.integers(1, 7), stored=st.sampled_from([None, 0xFFFF, 0]))
def test_relay_whole_sum_check_matches_the_exact_check(keys: int, stored: int | None) -> None:
    """The relay accepts a KEY segment iff its stored checksum is exactly the computed one."""
    segment = bytearray(encode_keys_segment(7, [(i, 65535, bytes([i]) * 8191 + b"\x02")
                                                for i in range(keys)]))
    computed = int.from_bytes(segment[18:20], "big")
    if stored is not None:
        segment[18:20] = stored.to_bytes(2, "big")
    accepted = stored is None or stored == computed
    try:
        parsed = parse_keys_segment(bytes(segment))
    except DecodeError:
        parsed = None
    assert (parsed is not None) == accepted


def test_negative_zero_stored_is_rejected_like_the_codec() -> None:
    """A segment whose computed checksum is 0: a stored 0xFFFF (-0) sums right but is not
    the value the codec computes, so both the fast path and the codec reject it."""
    key = bytearray(b"\x5a" * 8191)
    segment = bytearray(encode_keys_segment(7, [(1, 65528, bytes(key))]))
    position = 26 if 26 % 2 == 0 else 27  # a 16-bit aligned word inside the key
    segment[position:position + 2] = b"\0\0"
    segment[18:20] = b"\0\0"
    partial = ~reference(bytes(segment)) & 0xFFFF  # one's-complement sum without the word
    word = (0xFFFF - partial) % 0xFFFF or 0xFFFF
    segment[position:position + 2] = word.to_bytes(2, "big")
    assert reference(bytes(segment)) == 0  # computed checksum 0
    assert parse_keys_segment(bytes(segment)) is not None  # stored 0: exact
    segment[18:20] = b"\xff\xff"
    try:
        parse_keys_segment(bytes(segment))
    except DecodeError:
        return
    raise AssertionError("a stored 0xFFFF for a computed 0 was accepted")

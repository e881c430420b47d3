"""The struct fast path of qbb/relay.py agrees with the QKDTL construct codec exactly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qbb.errors import DecodeError
from qbb.relay import encode_key_segment, parse_key_segment, random_key
from qbb.transport.packet import (KeyDelivery, Segment, SegmentFlags, decode_key_delivery,
                                  decode_segment, encode_key_delivery, encode_segment)
from tests.strategies_transport import key_deliveries, mutations, segments


def _codec(data: bytes):
    """What the codec makes of ``data``: the parse_key_segment tuple, None, or DecodeError."""
    try:
        segment = decode_segment(data)
        if not segment.flags & SegmentFlags.KEY:
            return None
        body = decode_key_delivery(segment.payload)
    except DecodeError:
        return DecodeError
    return segment.dst_port, body.key_id, body.key_bits, body.key


def _fast(data: bytes):
    try:
        return parse_key_segment(data)
    except DecodeError:
        return DecodeError


@given(st.integers(0, 0xFFFF), key_deliveries())
def test_encode_matches_codec(port, body):
    expected = encode_segment(Segment(port, port, body.key_id, flags=SegmentFlags.KEY,
                                      payload=encode_key_delivery(body)))
    assert encode_key_segment(port, body.key_id, body.key_bits, body.key) == expected
    assert parse_key_segment(expected) == (port, body.key_id, body.key_bits, body.key)


def test_largest_key_round_trip():
    key = random_key(65535)
    data = encode_key_segment(7, 0xFFFFFFFF, 65535, key)
    assert len(data) == 20 + 6 + 8192
    assert parse_key_segment(data) == _codec(data) == (7, 0xFFFFFFFF, 65535, key)


def _key_segment_bytes():
    return st.builds(lambda s: encode_segment(s), segments())


@given(st.one_of(_key_segment_bytes(), mutations(_key_segment_bytes()),
                 mutations(st.builds(lambda p, b: encode_key_segment(p, b.key_id, b.key_bits,
                                                                       b.key),
                                     st.integers(0, 0xFFFF), key_deliveries())),
                 st.binary(max_size=64)))
def test_decode_agrees_with_codec_on_any_bytes(data):
    assert _fast(data) == _codec(data)

"""The struct fast path of qbb/relay.py agrees with the QKDTL construct codec exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qbb.errors import DecodeError
from qbb.relay import (KeyRelay, encode_key_segment, encode_keys_segment, keys_per_segment,
                       parse_key_segment, parse_keys_segment, random_key)
from qbb.transport.packet import (Segment, SegmentFlags, decode_key_deliveries,
                                  decode_key_delivery, decode_segment, encode_key_deliveries,
                                  encode_key_delivery, encode_segment)
from tests.strategies_transport import key_batches, key_deliveries, mutations, segments


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


# --- several keys per segment --------------------------------------------------------

def _codec_keys(data: bytes):
    """What the codec makes of ``data``: the parse_keys_segment tuple, None, or DecodeError."""
    try:
        segment = decode_segment(data)
        if not segment.flags & SegmentFlags.KEY:
            return None
        keys = decode_key_deliveries(segment.payload)
    except DecodeError:
        return DecodeError
    return segment.dst_port, [(k.key_id, k.key_bits, k.key) for k in keys]


def _fast_keys(data: bytes):
    try:
        return parse_keys_segment(data)
    except DecodeError:
        return DecodeError


def _batch_bytes(port, keys):
    return encode_keys_segment(port, [(k.key_id, k.key_bits, k.key) for k in keys])


@given(st.integers(0, 0xFFFF), key_batches())
def test_encode_keys_matches_codec(port, keys):
    expected = encode_segment(Segment(port, port, keys[0].key_id, flags=SegmentFlags.KEY,
                                      payload=encode_key_deliveries(keys)))
    assert _batch_bytes(port, keys) == expected
    assert parse_keys_segment(expected) == (port, [(k.key_id, k.key_bits, k.key) for k in keys])


@given(st.one_of(_key_segment_bytes(), mutations(_key_segment_bytes()),
                 mutations(st.builds(_batch_bytes, st.integers(0, 0xFFFF), key_batches())),
                 st.binary(max_size=64)))
def test_decode_keys_agrees_with_codec_on_any_bytes(data):
    assert _fast_keys(data) == _codec_keys(data)
    single = _fast(data)  # one key: the 4-tuple; several: DecodeError
    codec = _codec_keys(data)
    if isinstance(codec, tuple) and len(codec[1]) == 1:
        assert single == (codec[0], *codec[1][0])
    elif isinstance(codec, tuple):
        assert single is DecodeError
    else:
        assert single == codec


def test_full_frame_of_largest_keys():
    count = keys_per_segment(65535, 65000)
    keys = [(0xFFFFFFFF - 3 + i & 0xFFFFFFFF, 65535, random_key(65535)) for i in range(count)]
    data = encode_keys_segment(7, keys)
    assert count == 7 and 20 + len(data) + 28 + 16 <= 65000
    assert parse_keys_segment(data) == _codec_keys(data) == (7, keys)


class _Node:
    """Two relays joined back to back: what one sends, the other receives."""

    def __init__(self, address):
        self.address, self.peer, self.handler = address, None, None

    def register(self, proto, handler):
        self.handler = handler

    def send_packet(self, packet):
        self.peer.handler(packet, None)
        return True


def test_batched_relay_gives_both_ends_the_same_keys():
    a, b = _Node("1.1.0.1"), _Node("1.1.0.2")
    a.peer, b.peer = b, a
    sender, receiver = KeyRelay(a, first_key_id=0xFFFFFFFE), KeyRelay(b)
    sent = sender.send_keys(b.address, 1000, 5) + sender.send_keys(b.address, 65535, 7)
    sent += [sender.send_key(b.address, 3)]
    assert [k.key_id for k in sent] == [(0xFFFFFFFE + i) & 0xFFFFFFFF for i in range(13)]
    assert [(k.key_id, k.bits, k.key) for k in receiver.received] == [
        (k.key_id, k.bits, k.key) for k in sent]
    assert receiver.counters["received"] == 13 and sender.counters["segments_sent"] == 3
    with pytest.raises(ValueError):
        sender.send_keys(b.address, 65535, 8)  # does not fit one QKDNL packet

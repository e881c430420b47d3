"""Q-RoKR signalling codec: round trips, canonical decoding, robustness, errors."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qbb.errors import DecodeError, EncodeError
from qbb.routing.rokr_packet import (
    HEADER_LEN,
    Cancel,
    CancelReason,
    Feedback,
    FeedbackStatus,
    Reserve,
    decode_rokr,
    encode_rokr,
)
from strategies_transport import cancels, feedbacks, mutations, reserves, rokr_messages

A, B, C, D = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"
RESERVE = Reserve(7, A, D, 4096, 1_000_000, (B, C), (A, B, C, D))
FEEDBACK = Feedback(7, (B, C), FeedbackStatus.FAILURE, 123_456)
CANCEL = Cancel(7, (B, C), CancelReason.LINK_FAILED)


def ip(address: str) -> bytes:
    return bytes(int(part) for part in address.split("."))


def expect_decode_error(data: bytes, field: str, offset: int) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_rokr(data)
    assert (info.value.field, info.value.offset) == (field, offset), str(info.value)
    return info.value


def assert_value_or_decode_error(data: bytes) -> None:
    try:
        msg = decode_rokr(data)
    except DecodeError as error:
        assert error.layer == "Q-RoKR" and f"byte {error.offset}" in str(error)
        return
    assert encode_rokr(msg) == data


# --- round trips and layout ------------------------------------------------------

@pytest.mark.parametrize("strategy", [reserves(), feedbacks(), cancels()],
                         ids=["reserve", "feedback", "cancel"])
@given(data=st.data())
def test_round_trip(strategy, data):
    msg = data.draw(strategy)
    raw = encode_rokr(msg)
    assert int.from_bytes(raw[2:4], "big") == len(raw)
    assert decode_rokr(raw) == msg
    assert encode_rokr(decode_rokr(raw)) == raw


def test_reserve_layout():
    expected = (struct.pack("!BBHI", 1, 1, 60, 7) + ip(A) + ip(D)
                + struct.pack("!QQ", 4096, 1_000_000) + ip(B) + ip(C)
                + b"\x04\x00\x00\x00" + ip(A) + ip(B) + ip(C) + ip(D))
    assert encode_rokr(RESERVE) == expected


def test_feedback_layout():
    expected = (struct.pack("!BBHI", 1, 2, 28, 7) + ip(B) + ip(C)
                + struct.pack("!Q", 123_456) + b"\x01\x00\x00\x00")
    assert encode_rokr(FEEDBACK) == expected


def test_cancel_layout():
    expected = struct.pack("!BBHI", 1, 3, 20, 7) + ip(B) + ip(C) + b"\x01\x00\x00\x00"
    assert encode_rokr(CANCEL) == expected


def test_first_hop_and_last_hop_links():
    for link in [(A, B), (C, D)]:
        msg = Reserve(1, A, D, 1, 1, link, (A, B, C, D))
        assert decode_rokr(encode_rokr(msg)) == msg


# --- robustness ------------------------------------------------------------------

@given(st.binary(max_size=80))
def test_random_bytes(data):
    assert_value_or_decode_error(data)


@given(st.binary(max_size=60).map(lambda tail: b"\x01" + tail))
def test_random_bytes_behind_a_valid_version(data):
    assert_value_or_decode_error(data)


@given(mutations(rokr_messages().map(encode_rokr)))
def test_mutated_encodings(data):
    assert_value_or_decode_error(data)


@given(mutations(rokr_messages().map(encode_rokr)))
def test_mutated_encodings_with_repaired_length(data):
    if len(data) >= 4:
        data = data[:2] + min(len(data), 0xFFFF).to_bytes(2, "big") + data[4:]
    assert_value_or_decode_error(data)


def test_non_bytes_input():
    with pytest.raises(DecodeError):
        decode_rokr(None)


# --- decode errors name the field ------------------------------------------------

RAW = encode_rokr(RESERVE)


def test_header_errors():
    expect_decode_error(b"\x02" + RAW[1:], "version", 0)
    error = expect_decode_error(RAW[:1] + b"\x04" + RAW[2:], "type", 1)
    assert "unknown message type 4" in str(error)
    expect_decode_error(RAW[:-1], "length", 2)
    expect_decode_error(RAW + b"\x00", "length", 2)
    expect_decode_error(RAW[:3], "length", 2)
    expect_decode_error(RAW[:6], "request_id", 4)


def test_length_larger_than_body():
    raw = encode_rokr(CANCEL) + b"\x00" * 4
    raw = raw[:2] + len(raw).to_bytes(2, "big") + raw[4:]
    expect_decode_error(raw, "<end>", 20)


def test_body_truncated_consistently():
    raw = encode_rokr(FEEDBACK)[:20]
    raw = raw[:2] + (20).to_bytes(2, "big") + raw[4:]
    expect_decode_error(raw, "body.tag_us", 16)


@pytest.mark.parametrize("offset", [41, 42, 43])
def test_reserve_reserved_bytes(offset):
    expect_decode_error(RAW[:offset] + b"\x01" + RAW[offset + 1:], "body.reserved", 41)


def test_feedback_and_cancel_fields():
    raw = encode_rokr(FEEDBACK)
    expect_decode_error(raw[:24] + b"\x09" + raw[25:], "body.status", 24)
    expect_decode_error(raw[:26] + b"\x01" + raw[27:], "body.reserved", 25)
    raw = encode_rokr(CANCEL)
    expect_decode_error(raw[:16] + b"\xff" + raw[17:], "body.reason", 16)


def _reserve_raw(source, destination, link, path) -> bytes:
    body = (ip(source) + ip(destination) + struct.pack("!QQ", 1, 1) + ip(link[0])
            + ip(link[1]) + bytes([len(path), 0, 0, 0]) + b"".join(ip(n) for n in path))
    return struct.pack("!BBHI", 1, 1, HEADER_LEN + len(body), 9) + body


@pytest.mark.parametrize("source, destination, link, path, field, offset", [
    (A, D, (A, D), (A,), "body.path", 44),
    (A, D, (A, D), (), "body.path", 44),
    (A, D, (B, D), (B, D), "body.path", 44),
    (A, D, (A, C), (A, C), "body.path", 48),
    (A, D, (A, B), (A, B, A, D), "body.path", 52),
    (A, D, (A, C), (A, B, C, D), "body.link_a", 32),
    (A, D, (B, A), (A, B, D), "body.link_a", 32),
])
def test_reserve_path_consistency(source, destination, link, path, field, offset):
    expect_decode_error(_reserve_raw(source, destination, link, path), field, offset)


# --- encode errors ---------------------------------------------------------------

@pytest.mark.parametrize("msg, field", [
    (Reserve(1, A, D, 1, 1, (A, D), (A, B, D)), "link_a"),
    (Reserve(1, A, D, 1, 1, (A, D), [A, D]), "path"),
    (Reserve(1, A, D, -1, 1, (A, D), (A, D)), "key_bits"),
    (Reserve(1, A, D, 1, 2**64, (A, D), (A, D)), "deadline_us"),
    (Reserve(1, A, D, 1, 1, (A, D, B), (A, D)), "link"),
    (Feedback(2**32, (A, B), FeedbackStatus.SUCCESS, 0), "request_id"),
    (Feedback(1, (A, B), 17, 0), "status"),
    (Feedback(1, (A, B), FeedbackStatus.SUCCESS, -1), "tag_us"),
    (Cancel(1, (A, B), 99), "reason"),
    (Cancel(1, [A, B], CancelReason.EXPIRED), "link"),
    ("RESERVE", "type"),
])
def test_encode_errors(msg, field):
    with pytest.raises(EncodeError) as info:
        encode_rokr(msg)
    assert info.value.field == field, str(info.value)


@pytest.mark.parametrize("msg, field", [
    (Cancel(1, ("10.0.0.256", B), CancelReason.EXPIRED), "link_a"),
    (Cancel(1, (A, "010.0.0.1"), CancelReason.EXPIRED), "link_b"),
    (Feedback(1, (A, "10.0.0.1 "), FeedbackStatus.SUCCESS, 0), "link_b"),
    (Reserve(1, "10.0.0", D, 1, 1, ("10.0.0", D), ("10.0.0", D)), "link_a"),
    (Reserve(1, A, D, 1, 1, (A, "01.0.0.2"), (A, "01.0.0.2", D)), "link_b"),
    (Reserve(1, A, D, 1, 1, (A, B), (A, B, "10.0.0.04", D)), "path[2]"),
    (Reserve(1, 7, 8, 1, 1, (7, 8), (7, 8)), "link_a"),
])
def test_encode_rejects_non_canonical_address(msg, field):
    with pytest.raises(EncodeError) as info:
        encode_rokr(msg)
    assert info.value.field == field, str(info.value)


def test_encode_rejects_overlong_path():
    path = tuple(f"10.0.{i // 256}.{i % 256}" for i in range(256))
    with pytest.raises(EncodeError) as info:
        encode_rokr(Reserve(1, path[0], path[-1], 1, 1, path[:2], path))
    assert info.value.field == "path_len"

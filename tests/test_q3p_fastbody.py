"""The ``struct`` fast path of the Q3P ACK body (``qbb.q3p.fastbody``) against construct."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qbb.errors import DecodeError, EncodeError
from qbb.q3p.fastbody import decode_control, encode_control
from qbb.q3p.packet import Ack, Command, Handshake, Notice, Sync, decode_body, encode_body

U32 = st.integers(0, 2**32 - 1)
acks = st.builds(Ack, U32, U32, st.binary(max_size=300))
bodies = st.one_of(
    acks,
    st.builds(Sync, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
              st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    st.builds(Notice, st.sampled_from([0, 1, 2]), st.text(max_size=20)),
    st.builds(Handshake, st.just("192.0.2.1"), U32, st.integers(0, 2**64 - 1),
              st.integers(44, 65535), U32, st.integers(0, 2**64 - 1),
              st.integers(0, 2**64 - 1), st.integers(0, 1000)))


def outcome(func, *args):
    try:
        return "ok", func(*args)
    except (DecodeError, EncodeError) as error:
        return type(error).__name__, None


@given(bodies)
def test_encode_equals_construct(body) -> None:
    assert encode_control(body) == encode_body(body)


@given(acks)
def test_ack_round_trip(ack: Ack) -> None:
    data = encode_control(ack)
    decoded = decode_control(Command.ACK, data)
    assert decoded == ack and type(decoded) is Ack and decoded.received() == ack.received()


@given(st.binary(max_size=40), st.sampled_from([Command.ACK, Command.SYNC, Command.KEEPALIVE]))
def test_decode_accepts_and_rejects_like_construct(data: bytes, command: Command) -> None:
    assert outcome(decode_control, command, data) == outcome(decode_body, command, data)


@given(acks, st.integers(-3, 3))
def test_truncated_or_padded_ack_is_rejected(ack: Ack, change: int) -> None:
    data = encode_control(ack)
    data = data[:len(data) + change] if change < 0 else data + bytes(change)
    if change:
        with pytest.raises(DecodeError):
            decode_control(Command.ACK, data)
    assert outcome(decode_control, Command.ACK, data) == outcome(decode_body, Command.ACK, data)


@pytest.mark.parametrize("ack", [Ack(-1, 0), Ack(2**32, 0), Ack(0, 2**32), Ack(1, 1, "x"),
                                 Ack(0, 0, b"\0" * 0x10000), Ack(True, 0)])
def test_odd_acks_go_to_the_codec(ack: Ack) -> None:
    assert outcome(encode_control, ack) == outcome(encode_body, ack)

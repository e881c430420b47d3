"""The Q3P frame and control-body codecs: round trips, rejection, fast path vs specification."""

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.poly1305 import Poly1305
from hypothesis import given, strategies as st

from qbb.errors import DecodeError, EncodeError
from qbb.q3p.packet import (
    BODY_TYPES, Ack, Command, Handshake, Notice, Q3PFrame, Reason, Sync, attach_tag,
    authenticated_bytes, decode_ack, decode_body, decode_frame, decode_frame_spec,
    decode_handshake, decode_notice, decode_sync, encode_body, encode_frame,
    encode_frame_spec, encode_frame_without_tag, encode_handshake, encode_notice,
)
from strategies_q3p import (
    bodies, frame_bytes, frames, mutated, tags, u64,
)

KNOWN = Q3PFrame(0x01020304, Command.ACK, b"\xaa\xbb", b"\x11" * 16, encrypted=True,
                 more_fragments=True, priority=5, channel=9, e_offset=0x10, a_offset=0x20)
KNOWN_BYTES = bytes.fromhex(
    "0000002e" "01020304" "f4" "01" "01" "09" "0000000000000010" "0000000000000020" "aabb"
) + b"\x11" * 16


def outcome(decoder, data):
    try:
        return ("ok", decoder(data))
    except DecodeError as error:
        return ("error", error.field, error.offset)


def decode_error(decoder, data):
    with pytest.raises(DecodeError) as info:
        decoder(data)
    return info.value


# --- frames: known layout and round trips ----------------------------------------------

def test_known_frame_layout():
    assert encode_frame(KNOWN) == KNOWN_BYTES == encode_frame_spec(KNOWN)
    assert decode_frame(KNOWN_BYTES) == KNOWN == decode_frame_spec(KNOWN_BYTES)
    assert KNOWN.authenticated and not replace(KNOWN, tag=None, a_offset=0).authenticated


@given(frames())
def test_decode_inverts_encode(frame):
    data = encode_frame(frame)
    assert decode_frame(data) == frame
    assert len(data) == 28 + len(frame.payload) + (16 if frame.tag is not None else 0)
    assert decode_frame(bytearray(data)) == decode_frame(memoryview(data)) == frame


@given(frame_bytes())
def test_encode_inverts_decode(data):
    assert encode_frame(decode_frame(data)) == data


# --- frames: every decoder gives a value or DecodeError ----------------------------------

@given(st.one_of(st.binary(max_size=80), mutated(frame_bytes())))
def test_random_and_mutated_bytes(data):
    for decoder in (decode_frame, decode_frame_spec):
        try:
            frame = decoder(data)
        except DecodeError:
            continue
        assert encode_frame(frame) == data


@given(st.one_of(st.binary(max_size=60), mutated(frame_bytes()), frame_bytes()))
def test_fast_decoder_agrees_with_specification(data):
    assert outcome(decode_frame, data) == outcome(decode_frame_spec, data)


@given(frames())
def test_fast_encoder_agrees_with_specification(frame):
    assert encode_frame(frame) == encode_frame_spec(frame)


BAD_FIELDS = {
    "message_number": st.sampled_from([-1, 2**32, 1.5, None]),
    "priority": st.sampled_from([-1, 8, 255, "1"]),
    "channel": st.sampled_from([-1, 256]),
    "e_offset": st.sampled_from([-1, 2**64]),
    "a_offset": st.sampled_from([-1, 2**64]),
    "version": st.sampled_from([0, 2, 1.0]),
    "command": st.sampled_from([9, 255, -1, "DATA", 1.0]),
    "payload": st.sampled_from(["text", None, 42]),
    "tag": st.sampled_from([b"", b"x" * 15, b"x" * 17, "x" * 16]),
}


@given(frames(), st.sampled_from(sorted(BAD_FIELDS)), st.data())
def test_both_encoders_reject_out_of_range(frame, field, data):
    frame = replace(frame, **{field: data.draw(BAD_FIELDS[field])})
    for encoder in (encode_frame, encode_frame_spec):
        with pytest.raises(EncodeError):
            encoder(frame)


def test_offsets_must_be_zero_without_their_flag():
    for bad in (replace(KNOWN, encrypted=False), replace(KNOWN, tag=None)):
        for encoder in (encode_frame, encode_frame_spec, encode_frame_without_tag):
            if encoder is encode_frame_without_tag and bad.tag is None:
                continue
            with pytest.raises(EncodeError, match="offset"):
                encoder(bad)


@pytest.mark.parametrize("patch, field, offset", [
    (lambda b: b[:3], "length", 0),
    (lambda b: b[:9], "version", 9),
    (lambda b: b[:27], "a_offset", 20),
    (lambda b: b[:-1], "length", 0),
    (lambda b: b + b"\x00", "length", 0),
    (lambda b: b[:8] + bytes([b[8] | 1]) + b[9:], "flags.reserved", 8),
    (lambda b: b[:9] + b"\x02" + b[10:], "version", 9),
    (lambda b: b[:10] + b"\x09" + b[11:], "command", 10),
    (lambda b: b[:8] + bytes([b[8] & 0x7F]) + b[9:], "e_offset", 12),
    (lambda b: b[:8] + bytes([b[8] & 0xBF]) + b[9:], "a_offset", 20),
])
def test_semantic_errors_name_field_and_offset(patch, field, offset):
    for decoder in (decode_frame, decode_frame_spec):
        error = decode_error(decoder, patch(KNOWN_BYTES))
        assert (error.layer, error.field, error.offset) == ("Q3P", field, offset)
        assert f"Q3P: field {field!r} at byte {offset}" in str(error)


def test_a_flag_without_room_for_the_tag():
    short = (30).to_bytes(4, "big") + bytes([0, 0, 0, 0, 0x40, 1, 0, 0]) + bytes(18)
    for decoder in (decode_frame, decode_frame_spec):
        error = decode_error(decoder, short)
        assert (error.field, error.offset) == ("tag", 28)
    with pytest.raises(DecodeError):
        authenticated_bytes(short)


def test_a_offset_without_a_flag():
    data = encode_frame(replace(KNOWN, tag=None, a_offset=0))
    data = data[:27] + b"\x01" + data[28:]
    assert decode_error(decode_frame, data).field == "a_offset"


@pytest.mark.parametrize("value", [None, "text", 42, [1, 2]])
def test_non_bytes_input(value):
    for decoder in (decode_frame, decode_frame_spec, authenticated_bytes):
        assert decode_error(decoder, value).field == "<message>"


# --- the MAC helpers --------------------------------------------------------------------

@given(frames(), tags)
def test_tag_attached_afterwards_equals_full_encoding(frame, tag):
    frame = replace(frame, tag=tag)
    buffer = encode_frame_without_tag(replace(frame, tag=None))
    assert bytes(authenticated_bytes(buffer)) == encode_frame(frame)[:-16]
    assert attach_tag(buffer, tag) == encode_frame(frame)


@given(frames())
def test_authenticated_bytes_is_all_but_the_tag(frame):
    data = encode_frame(frame)
    covered = authenticated_bytes(data)
    assert bytes(covered) == (data[:-16] if frame.tag is not None else data)


def test_poly1305_one_pass_flow():
    key = bytes(range(32))
    frame = Q3PFrame(7, Command.DATA, b"ciphertext", encrypted=True, e_offset=64, a_offset=96)
    wire = bytes(attach_tag((buf := encode_frame_without_tag(frame)),
                            Poly1305.generate_tag(key, authenticated_bytes(buf))))
    received = decode_frame(wire)
    Poly1305.verify_tag(key, authenticated_bytes(wire), received.tag)
    assert received == replace(frame, tag=received.tag)


def test_attach_tag_rejects_bad_input():
    with pytest.raises(EncodeError):
        attach_tag(bytearray(encode_frame(replace(KNOWN, tag=None, a_offset=0))), b"x" * 16)
    with pytest.raises(EncodeError):
        attach_tag(encode_frame_without_tag(KNOWN), b"short")


# --- control bodies ---------------------------------------------------------------------

@given(bodies())
def test_body_round_trip(body):
    data = encode_body(body)
    commands = [cmd for cmd, kind in BODY_TYPES.items() if kind is type(body)]
    for command in commands:
        assert decode_body(command, data) == body
        assert encode_body(decode_body(command, data)) == data


@given(st.one_of(st.binary(max_size=60), mutated(bodies().map(encode_body))),
       st.sampled_from(list(Command) + [9, 200]))
def test_body_decoders_random_and_mutated(data, command):
    try:
        body = decode_body(command, data)
    except DecodeError as error:
        assert error.layer == "Q3P"
        return
    assert (encode_body(body) if command != Command.DATA else body) == data


def test_body_layouts():
    assert encode_body(Ack(1, 2, b"\x80")) == bytes.fromhex("00000001" "00000002" "0001" "80")
    handshake = Handshake("10.0.0.1", 7, 2**64 - 1, 1500, 64, 1, 2, 250)
    assert len(encode_body(handshake)) == 42
    assert encode_body(handshake)[:4] == bytes([10, 0, 0, 1])
    assert encode_body(Sync(1, 2, 3, 4)) == b"".join(n.to_bytes(8, "big") for n in (1, 2, 3, 4))
    assert encode_body(Notice(Reason.KEY_EXHAUSTED, "ü")) == bytes.fromhex("0003" "0002" "c3bc")
    assert decode_body(Command.DATA, b"abc") == b"abc"


@pytest.mark.parametrize("decoder, data, field, offset", [
    (decode_ack, bytes(9), "ack.sack", 8),
    (decode_ack, bytes(10) + b"x", "<end>", 10),
    (decode_handshake, bytes(38) + b"\x03\xe9" + bytes(2), "handshake.key_ratio", 38),
    (decode_handshake, bytes(40) + b"\x00\x01", "handshake.flags", 40),
    (decode_sync, bytes(31), "sync.discarded", 24),
    (decode_notice, b"\x00\x00\x00\x02\xff\xfe", "notice.text", 4),
])
def test_body_errors_name_field_and_offset(decoder, data, field, offset):
    error = decode_error(decoder, data)
    assert (error.field, error.offset) == (field, offset)


def test_unknown_reason_codes_are_kept():
    assert decode_notice(b"\x01\x00\x00\x00") == Notice(256, "")
    assert decode_notice(b"\x00\x01\x00\x00").reason is Reason.RESTART


def test_unknown_command_body():
    assert decode_error(lambda d: decode_body(9, d), b"").field == "command"


@pytest.mark.parametrize("body", [
    Ack(-1, 0), Ack(0, 2**32), Ack(0, 0, bytes(70000)),
    Handshake("10.0.0", 0, 0, 0, 0, 0, 0, 0), Handshake("1.2.3.4", 0, 0, 0, 0, 0, 0, 1001),
    Handshake("1.2.3.4", 0, 0, 2**16, 0, 0, 0, 0), Sync(0, 0, 0, -1),
    Notice(2**16), Notice(0, "\ud800"), Notice(0, "x" * 70000), "not a body",
])
def test_body_encoders_reject(body):
    with pytest.raises(EncodeError):
        encode_body(body)


# --- ACK selective-ack helpers ----------------------------------------------------------

@given(st.integers(0, 2**32 - 1), st.sets(st.integers(1, 200)))
def test_sack_bitmap_round_trip(cumulative, gaps):
    received = {(cumulative + g) & 0xFFFFFFFF for g in gaps}
    ack = Ack.from_received(cumulative, 16, received | {cumulative})
    assert set(ack.received()) == received
    assert ack == decode_ack(encode_body(ack))
    assert not ack.sack or ack.sack[-1] != 0


def test_sack_ignores_old_numbers_and_rejects_far_ones():
    assert Ack.from_received(5, 8, [0, 4, 5, 2**32 - 1]).sack == b""
    with pytest.raises(EncodeError):
        Ack.from_received(0, 8, [8 * 0xFFFF + 1])
    assert len(Ack.from_received(0, 8, [8 * 0xFFFF]).sack) == 0xFFFF


def test_sack_bit_order():
    assert Ack.from_received(10, 8, [11, 19]).sack == b"\x80\x80"
    assert Ack(10, 8, b"\x40").received() == [12]


@given(u64)
def test_sync_offsets_are_u64(offset):
    assert decode_sync(encode_body(Sync(offset, offset, offset, offset))).discarded == offset


def test_encoders_accept_handshake_and_notice_helpers():
    handshake = Handshake("0.0.0.0", 0, 0, 0, 0, 0, 0, 1000)
    assert decode_handshake(encode_handshake(handshake)) == handshake
    assert decode_notice(encode_notice(Notice())) == Notice(Reason.NORMAL, "")

"""Hypothesis strategies for Q3P frames and control bodies (``qbb.q3p.packet``).

* :func:`frames`: any valid :class:`Q3PFrame` (payload bytes not interpreted).
* :func:`well_formed_frames`: frames whose payload matches the command: a control body,
  a QKDNL-like IPv4 packet (DATA, E clear) or ciphertext (E set).
* :func:`acks`, :func:`handshakes`, :func:`syncs`, :func:`notices`, :func:`bodies`.
* :func:`frame_bytes` and :func:`mutated` (bit flips, truncation, extension) for
  robustness tests of every decoder.
"""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from qbb.codec import internet_checksum
from qbb.q3p.packet import (
    BODY_TYPES,
    KEY_RATIO_MAX,
    Q3P_TAG_LEN,
    Ack,
    Command,
    Handshake,
    Notice,
    Q3PFrame,
    Reason,
    Sync,
    encode_body,
    encode_frame,
)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
tags = st.binary(min_size=Q3P_TAG_LEN, max_size=Q3P_TAG_LEN)


@st.composite
def frames(draw: st.DrawFn, command: st.SearchStrategy | None = None,
           payload: st.SearchStrategy | None = None) -> Q3PFrame:
    """A valid frame; ``command`` / ``payload`` strategies override the defaults."""
    encrypted = draw(st.booleans())
    tag = draw(st.none() | tags)
    return Q3PFrame(
        message_number=draw(u32),
        command=draw(command if command is not None else st.sampled_from(Command)),
        payload=draw(payload if payload is not None else st.binary(max_size=96)),
        tag=tag,
        encrypted=encrypted,
        more_fragments=draw(st.booleans()),
        priority=draw(st.integers(0, 7)),
        channel=draw(st.integers(0, 255)),
        e_offset=draw(u64) if encrypted else 0,
        a_offset=draw(u64) if tag is not None else 0,
    )


def acks() -> st.SearchStrategy[Ack]:
    return st.builds(Ack, u32, u32, st.binary(max_size=24))


def handshakes() -> st.SearchStrategy[Handshake]:
    return st.builds(Handshake, ipv4, u32, u64, u16, u32, u64, u64, st.integers(0, KEY_RATIO_MAX))


def syncs() -> st.SearchStrategy[Sync]:
    return st.builds(Sync, u64, u64, u64, u64)


def notices() -> st.SearchStrategy[Notice]:
    reasons = st.sampled_from(Reason) | u16
    return st.builds(Notice, reasons, st.text(max_size=20))


_BODY_STRATEGIES = {Ack: acks, Handshake: handshakes, Sync: syncs, Notice: notices}


def bodies() -> st.SearchStrategy:
    return st.one_of(*(make() for make in _BODY_STRATEGIES.values()))


@st.composite
def qkdnl_packets(draw: st.DrawFn) -> bytes:
    """A 20-byte IPv4-layout header (valid checksum) followed by opaque data."""
    data = draw(st.binary(max_size=40))
    address = st.binary(min_size=4, max_size=4)
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(data), draw(u16), 0,
                         draw(st.integers(1, 255)), draw(st.sampled_from([253, 254])), 0,
                         draw(address), draw(address))
    checksum = internet_checksum(header)
    return header[:10] + checksum.to_bytes(2, "big") + header[12:] + data


@st.composite
def well_formed_frames(draw: st.DrawFn) -> Q3PFrame:
    """A frame whose payload is what its command and E flag say it is."""
    frame = draw(frames(payload=st.just(b"")))
    if frame.encrypted:
        payload = draw(st.binary(min_size=1, max_size=96))
    elif frame.command == Command.DATA:
        payload = draw(qkdnl_packets())
    else:
        payload = encode_body(draw(_BODY_STRATEGIES[BODY_TYPES[frame.command]]()))
    return Q3PFrame(frame.message_number, frame.command, payload, frame.tag, frame.encrypted,
                    frame.more_fragments, frame.priority, frame.channel, frame.e_offset,
                    frame.a_offset)


def frame_bytes() -> st.SearchStrategy[bytes]:
    return frames().map(encode_frame)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with bit flips, a truncation or an extension."""
    data = bytearray(draw(valid))
    kind = draw(st.sampled_from(["flip", "truncate", "extend"]))
    if kind == "flip" and data:
        for _ in range(draw(st.integers(1, 3))):
            bit = draw(st.integers(0, len(data) * 8 - 1))
            data[bit // 8] ^= 0x80 >> (bit % 8)
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data))):]
    else:
        data += draw(st.binary(min_size=1, max_size=20))
    return bytes(data)

"""Hypothesis strategies for QKDTL segments (protocol 253) and Q-RoKR signalling (254).

Every strategy yields valid objects of ``qbb.transport.packet`` /
``qbb.routing.rokr_packet``; :func:`mutations` turns a strategy of valid encodings
into bit-flipped, truncated, extended or overwritten variants for robustness tests.
"""

from __future__ import annotations

import socket

from hypothesis import strategies as st

from qbb.routing.rokr_packet import Cancel, CancelReason, Feedback, FeedbackStatus, Reserve
from qbb.transport.packet import (
    ConnectRequest,
    KeyDelivery,
    Segment,
    SegmentFlags,
    ServiceClass,
    encode_connect_request,
    encode_key_delivery,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 0xFFFF_FFFF_FFFF_FFFF)

# --- QKDTL ----------------------------------------------------------------------


@st.composite
def segment_flags(draw, key: bool | None = None, syn: bool | None = None) -> SegmentFlags:
    """A valid flag set; ``key`` / ``syn`` force KEY / SYN on or off (never both on)."""
    chosen = draw(st.sets(st.sampled_from(list(SegmentFlags))))
    flags = SegmentFlags(sum(chosen))
    if key is not None:
        flags = flags | SegmentFlags.KEY if key else flags & ~SegmentFlags.KEY
    if syn is not None:
        flags = flags | SegmentFlags.SYN if syn else flags & ~SegmentFlags.SYN
    if flags & SegmentFlags.KEY and flags & SegmentFlags.SYN:
        flags &= ~(SegmentFlags.SYN if syn is None else SegmentFlags.KEY)
    return flags


@st.composite
def key_deliveries(draw) -> KeyDelivery:
    bits = draw(st.one_of(st.integers(1, 1024), st.integers(1, 0xFFFF)))
    key = bytearray(draw(st.binary(min_size=(bits + 7) // 8, max_size=(bits + 7) // 8)))
    key[-1] &= 0xFF ^ ((1 << (-bits % 8)) - 1)  # unused low bits zero
    return KeyDelivery(draw(u32), bits, bytes(key))


def key_batches(max_keys: int = 8) -> st.SearchStrategy[tuple[KeyDelivery, ...]]:
    """One or more KeyDelivery bodies that fit one KEY payload together."""
    small = st.builds(lambda bits, key_id, data: KeyDelivery(
        key_id, bits, _zero_padding(data[:(bits + 7) // 8].ljust((bits + 7) // 8, b"\0"), bits)),
        st.integers(1, 2048), u32, st.binary(max_size=256))
    return st.lists(st.one_of(small, key_deliveries()), min_size=1, max_size=max_keys).filter(
        lambda keys: sum(6 + len(k.key) for k in keys) <= 0xFFFF).map(tuple)


def _zero_padding(key: bytes, bits: int) -> bytes:
    raw = bytearray(key)
    raw[-1] &= 0xFF ^ ((1 << (-bits % 8)) - 1)
    return bytes(raw)


def connect_requests() -> st.SearchStrategy[ConnectRequest]:
    return st.builds(ConnectRequest, st.sampled_from(list(ServiceClass)), u32, u32,
                     st.text(min_size=1, max_size=40))


def _payload_for(draw, flags: SegmentFlags) -> bytes:
    if flags & SegmentFlags.KEY:
        return encode_key_delivery(draw(key_deliveries()))
    if flags & SegmentFlags.SYN:
        return draw(st.one_of(st.just(b""), connect_requests().map(encode_connect_request)))
    return draw(st.binary(max_size=64))


@st.composite
def segments(draw, flags: st.SearchStrategy[SegmentFlags] | None = None) -> Segment:
    """Segments whose payload matches their flags (KEY body, SYN body or opaque)."""
    chosen = draw(flags if flags is not None else segment_flags())
    return Segment(draw(u16), draw(u16), draw(u32), draw(u32), chosen, draw(u16),
                   _payload_for(draw, chosen))


# --- Q-RoKR ---------------------------------------------------------------------

ipv4 = u32.map(lambda value: socket.inet_ntoa(value.to_bytes(4, "big")))
links = st.tuples(ipv4, ipv4)


@st.composite
def reserves(draw, max_hops: int = 12) -> Reserve:
    path = tuple(draw(st.lists(ipv4, min_size=2, max_size=max_hops + 1, unique=True)))
    hop = draw(st.integers(1, len(path) - 1))
    return Reserve(draw(u32), path[0], path[-1], draw(u64), draw(u64),
                   (path[hop - 1], path[hop]), path)


def feedbacks() -> st.SearchStrategy[Feedback]:
    return st.builds(Feedback, u32, links, st.sampled_from(list(FeedbackStatus)), u64)


def cancels() -> st.SearchStrategy[Cancel]:
    return st.builds(Cancel, u32, links, st.sampled_from(list(CancelReason)))


def rokr_messages() -> st.SearchStrategy[Reserve | Feedback | Cancel]:
    return st.one_of(reserves(), feedbacks(), cancels())


# --- robustness -----------------------------------------------------------------


@st.composite
def mutations(draw, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with one bit flipped, cut short, extended or overwritten."""
    data = bytearray(draw(valid))
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "overwrite"]))
    if kind == "flip" and data:
        bit = draw(st.integers(0, 8 * len(data) - 1))
        data[bit // 8] ^= 0x80 >> (bit % 8)
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data))):]
    elif kind == "extend":
        data += draw(st.binary(min_size=1, max_size=16))
    elif data:
        start = draw(st.integers(0, len(data) - 1))
        patch = draw(st.binary(min_size=1, max_size=4))
        data[start:start + len(patch)] = patch
    return bytes(data)

"""A :mod:`struct` fast path for whole QKDTL segments (the codec is qbb/transport/packet.py).

Building or parsing a segment with the construct codec costs about 0.1-0.2 ms, which is
more than a connection spends on it (``docs/transport.md``).  These two functions give
the same results in a few microseconds for every well-formed input and defer to the
codec for everything else, so errors are exactly the codec's:

* :func:`encode_segment_fast` == :func:`~qbb.transport.packet.encode_segment` (it raises
  the codec's :class:`~qbb.errors.EncodeError` for anything the plain path cannot pack);
* :func:`decode_segment_fast` == :func:`~qbb.transport.packet.decode_segment` (a buffer
  that is not plainly a valid segment goes to the codec, which names the problem).

Decoding is canonical, so equality of bytes and of segments is the whole contract;
tests/test_transport_connection.py checks it on valid and on mutated segments.
"""

from __future__ import annotations

import struct

from qbb.codec import frozen_new, internet_checksum
from qbb.transport.packet import (RESERVED_FLAGS, Segment, SegmentFlags, decode_segment,
                                  encode_segment)

__all__ = ["decode_segment_fast", "encode_segment_fast"]

_HEADER = struct.Struct("!HHIIHHHH")
_FIELDS = ("src_port", "dst_port", "seq", "ack", "flags", "window", "payload")
_KEY_SYN = int(SegmentFlags.KEY | SegmentFlags.SYN)
_FLAGS = {}  # int -> SegmentFlags, filled on first use


def _flags(value: int) -> SegmentFlags:
    flags = _FLAGS.get(value)
    if flags is None:
        flags = _FLAGS[value] = SegmentFlags(value)
    return flags


def encode_segment_fast(segment: Segment) -> bytes:
    """Segment -> bytes, as :func:`~qbb.transport.packet.encode_segment` builds them."""
    try:
        flags, payload = int(segment.flags), segment.payload
        if flags & RESERVED_FLAGS or flags & _KEY_SYN == _KEY_SYN or type(payload) is not bytes:
            return encode_segment(segment)
        header = _HEADER.pack(segment.src_port, segment.dst_port, segment.seq, segment.ack,
                              flags, segment.window, len(payload), 0)
    except (struct.error, TypeError, ValueError):
        return encode_segment(segment)  # raises the codec's EncodeError
    checksum = internet_checksum(header + payload)
    return header[:18] + checksum.to_bytes(2, "big") + payload


def decode_segment_fast(data: bytes) -> Segment:
    """Bytes -> Segment, as :func:`~qbb.transport.packet.decode_segment` reads them."""
    if type(data) is not bytes or len(data) < 20:
        return decode_segment(data)
    src, dst, seq, ack, flags, window, length, stored = _HEADER.unpack_from(data)
    if length != len(data) - 20 or flags & RESERVED_FLAGS or flags & _KEY_SYN == _KEY_SYN \
            or internet_checksum(data[:18] + b"\0\0" + data[20:]) != stored:
        return decode_segment(data)
    return frozen_new(Segment, _FIELDS, (src, dst, seq, ack, _flags(flags), window, data[20:]))

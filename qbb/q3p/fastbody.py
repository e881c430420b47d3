"""A ``struct`` fast path for the Q3P ACK body (seed 002 §3.1; ``docs/wire/q3p.md``).

Every few DATA frames are answered by an ACK (``LinkConfig.ack_every``), so the ACK body
is on the hot path of both ends: the construct codec of :mod:`qbb.q3p.packet` spends
about 12 us building and 18 us parsing one, against 0.4 and 1.4 us here -- more than
the one-time MAC of the ACK frame itself (``docs/benchmarks-relay.md``).  The layout is
fixed::

    cumulative u32 | window u32 | sack length u16 | sack bytes

:func:`encode_control` and :func:`decode_control` are drop-in replacements for
:func:`~qbb.q3p.packet.encode_body` / :func:`~qbb.q3p.packet.decode_body`: an ACK that is
plainly well formed is packed or unpacked with :mod:`struct`; every other body, and any
ACK the fast path is not sure of, goes to the construct codec, which builds the same bytes
or raises the same :class:`~qbb.errors.DecodeError` / :class:`~qbb.errors.EncodeError`
(tests/test_q3p_fastbody.py checks both directions against it).
"""

from __future__ import annotations

import struct
from typing import Any

from qbb.codec import frozen_new
from qbb.q3p.packet import Ack, Command, decode_body, encode_body

_ACK_HEAD = struct.Struct("!IIH")
_ACK_FIELDS = ("cumulative", "window", "sack")
_U32 = 0xFFFFFFFF


def encode_control(body: Any) -> bytes:
    """:func:`~qbb.q3p.packet.encode_body`, with an ACK packed by :mod:`struct`."""
    if type(body) is Ack:  # noqa: E721 - exactly the dataclass, not a look-alike
        cumulative, window, sack = body.cumulative, body.window, body.sack
        if (type(cumulative) is int and type(window) is int  # noqa: E721
                and type(sack) is bytes and 0 <= cumulative <= _U32  # noqa: E721
                and 0 <= window <= _U32 and len(sack) <= 0xFFFF):
            return _ACK_HEAD.pack(cumulative, window, len(sack)) + sack
    return encode_body(body)


def decode_control(command: int, payload: bytes) -> Any:
    """:func:`~qbb.q3p.packet.decode_body`, with a well-formed ACK unpacked by :mod:`struct`."""
    if command == Command.ACK and type(payload) is bytes and len(payload) >= 10:  # noqa: E721
        cumulative, window, size = _ACK_HEAD.unpack_from(payload)
        if len(payload) == 10 + size:
            return frozen_new(Ack, _ACK_FIELDS, (cumulative, window, payload[10:]))
    return decode_body(command, payload)


__all__ = ["decode_control", "encode_control"]

"""The receiving half of a QKDTL connection: reassembly, key release, window, ECN echo.

Part of :class:`qbb.transport.connection.Connection` (SECOQC seed 002 §3.3).

* **Reassembly**: a segment is accepted when it starts at or after ``nxt`` and ends
  within the free room of the key buffer; one starting at ``nxt`` is processed at once,
  one beyond is held (by sequence number) until the gap closes.  A segment behind
  ``nxt`` is a duplicate: it is answered with an ACK and never processed again, so no key
  is released twice.  Every out-of-order or duplicate arrival owes one ACK of its own
  (the duplicate ACKs that drive the sender's fast retransmit); in-order arrivals owe one
  cumulative ACK per drain.  A duplicate KEY segment (behind ``nxt``, or a copy of one
  held) is also noted in ``dsack``: the ACK it owes reports its range (a D-SACK block,
  RFC 2883), which tells the sender its retransmission was not needed
  (:mod:`qbb.transport.recovery`).
* **Key buffer** (:class:`KeyBuffer`): keys released to the application in order and not
  yet taken.  The responder releases a key when it arrives in order; the initiator when
  the responder has acknowledged it (synchronised consumption, §3.3).  The buffer checks
  that ids run 0, 1, 2, ... without gap or repeat.
* **Window**: the free room of the buffer, ``(buffer_bits - buffered bits) / 8`` bytes,
  advertised in KiB (rounded down, so the sender never overruns it).  Keys take more
  stream bytes than key bytes (6-byte body header), so a window of ``w`` bytes brings
  less than ``w`` bytes of key.  Taking keys re-opens the window; an explicit window
  update is owed once the right edge moved by ``min(mss, buffer / 2)`` (receiver-side
  silly-window avoidance, RFC 1122 §4.2.3.3).
* **ECN** (RFC 3168 §6.1.3): a KEY segment that arrived with a CE mark sets ``ece_echo``;
  every ACK carries ECE until a segment with CWR arrives.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Sequence

from qbb.codec import frozen_new
from qbb.transport.conn_config import ConnectionConfig
from qbb.transport.packet import (WINDOW_UNIT, KeyDelivery, Segment, SegmentFlags,
                                  decode_key_deliveries)
from qbb.transport.rtt import seq_add, seq_diff

__all__ = ["KeyBuffer", "ReceiveHalf", "unpack_keys", "unpack_raw_keys"]

_BODY = struct.Struct(">IH")
_KEY_FIELDS = ("key_id", "key_bits", "key")
RawKey = tuple[int, int, bytes]  # (key_id, key_bits, key), as in conn_send


def unpack_raw_keys(payload: bytes) -> list[RawKey] | None:
    """The keys of a well-formed KEY payload as tuples; None if it is not well formed."""
    keys, offset, n = [], 0, len(payload)
    unpack = _BODY.unpack_from
    while offset < n:
        if n - offset < 6:
            return None
        key_id, bits = unpack(payload, offset)
        end = offset + 6 + (bits + 7) // 8
        if not bits or end > n or payload[end - 1] & ((1 << (-bits % 8)) - 1):
            return None
        keys.append((key_id, bits, payload[offset + 6:end]))
        offset = end
    return keys or None


def unpack_keys(payload: bytes) -> tuple[KeyDelivery, ...]:
    """The keys of a KEY payload (== ``decode_key_deliveries``); DecodeError if malformed."""
    keys = unpack_raw_keys(payload)
    if keys is None:
        return decode_key_deliveries(payload)  # raises DecodeError naming the problem
    return tuple(frozen_new(KeyDelivery, _KEY_FIELDS, key) for key in keys)


class KeyBuffer:
    """Released keys not yet taken by the application, in id order (as raw tuples)."""

    def __init__(self) -> None:
        self.keys: deque[RawKey] = deque()
        self.bits = 0
        self.next_id = 0  # id of the next key to release
        self.released = 0
        self.taken = 0

    def __len__(self) -> int:
        return len(self.keys)

    def release(self, keys: Sequence[RawKey]) -> bool:
        """Append ``keys``; False (and nothing appended) unless their ids continue the stream."""
        first = self.next_id
        if keys[0][0] != first or keys[-1][0] != first + len(keys) - 1 or any(
                key[0] != first + i for i, key in enumerate(keys)):
            return False
        self.keys.extend(keys)
        self.bits += sum(key[1] for key in keys)
        self.next_id += len(keys)
        self.released += len(keys)
        return True

    def take(self, n: int) -> list[KeyDelivery]:
        """Up to ``n`` keys, oldest first."""
        pop = self.keys.popleft
        out = [frozen_new(KeyDelivery, _KEY_FIELDS, pop()) for _ in range(min(n, len(self.keys)))]
        self.bits -= sum(key.key_bits for key in out)
        self.taken += len(out)
        return out

    def peek(self) -> list[KeyDelivery]:
        """The keys held, without taking them (for tests and inspection)."""
        return [KeyDelivery(*key) for key in self.keys]


class ReceiveHalf:
    """``nxt`` (next byte expected), held out-of-order segments and the owed ACKs."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self.irs: int | None = None
        self.nxt = 0
        self.held: dict[int, Segment] = {}
        self.keys = KeyBuffer()
        self.ece_echo = False
        self.acks_owed = 0
        self.dsack: list[tuple[int, int]] = []  # duplicate ranges to report, oldest first
        self.last_edge: int | None = None
        self.stats = {"duplicates": 0, "out_of_order": 0, "outside_window": 0}

    def start(self, irs: int) -> None:
        """The peer's SYN (sequence number ``irs``) arrived."""
        self.irs, self.nxt = irs, seq_add(irs, 1)

    @property
    def synchronized(self) -> bool:
        return self.irs is not None

    def free_bytes(self) -> int:
        return max(0, self.config.buffer_bits - self.keys.bits) // 8

    def window_field(self) -> int:
        """The window to advertise, in units of WINDOW_UNIT bytes."""
        return min(0xFFFF, self.free_bytes() // WINDOW_UNIT)

    def advertised(self) -> int:
        """Note the right edge being advertised now; the window field to send."""
        window = self.window_field()
        self.last_edge = seq_add(self.nxt, window * WINDOW_UNIT)
        return window

    def window_update_due(self) -> bool:
        """Has the right edge moved far enough since the last advertisement?"""
        if self.last_edge is None:
            return False
        edge = seq_add(self.nxt, self.window_field() * WINDOW_UNIT)
        step = min(self.config.mss, self.config.buffer_bits // 16)
        return seq_diff(edge, self.last_edge) >= max(step, 1)

    def classify(self, segment: Segment, length: int) -> str:
        """``in_order``, ``held`` (ahead, kept), ``duplicate`` or ``outside`` (beyond room)."""
        ahead = seq_diff(segment.seq, self.nxt)
        if ahead < 0 or (ahead > 0 and segment.seq in self.held):
            self.stats["duplicates"] += 1
            if segment.payload and segment.flags & SegmentFlags.KEY:
                self.dsack.append((segment.seq, seq_add(segment.seq, len(segment.payload))))
            return "duplicate"
        if ahead + len(segment.payload) > self.free_bytes() or ahead + length > (1 << 30):
            self.stats["outside_window"] += 1
            return "outside"
        if ahead > 0:
            self.held[segment.seq] = segment
            self.stats["out_of_order"] += 1
            return "held"
        return "in_order"

    def pop_held(self) -> Segment | None:
        """The held segment that starts at ``nxt``, if any."""
        return self.held.pop(self.nxt, None)

    def advance(self, length: int) -> None:
        self.nxt = seq_add(self.nxt, length)
        # anything held behind the new nxt is a duplicate of what was just processed
        for seq in [s for s in self.held if seq_diff(s, self.nxt) < 0]:
            del self.held[seq]

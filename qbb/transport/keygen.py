"""Key generation of a QKDTL initiator: fresh random keys into KEY segments, within bounds.

Part of the sending half of a connection (:class:`qbb.transport.conn_send.SendHalf`
inherits :class:`KeyGeneration`; SECOQC seed 002 §3.3: the initiator's node draws the
session keys that the connection delivers).  A KEY payload is one or more key-delivery
bodies back to back (``key_id u32 | key_bits u16 | key``, docs/wire/qkdtl.md), built here
with :mod:`struct` (:func:`pack_keys` gives the bytes ``encode_key_deliveries`` gives).

:meth:`KeyGeneration.generate` draws keys while the congestion window (or F-RTO's extra
room, :mod:`qbb.transport.recovery`), the peer's advertised window, the initiator's own
key buffer (released + in flight <= ``buffer_bits``) and the token bucket allow.  A
segment shorter than a full one is sent only when nothing is in flight or it fills half
the largest window the peer offered (sender-side silly-window avoidance, RFC 1122
§4.2.3.4).  When the peer's window is too small for one key and nothing is in flight the
persist timer is armed (RFC 1122 §4.2.2.17); when only the bucket holds keys back, its
timer is armed for when the tokens are there.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence

from qbb.transport.packet import KeyDelivery, SegmentFlags

__all__ = ["KeyGeneration", "MAX_KEY_ID", "RawKey", "draw_keys", "draw_raw_keys", "pack_keys"]

_BODY = struct.Struct(">IH")
MAX_KEY_ID = 1 << 32
KEY = SegmentFlags.KEY
#: A key inside the connection: ``(key_id, key_bits, key bytes)``; a :class:`KeyDelivery`
#: is made only when the application takes it (a tuple costs a tenth of a dataclass).
RawKey = tuple[int, int, bytes]


def pack_keys(keys: Sequence[RawKey] | Sequence[KeyDelivery]) -> bytes:
    """The KEY payload of ``keys`` (what ``encode_key_deliveries`` builds, without construct)."""
    pack = _BODY.pack
    if keys and isinstance(keys[0], KeyDelivery):
        keys = [(k.key_id, k.key_bits, k.key) for k in keys]
    return b"".join([part for key_id, bits, key in keys for part in (pack(key_id, bits), key)])


def draw_raw_keys(first_id: int, count: int, bits: int,
                  randbytes: Callable[[int], bytes]) -> list[RawKey]:
    """``count`` fresh random keys of ``bits`` bits, ids from ``first_id``; padding bits 0."""
    size, pad = (bits + 7) // 8, -bits % 8
    raw = randbytes(size * count)
    keys = []
    for i in range(count):
        key = raw[i * size:(i + 1) * size]
        if pad:
            key = key[:-1] + bytes([key[-1] & (0xFF << pad) & 0xFF])
        keys.append((first_id + i, bits, key))
    return keys


def draw_keys(first_id: int, count: int, bits: int,
              randbytes: Callable[[int], bytes]) -> list[KeyDelivery]:
    """:func:`draw_raw_keys` as :class:`KeyDelivery` objects."""
    return [KeyDelivery(*key) for key in draw_raw_keys(first_id, count, bits, randbytes)]


class KeyGeneration:
    """Generation methods of :class:`~qbb.transport.conn_send.SendHalf` (a mixin: it uses
    the half's config, windows, queue, bucket, timers and stats)."""

    def generate(self, now: float, buffered_bits: int,
                 randbytes: Callable[[int], bytes]) -> int:
        """Push as many KEY segments as every bound allows; how many keys it drew."""
        drawn = 0
        self.bucket_due = None
        while True:
            count = self._segment_size(now, buffered_bits)
            if count <= 0:
                return drawn
            keys = tuple(draw_raw_keys(self.next_key_id, count, self.config.key_bits,
                                       randbytes))
            payload = pack_keys(keys)
            self.push(KEY, payload, len(payload), keys)
            self.next_key_id += count
            if self.bucket is not None:
                self.bucket.consume(count * self.config.key_bits, now)
            drawn += count
            self.stats["keys_generated"] += count

    def _segment_size(self, now: float, buffered_bits: int) -> int:
        """Keys for the next KEY segment now (0: wait), after every bound."""
        cfg, bits = self.config, self.config.key_bits
        full = cfg.segment_keys
        if self.bucket is not None and not self.bucket.unlimited:
            full = max(1, min(full, int(self.bucket.burst // bits)))
        if self.key_segments >= self.recovery.window(self.cc.window):
            return 0
        by_window = max(0, self.peer_window - self.bytes_in_flight) // cfg.wire_per_key
        by_buffer = (cfg.buffer_bits - buffered_bits - self.key_bits_in_flight) // bits
        others = min(full, by_window, by_buffer, MAX_KEY_ID - self.next_key_id)
        if by_window == 0 and not self.queue and by_buffer > 0:
            self._arm_persist(now)
        by_bucket = self._bucket_keys(now)
        count = min(others, by_bucket)
        if count < full and self.key_segments and count * cfg.wire_per_key * 2 < \
                self.max_peer_window:
            if by_bucket < others:
                self._arm_bucket(others, now)
            return 0
        if count <= 0 < others:
            self._arm_bucket(1, now)
        return count

    def _bucket_keys(self, now: float) -> int | float:
        if self.bucket is None or self.bucket.unlimited:
            return math.inf
        return int(self.bucket.available(now) // self.config.key_bits)

    def _arm_bucket(self, keys: int, now: float) -> None:
        wait = self.bucket.time_until(keys * self.config.key_bits, now)
        if wait < math.inf:
            self.bucket_due = now + max(wait, 1e-6)

    def _arm_persist(self, now: float) -> None:
        if self.persist_due is None:
            delay = self.rtt.rto * (1 << min(self.persist_backoff, 30))
            self.persist_due = now + min(delay, self.config.rto_max)

    def probe_sent(self, now: float) -> None:
        """A window probe went out: back off the persist timer."""
        self.stats["window_probes"] += 1
        self.persist_backoff += 1
        self.persist_due = None
        self._arm_persist(now)

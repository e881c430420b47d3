"""The sending half of a QKDTL connection: key generation, retransmission, congestion window.

Part of :class:`qbb.transport.connection.Connection` (SECOQC seed 002 §3.3: reliable
delivery through acknowledgement and retransmission, congestion control).  Everything that
occupies sequence space -- SYN, each KEY segment, FIN -- is an :class:`Outstanding` entry
in a queue ordered by sequence number, kept until a cumulative ACK covers it.

* **Generation** (initiator only): :meth:`SendHalf.generate` draws fresh keys
  (``randbytes``) into KEY segments of at most ``config.segment_keys`` keys while the
  congestion window, the peer's advertised window, the initiator's own key buffer
  (released + in flight <= ``buffer_bits``) and the token bucket allow.  A segment shorter
  than a full one is sent only when nothing is in flight or it fills half the largest
  window the peer offered (sender-side silly-window avoidance, RFC 1122 §4.2.3.4).
* **Acknowledgement**: an ACK in ``(una, nxt]`` removes every entry it covers; the RTT is
  sampled from the newest covered entry if it was sent once and not before the latest
  retransmission (Karn's rule: a cumulative ACK that follows a retransmission may have
  waited for the hole, whatever segment it is timed on), and the back-off ends.
* **Retransmission**: one timer for the oldest entry (RFC 6298 §5); on expiry the oldest
  entry is sent again as it was, the timer backs off and ``cwnd`` drops to one.  Three
  duplicate ACKs retransmit the oldest entry at once (RFC 5681 §3.2 fast retransmit) and
  halve ``cwnd``.  Until everything sent before the loss is acknowledged (``recover``,
  RFC 6582), each partial ACK retransmits the next oldest entry: one hole per round trip,
  without go-back-N.
* **Persist**: when the peer's window is too small for one key and nothing is in flight, a
  probe (an ACK with ``seq = nxt - 1``, which the peer must answer) is sent after RTO,
  backing off to ``rto_max`` (RFC 1122 §4.2.2.17), so a lost window update cannot stall
  the stream.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from qbb.transport.bucket import TokenBucket
from qbb.transport.congestion import CongestionControl
from qbb.transport.conn_config import ConnectionConfig
from qbb.transport.packet import WINDOW_UNIT, KeyDelivery, SegmentFlags
from qbb.transport.rtt import RttEstimator, seq_add, seq_diff

__all__ = ["Outstanding", "RawKey", "SendHalf", "draw_keys", "pack_keys"]

_BODY = struct.Struct(">IH")
MAX_KEY_ID = 1 << 32
KEY, SYN, FIN = SegmentFlags.KEY, SegmentFlags.SYN, SegmentFlags.FIN
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


@dataclass(eq=False)
class Outstanding:
    """One segment that occupies sequence space, kept until acknowledged."""

    seq: int
    flags: SegmentFlags  # SYN, KEY or FIN (ACK and the rest are added when sent)
    length: int  # sequence numbers it takes: payload bytes, or 1 for SYN / FIN
    payload: bytes = field(repr=False)
    keys: tuple[RawKey, ...] = field(default=(), repr=False)
    key_bits: int = 0
    sent_at: float | None = None
    transmissions: int = 0

    @property
    def end(self) -> int:
        return seq_add(self.seq, self.length)


class SendHalf:
    """Sequence space ``[una, nxt)`` in flight, with its timers and windows."""

    def __init__(self, iss: int, config: ConnectionConfig) -> None:
        self.config = config
        self.una = self.nxt = iss
        self.queue: deque[Outstanding] = deque()
        self.tx: list[Outstanding] = []  # entries to (re)transmit at the next drain
        self.key_segments = 0
        self.key_bits_in_flight = 0
        self.rtt = RttEstimator(config.rto_initial, config.rto_min, config.rto_max)
        self.cc = CongestionControl(config.initial_cwnd)
        self.bucket: TokenBucket | None = None
        self.peer_window = 0  # bytes beyond una the peer accepts
        self.max_peer_window = 0
        self.last_window_field: int | None = None
        self.dupacks = 0
        self.recover: int | None = None  # nxt when loss recovery began
        self.reduced_at: int | None = None  # nxt when cwnd was last reduced
        self.cwr_pending = False  # set CWR on the next new KEY segment (RFC 3168 §6.1.2)
        self.retries = 0
        self.timing_from = -math.inf  # RTT samples only from segments sent since then
        self.rtx_due: float | None = None
        self.persist_due: float | None = None
        self.persist_backoff = 0
        self.bucket_due: float | None = None
        self.next_key_id = 0
        self.stats = {"keys_generated": 0, "keys_sent": 0, "keys_acked": 0, "transmissions": 0,
                      "retransmits": 0, "fast_retransmits": 0, "rto_expirations": 0,
                      "dup_acks": 0, "window_probes": 0}

    # --- queue ---------------------------------------------------------------------

    def push(self, flags: SegmentFlags, payload: bytes, length: int,
             keys: tuple[RawKey, ...] = ()) -> Outstanding:
        entry = Outstanding(self.nxt, flags, length, payload, keys,
                            sum(key[1] for key in keys))
        self.queue.append(entry)
        self.tx.append(entry)
        self.nxt = seq_add(self.nxt, length)
        if flags & KEY:
            self.key_segments += 1
            self.key_bits_in_flight += entry.key_bits
        return entry

    def drain(self, now: float) -> list[Outstanding]:
        """Entries to put on the wire now, stamped as sent; starts the timer if idle."""
        out, self.tx = self.tx, []
        for entry in out:
            if entry.transmissions == 0 and entry.flags & KEY:
                self.stats["keys_sent"] += len(entry.keys)
            elif entry.transmissions:
                self.timing_from = now  # Karn: what was sent before is acked ambiguously
            entry.sent_at, entry.transmissions = now, entry.transmissions + 1
        self.stats["transmissions"] += len(out)
        if out and self.rtx_due is None:
            self.rtx_due = now + self.rtt.rto
        return out

    def oldest(self) -> Outstanding | None:
        return self.queue[0] if self.queue else None

    @property
    def bytes_in_flight(self) -> int:
        return seq_diff(self.nxt, self.una)

    def retransmit_oldest(self) -> Outstanding | None:
        entry = self.oldest()
        if entry is not None and entry not in self.tx:
            self.tx.append(entry)
            self.stats["retransmits"] += 1
        return entry

    # --- acknowledgements ----------------------------------------------------------

    def ack_valid(self, ack: int) -> bool:
        """False for an ACK of sequence numbers never sent."""
        return seq_diff(ack, self.nxt) <= 0

    def update_window(self, window_field: int) -> None:
        self.peer_window = window_field * WINDOW_UNIT
        self.max_peer_window = max(self.max_peer_window, self.peer_window)
        if self.peer_window >= self.config.wire_per_key:
            self.persist_due, self.persist_backoff = None, 0

    def on_new_ack(self, ack: int, now: float) -> list[Outstanding]:
        """``ack`` lies in ``(una, nxt]``: drop what it covers, sample RTT, grow cwnd."""
        full_window = self.key_segments >= self.cc.window
        acked: list[Outstanding] = []
        while self.queue and seq_diff(ack, self.queue[0].end) >= 0:
            acked.append(self.queue.popleft())
        self.una = ack
        self.retries, self.dupacks = 0, 0
        self.rtt.reset_backoff()
        newest = acked[-1] if acked else None
        if newest is not None and newest.transmissions == 1 and newest.sent_at is not None \
                and newest.sent_at >= self.timing_from:
            self.rtt.sample(now - newest.sent_at)
        keys = [entry for entry in acked if entry.flags & KEY]
        self.key_segments -= len(keys)
        self.key_bits_in_flight -= sum(entry.key_bits for entry in keys)
        self.stats["keys_acked"] += sum(len(entry.keys) for entry in keys)
        self._after_new_ack(ack, len(keys), full_window, now)
        return acked

    def _after_new_ack(self, ack: int, acked_segments: int, full_window: bool,
                       now: float) -> None:
        if self.recover is not None and seq_diff(ack, self.recover) < 0:
            self.retransmit_oldest()  # partial ACK: the next hole (RFC 6582 §3.2)
        else:
            self.recover = None
            self.cc.on_ack(acked_segments, full_window)
        self.rtx_due = now + self.rtt.rto if self.queue else None

    def on_duplicate_ack(self, now: float) -> None:
        """An ACK that repeats ``una`` with no data and the same window (RFC 5681 §2)."""
        if not self.key_segments:
            return
        self.dupacks += 1
        self.stats["dup_acks"] += 1
        if self.dupacks == self.config.dupack_threshold and self.recover is None:
            self.recover = self.nxt
            self.cc.on_fast_retransmit(self.key_segments, now)
            self._reduced()
            self.stats["fast_retransmits"] += 1
            self.retransmit_oldest()
            self.rtx_due = now + self.rtt.rto

    def on_rto(self, now: float) -> bool:
        """The retransmission timer expired; False when the retry limit is exceeded."""
        entry = self.oldest()
        if entry is None:
            self.rtx_due = None
            return True
        self.retries += 1
        self.stats["rto_expirations"] += 1
        limit = self.config.syn_retries if entry.flags & SYN else self.config.data_retries
        if self.retries > limit:
            return False
        self.rtt.backoff()
        if self.key_segments:
            self.cc.on_rto(self.key_segments, now)
            self._reduced()
        self.recover, self.dupacks = self.nxt, 0
        self.retransmit_oldest()
        self.rtx_due = now + self.rtt.rto
        return True

    def _reduced(self) -> None:
        self.reduced_at, self.cwr_pending = self.nxt, True

    def on_signal(self, kind: str, now: float, ack: int | None = None) -> bool:
        """ECE or source quench: halve at most once per window of data (RFC 3168 §6.1.2):
        an ECE on an ACK that does not go beyond what was in flight at the last reduction
        belongs to the same episode; and at most once per round trip."""
        if ack is not None and self.reduced_at is not None and \
                seq_diff(ack, self.reduced_at) <= 0:
            return False
        if self.cc.on_signal(kind, now, self.rtt.round_trip(self.config.rto_initial)):
            self._reduced()
            return True
        return False

    # --- generation (initiator) ----------------------------------------------------

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
        if self.key_segments >= self.cc.window:
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

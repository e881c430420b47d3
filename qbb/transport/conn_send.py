"""The sending half of a QKDTL connection: key generation, retransmission, congestion window.

Part of :class:`qbb.transport.connection.Connection` (SECOQC seed 002 §3.3: reliable
delivery through acknowledgement and retransmission, congestion control).  Everything that
occupies sequence space -- SYN, each KEY segment, FIN -- is an :class:`Outstanding` entry
in a queue ordered by sequence number, kept until a cumulative ACK covers it.

* **Generation** (initiator only, :mod:`qbb.transport.keygen`): ``generate`` draws fresh keys
  (``randbytes``) into KEY segments of at most ``config.segment_keys`` keys while the
  congestion window, the peer's advertised window, the initiator's own key buffer
  (released + in flight <= ``buffer_bits``) and the token bucket allow.  A segment shorter
  than a full one is sent only when nothing is in flight or it fills half the largest
  window the peer offered (sender-side silly-window avoidance, RFC 1122 §4.2.3.4).
* **Acknowledgement**: an ACK in ``(una, nxt]`` removes every entry it covers; the RTT is
  sampled from the newest covered entry unless the ACK covers an entry that was sent more
  than once (Karn's rule, extended: an ACK that a retransmission released may have waited
  for the hole, whatever segment it is timed on), and the back-off ends.
* **Retransmission**: one timer for the oldest entry (RFC 6298 §5); on expiry the oldest
  entry is sent again as it was, the timer backs off and ``cwnd`` drops to one.  Three
  duplicate ACKs (the threshold adapts, below) retransmit the oldest entry at once
  (RFC 5681 §3.2 fast retransmit) and halve ``cwnd``.  Until everything sent before the
  loss is acknowledged (``recover``, RFC 6582), partial ACKs lead to the next hole: at once
  after a timeout, and after a fast retransmit once the hole is overdue (``hole_due``).
* **Spurious retransmissions** (:mod:`qbb.transport.recovery`): each fast retransmit or
  timeout opens an episode; a retransmission whose segment is acknowledged sooner than half
  the minimum RTT after it, or reported as a duplicate by the receiver (D-SACK block in an
  ACK), was spurious, and so was a timeout after which F-RTO sees the originals being
  acknowledged.  One such finding ends the partial-ACK retransmissions; when all of the
  episode's retransmissions are spurious the window reduction is undone, and the
  duplicate-ACK threshold adapts to the reordering measured (an undone timeout raises the
  RTO instead).
* **Persist**: when the peer's window is too small for one key and nothing is in flight, a
  probe (an ACK with ``seq = nxt - 1``, which the peer must answer) is sent after RTO,
  backing off to ``rto_max`` (RFC 1122 §4.2.2.17), so a lost window update cannot stall
  the stream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from qbb.transport.bucket import TokenBucket
from qbb.transport.congestion import CongestionControl
from qbb.transport.conn_config import ConnectionConfig
from qbb.transport.keygen import KeyGeneration, RawKey, draw_keys, pack_keys
from qbb.transport.packet import WINDOW_UNIT, SegmentFlags
from qbb.transport.recovery import Recovery
from qbb.transport.rtt import RttEstimator, seq_add, seq_diff

__all__ = ["Outstanding", "RawKey", "SendHalf", "draw_keys", "pack_keys"]

KEY, SYN, FIN = SegmentFlags.KEY, SegmentFlags.SYN, SegmentFlags.FIN


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
    first_sent_at: float | None = None
    transmissions: int = 0

    @property
    def end(self) -> int:
        return seq_add(self.seq, self.length)


class SendHalf(KeyGeneration):
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
        self.recovery = Recovery(config.dupack_threshold)
        self.bucket: TokenBucket | None = None
        self.peer_window = 0  # bytes beyond una the peer accepts
        self.max_peer_window = 0
        self.last_window_field: int | None = None
        self.dupacks = 0
        self.recover: int | None = None  # nxt when loss recovery began
        self.reduced_at: int | None = None  # nxt when cwnd was last reduced
        self.cwr_pending = False  # set CWR on the next new KEY segment (RFC 3168 §6.1.2)
        self.retries = 0
        self.rtx_due: float | None = None
        self.hole_due: float | None = None  # the next hole counts as lost (recovery.py)
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
            if entry.transmissions == 0:
                entry.first_sent_at = now
                if entry.flags & KEY:
                    self.stats["keys_sent"] += len(entry.keys)
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

    def retransmit_oldest(self, now: float | None = None) -> Outstanding | None:
        """Queue the oldest entry again (``now``: part of a loss-recovery episode)."""
        entry = self.oldest()
        if entry is not None and entry not in self.tx:
            self.tx.append(entry)
            self.stats["retransmits"] += 1
            if now is not None and entry.flags & KEY:
                self.recovery.retransmitted(entry.seq, entry.sent_at, now)
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
        self._check_spurious(acked, now)
        self.retries, self.dupacks = 0, 0
        self.rtt.reset_backoff()
        newest = acked[-1] if acked else None
        if newest is not None and newest.sent_at is not None \
                and all(entry.transmissions == 1 for entry in acked):
            self.rtt.sample(now - newest.sent_at)
        keys = [entry for entry in acked if entry.flags & KEY]
        self.key_segments -= len(keys)
        self.key_bits_in_flight -= sum(entry.key_bits for entry in keys)
        self.stats["keys_acked"] += sum(len(entry.keys) for entry in keys)
        self._after_new_ack(ack, len(keys), full_window, now)
        return acked

    def _check_spurious(self, acked: list[Outstanding], now: float) -> None:
        """Retransmitted segments acknowledged too soon to be the retransmission's doing."""
        recovery = self.recovery
        if recovery.episode is None:
            return
        recovery.new_ack(self.dupacks)
        srtt = self.rtt.round_trip(self.config.rto_initial)
        for entry in acked:
            recovery.acked(entry.seq, entry.sent_at, entry.first_sent_at, now,
                           self.rtt.min_rtt, srtt)
        self._after_finding()

    def on_dsack(self, left: int) -> None:
        """The receiver got ``[left, ...)`` twice (a D-SACK block in an ACK)."""
        if self.recovery.dsack(left):
            self._after_finding()

    def _after_finding(self) -> None:
        recovery = self.recovery
        if recovery.undo_due():
            episode = recovery.undo()
            self.cc.undo(episode.prior_cwnd, episode.prior_ssthresh)
            if episode.kind == "rto" and episode.delay > 0:
                self.rtt.spike(episode.delay)
            self.recover, self.hole_due = None, None

    def _after_new_ack(self, ack: int, acked_segments: int, full_window: bool,
                       now: float) -> None:
        self.hole_due = None
        if self.recover is not None and seq_diff(ack, self.recover) < 0:
            if self.recovery.partial_ack(self.key_segments):
                self._next_hole(now)  # partial ACK: the next hole (RFC 6582 §3.2)
        else:
            self.recover = None
            self.recovery.leave_frto()
            self.cc.on_ack(acked_segments, full_window)
        self.rtx_due = now + self.rtt.rto if self.queue else None

    def _next_hole(self, now: float) -> None:
        """Resend the oldest segment now, or arm ``hole_due`` if it is not overdue yet."""
        entry = self.oldest()
        if entry is not None and entry.sent_at is not None:
            srtt = self.rtt.round_trip(self.config.rto_initial)
            self._resend_at(self.recovery.hole_due(entry.sent_at, now, srtt, self.rtt.min_rtt,
                                                   self.rtt.base), now)

    def _resend_at(self, due: float | None, now: float) -> None:
        if due is not None and due <= now:
            self.hole_due = None
            self.retransmit_oldest(now)
        elif due is not None:
            self.hole_due = due

    def on_hole_timer(self, now: float) -> None:
        """``hole_due`` passed: the hole is overdue, resend it."""
        self.hole_due = None
        if self.recover is not None and self.recovery.hole_timer():
            self.retransmit_oldest(now)

    def on_duplicate_ack(self, now: float) -> None:
        """An ACK that repeats ``una`` with no data and the same window (RFC 5681 §2)."""
        if not self.key_segments:
            return
        self.dupacks += 1
        self.stats["dup_acks"] += 1
        if self.recover is not None:
            oldest = self.oldest()
            if oldest is not None:
                reo = self.recovery.reo_wnd(self.rtt.round_trip(self.config.rto_initial),
                                            self.rtt.min_rtt, self.rtt.base)
                self._resend_at(self.recovery.duplicate_ack(
                    self.dupacks, self.key_segments, oldest.seq, now, reo), now)
            return
        if self.dupacks >= self.recovery.threshold(self.key_segments):
            self.recovery.begin("fast_retransmit", self.cc.cwnd, self.cc.ssthresh, False, now)
            self.recover = self.nxt
            self.cc.on_fast_retransmit(self.key_segments, now)
            self._reduced()
            self.stats["fast_retransmits"] += 1
            self.retransmit_oldest(now)
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
            self.recovery.begin("rto", self.cc.cwnd, self.cc.ssthresh, self.recover is not None,
                                now)
            self.cc.on_rto(self.key_segments, now)
            self._reduced()
        else:
            self.recovery.leave_frto()  # a SYN or FIN timed out: no episode
        self.recover, self.dupacks, self.hole_due = self.nxt, 0, None
        self.retransmit_oldest(now)
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

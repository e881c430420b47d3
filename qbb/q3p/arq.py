"""Selective-repeat ARQ of the Q3P link layer (seed 002 §3.1: message numbers, flow control).

Message numbers (u32, serial-number arithmetic of RFC 1982) identify *data*, not key: a
retransmission repeats the message number, flags and plaintext of the lost frame but is
sealed again with fresh key (new A- and E-offsets), because every key byte is used once.

Sender (:class:`SendWindow`)
    Frames ``[una, nxt)`` are in flight, at most ``min(window, peer window)`` of them.  An
    ACK carries the receiver's next expected number (cumulative) and a bitmap of frames
    received beyond it (SACK).  A frame is retransmitted when its RTO expires (timer per
    frame, exponential back-off) or fast, once, when ``DUP_THRESHOLD`` frames sent after
    it have been selectively acknowledged.  RTT samples come from frames sent once only
    (Karn) and feed :class:`RttEstimator` (RFC 6298).

Receiver (:class:`ReceiveWindow`)
    Accepts numbers in ``[nxt, nxt + window)``, holds out-of-order frames, releases them in
    order.  A number behind ``nxt`` or already held is a duplicate: re-acknowledged, never
    delivered again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from qbb.q3p.packet import Ack

MASK = 0xFFFFFFFF
HALF = 1 << 31
DUP_THRESHOLD = 3
CLOCK_GRANULARITY = 0.001


def serial_diff(a: int, b: int) -> int:
    """``a - b`` in 32-bit serial-number arithmetic (RFC 1982), in ``-2**31 .. 2**31-1``."""
    d = (a - b) & MASK
    return d - (1 << 32) if d >= HALF else d


class RttEstimator:
    """RFC 6298 smoothed RTT and retransmission timeout, bounded by ``[rto_min, rto_max]``.

    ``rto`` is the computed timeout doubled once per :meth:`backoff`; an ACK that
    acknowledges new data ends the back-off (:meth:`reset_backoff`, as Linux does), so
    losses of different frames do not compound.
    """

    def __init__(self, rto_initial: float, rto_min: float, rto_max: float) -> None:
        self.rto_min, self.rto_max = rto_min, rto_max
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.base = rto_initial
        self.backoffs = 0

    @property
    def rto(self) -> float:
        return min(self.rto_max, self.base * (1 << min(self.backoffs, 30)))

    def sample(self, rtt: float) -> None:
        rtt = max(rtt, 0.0)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        rto = self.srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar)
        self.base = min(self.rto_max, max(self.rto_min, rto))

    def backoff(self) -> None:
        if self.rto < self.rto_max:
            self.backoffs += 1

    def reset_backoff(self) -> None:
        self.backoffs = 0


@dataclass(eq=False)
class Outstanding:
    """One frame in flight: what to send again and when it was last sent."""

    number: int
    item: Any  # the sender's fragment: repeated as is on retransmission
    sent_at: float
    transmissions: int = 1
    sacked: bool = False
    lost: bool = False
    fast_retransmitted: bool = False


@dataclass
class AckResult:
    acked: list[Outstanding] = field(default_factory=list)
    newly_lost: int = 0
    valid: bool = True


class SendWindow:
    """Frames in flight of one direction."""

    def __init__(self, window: int, rtt: RttEstimator) -> None:
        self.window = window
        self.peer_window = window
        self.rtt = rtt
        self.una = self.nxt = 0
        self.inflight: dict[int, Outstanding] = {}

    def can_send(self) -> bool:
        return serial_diff(self.nxt, self.una) < min(self.window, self.peer_window)

    def register(self, item: Any, now: float) -> int:
        number = self.nxt
        self.inflight[number] = Outstanding(number, item, now)
        self.nxt = (number + 1) & MASK
        return number

    def lost(self) -> list[Outstanding]:
        """Frames to retransmit now, oldest first."""
        return [entry for entry in self.inflight.values() if entry.lost and not entry.sacked]

    def retransmitted(self, entry: Outstanding, now: float) -> None:
        entry.sent_at, entry.lost = now, False
        entry.transmissions += 1

    def next_deadline(self) -> float | None:
        times = [e.sent_at for e in self.inflight.values() if not e.sacked and not e.lost]
        return min(times) + self.rtt.rto if times else None

    def expire(self, now: float) -> int:
        """Mark frames whose RTO passed as lost (back-off once); how many."""
        rto = self.rtt.rto
        expired = [e for e in self.inflight.values()
                   if not e.sacked and not e.lost and e.sent_at + rto <= now]
        for entry in expired:
            entry.lost = True
        if expired:
            self.rtt.backoff()
        return len(expired)

    def on_ack(self, ack: Ack, now: float) -> AckResult:
        """Apply an ACK: release, mark selectively acked frames, detect losses."""
        result = AckResult()
        if not 0 <= serial_diff(ack.cumulative, self.una) <= serial_diff(self.nxt, self.una):
            if serial_diff(ack.cumulative, self.una) > 0:
                result.valid = False  # acknowledges frames never sent
                return result
        else:
            while self.una != ack.cumulative:
                entry = self.inflight.pop(self.una, None)
                if entry is not None and not entry.sacked:
                    result.acked.append(entry)
                self.una = (self.una + 1) & MASK
        self.peer_window = ack.window
        for number in ack.received():
            entry = self.inflight.get(number)
            if entry is not None and not entry.sacked:
                entry.sacked = True
                result.acked.append(entry)
        if result.acked:
            self.rtt.reset_backoff()
        self._sample_rtt(result.acked, now)
        result.newly_lost = self._fast_loss()
        return result

    def _sample_rtt(self, acked: list[Outstanding], now: float) -> None:
        once = [entry.sent_at for entry in acked if entry.transmissions == 1]
        if once:
            self.rtt.sample(now - max(once))

    def _fast_loss(self) -> int:
        """Frames with ``DUP_THRESHOLD`` selectively acked frames after them: lost."""
        count = marked = 0
        for entry in reversed(self.inflight.values()):
            if entry.sacked:
                count += 1
            elif count >= DUP_THRESHOLD and not entry.lost and not entry.fast_retransmitted:
                entry.lost = entry.fast_retransmitted = True
                marked += 1
        return marked

    def unacknowledged(self) -> list[Outstanding]:
        """Everything not cumulatively acknowledged, oldest first (SACKed frames included)."""
        return list(self.inflight.values())


class ReceiveWindow:
    """Receive side of one direction: in-order release of held frames."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.nxt = 0
        self.held: dict[int, Any] = {}

    def classify(self, number: int) -> str:
        """``"new"``, ``"duplicate"`` (behind or held) or ``"outside"`` (beyond the window)."""
        ahead = serial_diff(number, self.nxt)
        if ahead < 0 or number in self.held:
            return "duplicate"
        if ahead >= self.window:
            return "outside"
        return "new"

    def hold(self, number: int, item: Any) -> None:
        self.held[number] = item

    def release(self) -> Iterator[Any]:
        """Held items from ``nxt`` on, in order, as long as there is no gap."""
        while self.nxt in self.held:
            item = self.held.pop(self.nxt)
            self.nxt = (self.nxt + 1) & MASK
            yield item

    def ack(self, window: int) -> Ack:
        return Ack.from_received(self.nxt, window, self.held)


__all__ = ["AckResult", "Outstanding", "ReceiveWindow", "RttEstimator", "SendWindow",
           "serial_diff"]

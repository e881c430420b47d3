"""Selective-repeat ARQ of the Q3P link layer (seed 002 §3.1: message numbers, flow control).

Message numbers (u32, serial-number arithmetic of RFC 1982) identify *data*, not key: a
retransmission repeats the message number, flags and plaintext of the lost frame but is
sealed again with fresh key (new A- and E-offsets), because every key byte is used once.

Sender (:class:`SendWindow`)
    Frames ``[una, nxt)`` are in flight, at most ``min(window, peer window)`` of them.  An
    ACK carries the receiver's next expected number (cumulative) and a bitmap of frames
    received beyond it (SACK).  A frame is retransmitted fast, once, when
    ``DUP_THRESHOLD`` frames sent after it have been selectively acknowledged, or when the
    retransmission timeout (RTO, exponential back-off) expires.  RTT samples come from
    frames sent once only (Karn) and feed :class:`RttEstimator` (RFC 6298).

    On a timeout, two policies.  *Classic* (``probe_rto=False``): a timer per frame from
    its last transmission; every frame whose timer ran out is marked lost.  *Probe*
    (``probe_rto=True``, what :class:`~qbb.q3p.endpoint.Q3PEndpoint` uses by default,
    :mod:`qbb.q3p.rto`): the timer restarts whenever the cumulative ACK advances, only the
    oldest unacknowledged frame is resent, the next ACKs tell whether the other frames
    were lost or only delayed, and a spurious timeout raises the RTO floor
    (:meth:`RttEstimator.raise_floor`), which decays with a half-life of
    :data:`FLOOR_HALF_LIFE` seconds.

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
from qbb.q3p.rto import SPURIOUS_GAIN, Recovery, before

MASK = 0xFFFFFFFF
HALF = 1 << 31
DUP_THRESHOLD = 3
CLOCK_GRANULARITY = 0.001
FLOOR_HALF_LIFE = 10.0  # seconds for a raised RTO floor to decay halfway to rto_min


def serial_diff(a: int, b: int) -> int:
    """``a - b`` in 32-bit serial-number arithmetic (RFC 1982), in ``-2**31 .. 2**31-1``."""
    d = (a - b) & MASK
    return d - (1 << 32) if d >= HALF else d


class RttEstimator:
    """RFC 6298 smoothed RTT and retransmission timeout, bounded by ``[rto_min, rto_max]``.

    ``rto`` is the computed timeout doubled once per :meth:`backoff`; an ACK that
    acknowledges new data ends the back-off (:meth:`reset_backoff`, as Linux does), so
    losses of different frames do not compound.  :meth:`raise_floor` lifts the lower bound
    above ``rto_min`` after a spurious timeout; the lift halves every
    :data:`FLOOR_HALF_LIFE` seconds (applied at the next :meth:`sample` given ``now``).
    """

    def __init__(self, rto_initial: float, rto_min: float, rto_max: float) -> None:
        self.rto_min, self.rto_max = rto_min, rto_max
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.base = rto_initial
        self.backoffs = 0
        self.floor, self.floor_at = rto_min, 0.0

    def floor_at_time(self, now: float | None) -> float:
        """The RTO lower bound at ``now`` (``rto_min`` plus the decaying lift)."""
        lift = self.floor - self.rto_min
        if lift <= 0 or now is None:
            return max(self.rto_min, self.floor)
        return self.rto_min + lift * 0.5 ** (max(0.0, now - self.floor_at) / FLOOR_HALF_LIFE)

    def raise_floor(self, value: float, now: float) -> None:
        """Keep the RTO at ``value`` or more from now on (then decaying), at most rto_max."""
        self.floor = max(self.floor_at_time(now), min(self.rto_max, value))
        self.floor_at = now
        self.base = max(self.base, self.floor)

    @property
    def rto(self) -> float:
        return min(self.rto_max, self.base * (1 << min(self.backoffs, 30)))

    def sample(self, rtt: float, now: float | None = None) -> None:
        rtt = max(rtt, 0.0)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        rto = self.srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar)
        self.base = min(self.rto_max, max(self.floor_at_time(now), rto))

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
    newly_lost: int = 0  # marked lost by the SACK rule (fast retransmit)
    valid: bool = True
    spurious: bool = False  # this ACK showed that the last timeout was spurious
    go_back: int = 0  # frames marked lost because the timeout's probe alone came back


class SendWindow:
    """Frames in flight of one direction (``probe_rto``: the timeout policy, module doc)."""

    def __init__(self, window: int, rtt: RttEstimator, *, probe_rto: bool = False) -> None:
        self.window = window
        self.peer_window = window
        self.rtt = rtt
        self.probe_rto = probe_rto
        self.una = self.nxt = 0
        self.inflight: dict[int, Outstanding] = {}
        self.sacked = 0  # entries of ``inflight`` selectively acknowledged
        self.progress_at: float | None = None  # last advance of the cumulative ACK
        self.recovery: Recovery | None = None

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
        recovery = self.recovery
        if recovery is not None and entry.number == recovery.probe and recovery.sent_at is None:
            recovery.sent_at = now

    def _timed(self) -> Iterator[Outstanding]:
        return (e for e in self.inflight.values() if not e.sacked and not e.lost)

    def next_deadline(self) -> float | None:
        times = [e.sent_at for e in self._timed()]
        if not times:
            return None
        start = min(times)
        if self.probe_rto and self.progress_at is not None:
            start = max(start, self.progress_at)  # RFC 6298 §5.3: restarted by progress
        return start + self.rtt.rto

    def expire(self, now: float) -> int:
        """Mark frames whose RTO passed as lost (back-off once); how many."""
        if self.probe_rto:
            return self._expire_probe(now)
        rto = self.rtt.rto
        expired = [e for e in self._timed() if e.sent_at + rto <= now]
        for entry in expired:
            entry.lost = True
        if expired:
            self.rtt.backoff()
        return len(expired)

    def _expire_probe(self, now: float) -> int:
        """The timer ran out: resend only the oldest frame and open a recovery episode."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return 0
        probe = next(self._timed())
        probe.lost = True
        if self.recovery is None:  # a repeated timeout continues the episode
            self.recovery = Recovery(probe.number, self.nxt, probe.sent_at, self.progress_at)
        self.rtt.backoff()
        return 1

    def on_ack(self, ack: Ack, now: float) -> AckResult:
        """Apply an ACK: release, mark selectively acked frames, detect losses."""
        result = AckResult()
        if not 0 <= serial_diff(ack.cumulative, self.una) <= serial_diff(self.nxt, self.una):
            if serial_diff(ack.cumulative, self.una) > 0:
                result.valid = False  # acknowledges frames never sent
                return result
        elif self.una != ack.cumulative:
            while self.una != ack.cumulative:
                entry = self.inflight.pop(self.una, None)
                if entry is not None:
                    if entry.sacked:
                        self.sacked -= 1
                    else:
                        result.acked.append(entry)
                self.una = (self.una + 1) & MASK
            if self.probe_rto:
                self.progress_at = now
        self.peer_window = ack.window
        for number in ack.received():
            entry = self.inflight.get(number)
            if entry is not None and not entry.sacked:
                entry.sacked = True
                self.sacked += 1
                result.acked.append(entry)
        if result.acked:
            self.rtt.reset_backoff()
        self._sample_rtt(result.acked, now)
        if self.recovery is not None and result.acked:
            self._judge(self.recovery, result, now)
        result.newly_lost = self._fast_loss()
        return result

    def _covered(self, number: int) -> bool:
        entry = self.inflight.get(number)
        return entry is None or entry.sacked

    def _judge(self, recovery: Recovery, result: AckResult, now: float) -> None:
        """What this ACK says about the timeout episode (:mod:`qbb.q3p.rto`)."""
        originals = [e for e in result.acked if e.number != recovery.probe
                     and e.transmissions == 1 and before(e.number, recovery.boundary)]
        if not self._covered(recovery.probe):
            if originals:  # later frames arrived while the probe is still missing
                recovery.delivered = recovery.hole = True
            return
        self.recovery = None
        last_before = (recovery.boundary - 1) & MASK
        if not recovery.hole and (recovery.sent_at is None
                                  or (originals and not self._covered(last_before))):
            result.spurious = True
            self.rtt.raise_floor(SPURIOUS_GAIN * recovery.stall(now), now)
        elif not (originals or recovery.delivered):
            result.go_back = self._go_back(recovery.boundary)

    def _go_back(self, boundary: int) -> int:
        """Mark every unacknowledged frame sent before ``boundary`` lost; how many."""
        marked = 0
        for entry in self._timed():
            if before(entry.number, boundary):
                entry.lost = True
                marked += 1
        return marked

    def _sample_rtt(self, acked: list[Outstanding], now: float) -> None:
        once = [entry.sent_at for entry in acked if entry.transmissions == 1]
        if once:
            self.rtt.sample(now - max(once), now)

    def _fast_loss(self) -> int:
        """Frames with ``DUP_THRESHOLD`` selectively acked frames after them: lost."""
        if self.sacked < DUP_THRESHOLD:
            return 0  # the usual case, in order: no scan of the window
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

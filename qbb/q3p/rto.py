"""Retransmission-timeout recovery of the Q3P ARQ: probe first, detect spurious timeouts.

Why.  Every Q3P retransmission is sealed again with fresh key (seed 002 §3.1: a key byte is
used once), so a retransmission that was not needed costs one-time pad as well as
bandwidth.  On a busy host the peer process can be descheduled for longer than the RTO;
its acknowledgements then arrive late, in a burst.  The classic response -- mark every
frame whose timer ran out as lost and send them all again -- re-seals the whole window
for frames that were only waiting in the peer's socket buffer (``qbb bench relay``:
a third of all 57 KB frames before this module, ``docs/benchmarks-relay.md``).

What (:class:`Recovery`, used by :class:`qbb.q3p.arq.SendWindow` with ``probe_rto``):

1. *Timer restarted by progress* (RFC 6298 §5.3): the timeout runs from the later of the
   frame's last transmission and the last time the cumulative acknowledgement advanced,
   so a long but moving queue never times out.
2. *Probe first* (RFC 6298 §5.4, as TCP does): when the timer expires, only the oldest
   unacknowledged frame (the *probe*) is retransmitted; the frames sent before the
   timeout (up to the *boundary*, the next number at that moment) are left alone until
   the acknowledgements tell what happened to them, in the spirit of F-RTO (RFC 5682):
   * the first ACK covering the probe also acknowledges other frames sent once before
     the timeout, or such frames were acknowledged meanwhile: the link delivers, the
     frames were delayed, nothing more is resent (losses among them are left to the
     SACK fast retransmit and the timer);
   * the ACK covers the probe and nothing else that was sent before the timeout: the
     frames after it were lost too (a burst); all unacknowledged frames before the
     boundary are marked lost and resent (the classic response, one RTT later).
3. *Spurious timeout detection* (Eifel, RFC 3522, by ordering instead of timestamps,
   which the Q3P ACK does not carry): the channel is a FIFO (UDP over one veth or a
   memory channel), and the probe's retransmission left after every frame sent before
   the boundary.  So an ACK that covers the probe, also covers a later original frame,
   and does not yet cover the last frame before the boundary was sent by the peer
   before the retransmission could have arrived: the *original* probe arrived and the
   timeout was spurious -- unless an ACK during the episode already showed the probe
   missing while later frames were there (a hole: a real loss).  Repeated timeouts of
   the same episode (back-off) do not change the argument: every retransmission left
   after the boundary.  An ACK that covers the probe before the retransmission was even
   sealed is spurious too (no key spent).
   Response (RFC 4015 in spirit): the back-off is undone by the progress, and the RTO
   floor is raised to :data:`SPURIOUS_GAIN` times the stall just observed (time from the
   probe's original transmission, or the last progress, to this ACK), decaying back to
   ``rto_min`` with a half-life of :data:`qbb.q3p.arq.FLOOR_HALF_LIFE` seconds.

A misjudged episode (reordering, a lost ACK, two losses in one batch) costs time or an
extra retransmission, never correctness: acknowledgements, not the timer, decide what was
delivered.
"""

from __future__ import annotations

from dataclasses import dataclass

SPURIOUS_GAIN = 2.0  # RTO floor = this x the stall that caused a spurious timeout


@dataclass
class Recovery:
    """One timeout episode: the probe frame and what the ACKs showed since."""

    probe: int  # message number of the oldest unacknowledged frame at the timeout
    boundary: int  # next message number at the timeout: frames before it are suspects
    original_at: float  # when the probe was last sent before the timeout
    progress_at: float | None  # when the cumulative ACK last advanced before the timeout
    sent_at: float | None = None  # when the probe's retransmission was sealed
    delivered: bool = False  # an original sent before the boundary was acknowledged
    hole: bool = False  # an ACK showed the probe missing while later frames arrived

    def stall(self, now: float) -> float:
        """How long the link showed no progress, up to this ACK."""
        start = self.original_at if self.progress_at is None \
            else max(self.original_at, self.progress_at)
        return max(0.0, now - start)


def before(number: int, boundary: int) -> bool:
    """``number`` was sent before ``boundary`` (32-bit serial numbers, RFC 1982)."""
    return 0 < (boundary - number) & 0xFFFFFFFF < 1 << 31


__all__ = ["Recovery", "SPURIOUS_GAIN", "before"]

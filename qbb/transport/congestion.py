"""QKDTL congestion control: an AIMD window in segments (RFC 5681, RFC 3168; SECOQC §3.3).

SECOQC asks of its transport "congestion control to sustain the stability of the QKD
network" (seed 002 §3.3).  A QKD network congests in two ways: a forwarder's queue fills
(segments are dropped or, with ECN, marked CE), and a link's key store runs low (the
forwarder has no pad to relay more key, and says so with an ICMP-style source quench).
Both get the same answer: fewer segments in flight.

The window ``cwnd`` counts KEY segments in flight (the sender keeps its segments' sizes
fixed, so segments stand for bytes).  Per RFC 5681:

* **slow start** (``cwnd < ssthresh``): ``cwnd += n`` for ``n`` newly acknowledged
  segments, i.e. doubling per round trip; ``ssthresh`` starts unbounded;
* **congestion avoidance**: ``cwnd += n / cwnd``, i.e. one segment per round trip
  (additive increase);
* the window grows only while the sender used it (RFC 7661 §4.3): an application-,
  bucket- or receiver-limited flow does not inflate ``cwnd`` it never tests;
* **fast retransmit** (three duplicate ACKs): ``ssthresh = max(flight / 2, 2)``,
  ``cwnd = ssthresh`` (multiplicative decrease);
* **ECE** echoed by the receiver (a CE mark, RFC 3168 §6.1.2) and **source quench** from
  a key-starved forwarder: ``ssthresh = max(cwnd / 2, 2)``, ``cwnd = max(cwnd / 2, 1)``,
  at most once per round trip (a reduction for loss counts too), so one congestion
  episode halves the window once however many marks it produces;
* **retransmission timeout**: ``ssthresh = max(flight / 2, 2)``, ``cwnd = 1``;
* **undo**: a reduction for loss that turned out spurious (the segment was delayed or
  reordered, not lost: :mod:`qbb.transport.recovery`) is taken back: ``cwnd`` and
  ``ssthresh`` return to at least their values before it (RFC 3708 / RFC 4015 response).

Additive increase with multiplicative decrease converges to equal windows for flows with
equal round-trip times sharing a bottleneck (Chiu and Jain, 1989): each decrease halves
the difference between two windows, each increase keeps it.  ``docs/transport.md``
shows the simulation (``tests/transport_sim.py``) and the fairness it measures.
"""

from __future__ import annotations

import math

__all__ = ["CongestionControl"]

MIN_SSTHRESH = 2.0


class CongestionControl:
    """The congestion window of one sender, in segments (sans-IO: ``now`` is passed in)."""

    def __init__(self, initial_cwnd: int) -> None:
        self.cwnd = float(max(1, initial_cwnd))
        self.ssthresh = math.inf
        self.last_reduction: float | None = None
        self.reductions = {"fast_retransmit": 0, "ece": 0, "source_quench": 0, "rto": 0}
        self.undone = 0

    @property
    def window(self) -> int:
        """Segments that may be in flight now (at least one)."""
        return max(1, int(self.cwnd))

    @property
    def slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def on_ack(self, acked: int, cwnd_limited: bool) -> None:
        """``acked`` segments were newly acknowledged; grow if the window was in use."""
        if acked <= 0 or not cwnd_limited:
            return
        if self.slow_start:
            grow = min(acked, self.ssthresh - self.cwnd) if self.ssthresh < math.inf else acked
            self.cwnd += grow
            acked -= grow
        if acked > 0:
            self.cwnd += acked / self.cwnd

    def on_fast_retransmit(self, flight: int, now: float) -> None:
        """Three duplicate ACKs: halve (the caller enters recovery once per window)."""
        self.ssthresh = max(flight / 2, MIN_SSTHRESH)
        self.cwnd = self.ssthresh
        self.last_reduction = now
        self.reductions["fast_retransmit"] += 1

    def on_rto(self, flight: int, now: float) -> None:
        """The retransmission timer expired: back to one segment."""
        self.ssthresh = max(flight / 2, MIN_SSTHRESH)
        self.cwnd = 1.0
        self.last_reduction = now
        self.reductions["rto"] += 1

    def on_signal(self, kind: str, now: float, rtt: float) -> bool:
        """ECE or source quench: halve unless already reduced within ``rtt``; True if it did."""
        if kind not in ("ece", "source_quench"):
            raise ValueError(f"unknown congestion signal {kind!r}")
        if self.last_reduction is not None and now - self.last_reduction < rtt:
            return False
        self.ssthresh = max(self.cwnd / 2, MIN_SSTHRESH)
        self.cwnd = max(self.cwnd / 2, 1.0)
        self.last_reduction = now
        self.reductions[kind] += 1
        return True

    def undo(self, prior_cwnd: float, prior_ssthresh: float) -> None:
        """A reduction for loss was spurious: back to the window from before it."""
        self.cwnd = max(self.cwnd, prior_cwnd)
        self.ssthresh = max(self.ssthresh, prior_ssthresh)
        self.undone += 1

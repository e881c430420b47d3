"""Sequence-number arithmetic and retransmission timing of the QKDTL (RFC 1982, RFC 6298).

Sequence numbers are 32-bit and wrap: ``a`` is "after" ``b`` when the forward distance
from ``b`` to ``a`` is below 2**31 (RFC 1982 serial-number arithmetic, as TCP uses it).
:func:`seq_diff` gives that signed distance; every comparison in the transport goes
through it, so a stream that starts near 2**32 behaves exactly like one starting at 0.

:class:`RttEstimator` is RFC 6298 §2: the first sample sets SRTT = R and RTTVAR = R/2,
later samples ``RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|`` and ``SRTT = 7/8 SRTT + 1/8 R``;
``RTO = SRTT + max(G, 4 RTTVAR)`` clamped to ``[rto_min, rto_max]`` (§2.4-2.5).  Before the
first sample RTO is ``rto_initial`` (§2.1).  Each expiry doubles the RTO (§5.5, exponential
back-off) up to ``rto_max``; an ACK of new data ends the back-off.  The caller applies
Karn's rule (§3): samples come only from segments that were sent once.  ``min_rtt`` is the
smallest sample seen (the spurious-retransmission test of :mod:`qbb.transport.recovery`
uses it), and :meth:`RttEstimator.spike` is the Eifel response to a timeout found to be
spurious (RFC 4015 §2): the delay that fooled the timer is taken into SRTT and RTTVAR at
once, so the next RTO covers it.
"""

from __future__ import annotations

__all__ = ["MASK", "RttEstimator", "seq_add", "seq_diff"]

MASK = 0xFFFF_FFFF
_HALF = 1 << 31
CLOCK_GRANULARITY = 0.001


def seq_diff(a: int, b: int) -> int:
    """``a - b`` in 32-bit serial-number arithmetic: in ``-2**31 .. 2**31 - 1``."""
    d = (a - b) & MASK
    return d - (1 << 32) if d >= _HALF else d


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & MASK


class RttEstimator:
    """RFC 6298 smoothed round-trip time and retransmission timeout."""

    def __init__(self, rto_initial: float, rto_min: float, rto_max: float) -> None:
        self.rto_min, self.rto_max = rto_min, rto_max
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.base = min(rto_max, max(rto_min, rto_initial))
        self.backoffs = 0
        self.samples = 0
        self.min_rtt = float("inf")

    @property
    def rto(self) -> float:
        """The current timeout: the computed RTO doubled once per back-off, at most rto_max."""
        return min(self.rto_max, self.base * (1 << min(self.backoffs, 30)))

    def sample(self, rtt: float) -> None:
        """Feed one round-trip measurement (seconds) from a segment sent once."""
        rtt = max(rtt, 0.0)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.samples += 1
        self.min_rtt = min(self.min_rtt, rtt)
        self._update()

    def spike(self, rtt: float) -> None:
        """A timeout was spurious: the original took ``rtt`` seconds (RFC 4015 §2)."""
        if self.srtt is None:
            self.sample(rtt)
            return
        self.srtt = max(self.srtt, rtt)
        self.rttvar = max(self.rttvar, rtt / 2)
        self._update()

    def _update(self) -> None:
        rto = self.srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar)
        self.base = min(self.rto_max, max(self.rto_min, rto))

    def backoff(self) -> None:
        """The retransmission timer expired: double the timeout (up to rto_max)."""
        if self.rto < self.rto_max:
            self.backoffs += 1

    def reset_backoff(self) -> None:
        """New data was acknowledged: back to the computed timeout."""
        self.backoffs = 0

    def round_trip(self, default: float) -> float:
        """SRTT, or ``default`` before the first sample."""
        return self.srtt if self.srtt is not None else default

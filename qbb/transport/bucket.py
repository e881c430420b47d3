"""Token bucket (λ, σ) that bounds a QKDTL connection's key generation (SECOQC seed 002 §2.2).

SECOQC's best-effort service lets an application transmit session keys "with an average
rate λk and burst of σk"; the pair is an upper bound.  The bucket is the single-rate
meter of RFC 2697 with one bucket: it holds at most ``burst`` tokens (bits), fills at
``rate`` tokens per second, and a key of ``b`` bits may be generated only when ``b``
tokens are there, which it then removes.  Over any interval of length ``t`` the
connection therefore generates at most ``σ + λ t`` key bits.

``rate == 0`` means unlimited (no request, or a best-effort request that leaves λ
unspecified).  The bucket starts full.  Time is an argument (``now``, seconds); nothing
here reads a clock.  Guaranteed-rate admission happens at node level
(:mod:`qbb.transport.admission`); the connection only shapes its own output here.
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` bit/s (0 = unlimited), depth ``burst`` bits, full at ``now``."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate < 0 or burst < 0:
            raise ValueError(f"rate and burst must be >= 0, got {rate}, {burst}")
        self.rate, self.burst = float(rate), float(burst)
        self.tokens, self.stamp = float(burst), now

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def available(self, now: float) -> float:
        """Tokens (bits) that may be spent at ``now``; ``inf`` when unlimited."""
        if self.unlimited:
            return math.inf
        self._refill(now)
        return self.tokens

    def consume(self, bits: float, now: float) -> None:
        """Spend ``bits`` tokens (the caller checked :meth:`available`)."""
        if not self.unlimited:
            self._refill(now)
            self.tokens -= bits

    def time_until(self, bits: float, now: float) -> float:
        """Seconds from ``now`` until ``bits`` tokens are there (0 if already; inf if never)."""
        if self.unlimited:
            return 0.0
        if bits > self.burst:
            return math.inf
        missing = bits - self.available(now)
        return 0.0 if missing <= 0 else missing / self.rate

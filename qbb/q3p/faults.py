"""Fault injection on the outgoing path of a Q3P link driver (seed 002 §2.1, §3.1).

SECOQC's classical channels are untrusted and unreliable: Q3P must survive loss,
duplication, reordering and corruption (the latter is caught by the ITS authentication tag
and dropped).  :class:`FaultInjector` lets the embedded (memory channel) and emulated (UDP)
drivers of :mod:`qbb.q3p.driver` impose those faults reproducibly, from a seeded RNG,
without ``tc netem`` (which :mod:`qbb.netns` offers for veth links).

Theory of operation (sans-IO: ``now`` is always an argument)
    :meth:`FaultInjector.outgoing` takes the datagrams an endpoint wants to send and returns
    the ones that go on the wire now.  Each datagram independently, in this order:

    1. is lost with probability ``loss``;
    2. has one uniformly chosen bit flipped with probability ``corrupt``;
    3. is sent twice with probability ``duplicate`` (the copy right after the original);
    4. is held back with probability ``reorder``: it leaves after the next datagram that is
       sent, or at ``now + hold`` at the latest (:meth:`next_release` / :meth:`release`),
       so it arrives after at least one younger datagram when traffic flows.

    Held datagrams are never lost by the injector: ``release(now)`` returns them once due,
    ``flush()`` returns all of them.  ``counters`` counts every decision.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field


def _probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"fault probability {name} must be in [0, 1], got {value!r}")
    return float(value)


@dataclass
class FaultInjector:
    """Seeded loss / duplication / reordering / corruption of outgoing datagrams."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    seed: int | None = None
    hold: float = 0.01  # longest time a reordered datagram is held back (seconds)
    counters: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            setattr(self, name, _probability(name, getattr(self, name)))
        if not self.hold > 0:
            raise ValueError(f"hold time must be > 0 s, got {self.hold!r}")
        self._rng = random.Random(self.seed)
        self._held: list[tuple[float, bytes]] = []

    @property
    def active(self) -> bool:
        return bool(self.loss or self.duplicate or self.reorder or self.corrupt or self._held)

    def outgoing(self, datagrams: list[bytes], now: float) -> list[bytes]:
        """The datagrams to put on the wire now (faults applied, due held ones included)."""
        if not self.active:
            self.counters["offered"] += len(datagrams)
            return list(datagrams)
        out: list[bytes] = []
        for datagram in datagrams:
            self._one(datagram, now, out)
        out.extend(self.release(now))
        return out

    def _one(self, datagram: bytes, now: float, out: list[bytes]) -> None:
        rng, counters = self._rng, self.counters
        counters["offered"] += 1
        if rng.random() < self.loss:
            counters["lost"] += 1
            return
        if rng.random() < self.corrupt and datagram:
            datagram = flip_bit(datagram, rng.randrange(8 * len(datagram)))
            counters["corrupted"] += 1
        copies = 2 if rng.random() < self.duplicate else 1
        counters["duplicated"] += copies - 1
        if rng.random() < self.reorder:
            counters["reordered"] += 1
            out.extend(self.flush())  # an older held datagram leaves first
            self._held.extend((now + self.hold, datagram) for _ in range(copies))
            return
        out.extend([datagram] * copies)
        out.extend(self.flush())  # held datagrams leave after a younger one

    def next_release(self) -> float | None:
        """When the oldest held datagram is due (``None``: nothing held)."""
        return min((due for due, _ in self._held), default=None)

    def release(self, now: float) -> list[bytes]:
        """Held datagrams whose hold time has expired by ``now``."""
        return self._release_all(lambda due: due <= now)

    def flush(self) -> list[bytes]:
        """All held datagrams, at once."""
        return self._release_all(lambda due: True)

    def _release_all(self, is_due) -> list[bytes]:
        due = [datagram for when, datagram in self._held if is_due(when)]
        if due:
            self._held = [(when, d) for when, d in self._held if not is_due(when)]
            self.counters["released"] += len(due)
        return due


def flip_bit(data: bytes, bit: int) -> bytes:
    """``data`` with bit ``bit`` (0 = most significant bit of byte 0) inverted."""
    index, shift = divmod(bit, 8)
    out = bytearray(data)
    out[index] ^= 0x80 >> shift
    return bytes(out)


__all__ = ["FaultInjector", "flip_bit"]

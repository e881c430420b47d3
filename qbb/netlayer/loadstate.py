"""Load State Database of the forwarding module (seed 002 §2.5.3, Fig. 10, eq. 1-2).

The forwarding module keeps, per outgoing interface ``i``, an approximated load
``L_i(t)`` computed by a first-order low-pass filter over discrete measurement intervals::

    L_i(t) = (1 - 1/w) * L_i(t-1) + l_i(t) / w                 (eq. 1)
    l_i(t) = D_i(t, t-1) / T(t, t-1)                           (eq. 2)

``D_i`` is the number of bits transmitted on ``i`` during the interval and ``T`` its
length, so ``l_i`` and ``L_i`` are in bit/s.  Here the discrete times are the multiples
of ``interval`` seconds on the caller's clock (``now`` is always an argument; nothing
reads a clock).  :meth:`LoadStateDB.record` adds the bits of one packet to the current
interval; whenever time has passed one or more interval boundaries, the filter steps
once per elapsed interval (intervals without traffic have ``l_i = 0``, so ``k`` idle
intervals multiply ``L_i`` by ``(1 - 1/w)^k`` in closed form).

:meth:`LoadStateDB.load` is ``L_i`` as of the last completed interval, exactly the
quantity of eq. 1; ``w`` is the filter constant (an impulse decays with time constant
about ``w * interval`` seconds).  ``w = 1`` makes ``L_i`` the plain rate of the last
interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qbb.errors import ConfigError

__all__ = ["LoadStateDB", "LoadStateConfig"]


@dataclass(frozen=True)
class LoadStateConfig:
    """``interval``: seconds per discrete step T; ``window``: the filter constant w >= 1."""

    interval: float = 0.1
    window: float = 8.0

    def __post_init__(self) -> None:
        if not (isinstance(self.interval, (int, float)) and math.isfinite(self.interval)
                and self.interval > 0):
            raise ConfigError(f"load interval must be a positive number, got {self.interval!r}")
        if not (isinstance(self.window, (int, float)) and math.isfinite(self.window)
                and self.window >= 1):
            raise ConfigError(f"load filter constant w must be >= 1, got {self.window!r}")


class _Entry:
    """One interface: the filter value, the open interval's index and its bit count."""

    __slots__ = ("load", "step", "bits", "total_bits")

    def __init__(self, step: int) -> None:
        self.load = 0.0
        self.step = step
        self.bits = 0
        self.total_bits = 0


class LoadStateDB:
    """Per-interface approximated load ``L_i`` in bit/s (see the module docstring)."""

    def __init__(self, config: LoadStateConfig | None = None) -> None:
        self.config = config or LoadStateConfig()
        self._keep = 1.0 - 1.0 / self.config.window
        self._entries: dict[str, _Entry] = {}

    def _step_of(self, now: float) -> int:
        return math.floor(now / self.config.interval)

    def _entry(self, interface: str, now: float) -> _Entry:
        step = self._step_of(now)
        entry = self._entries.get(interface)
        if entry is None:
            entry = self._entries[interface] = _Entry(step)
        elif step > entry.step:
            self._roll(entry, step)
        return entry

    def _roll(self, entry: _Entry, step: int) -> None:
        """Close the open interval (eq. 1 with its l_i) and any idle ones after it."""
        rate = entry.bits / self.config.interval
        entry.load = self._keep * entry.load + rate / self.config.window
        idle = step - entry.step - 1
        if idle > 0:
            entry.load *= self._keep ** idle
        if entry.load < 1e-9:
            entry.load = 0.0
        entry.step, entry.bits = step, 0

    def record(self, interface: str, bits: int, now: float) -> None:
        """``bits`` were transmitted on ``interface`` at time ``now``."""
        entry = self._entry(interface, now)
        entry.bits += bits
        entry.total_bits += bits

    def load(self, interface: str, now: float) -> float:
        """``L_i`` in bit/s as of the last interval completed by ``now`` (0 if unknown)."""
        return self._entry(interface, now).load

    def pending_bits(self, interface: str, now: float) -> int:
        """Bits recorded in the interval still open at ``now``."""
        return self._entry(interface, now).bits

    def total_bits(self, interface: str) -> int:
        """All bits ever recorded on ``interface``."""
        entry = self._entries.get(interface)
        return 0 if entry is None else entry.total_bits

    def snapshot(self, now: float) -> dict[str, float]:
        """``{interface: L_i}`` for every interface seen so far."""
        return {name: self.load(name, now) for name in sorted(self._entries)}

    def forget(self, interface: str) -> None:
        self._entries.pop(interface, None)

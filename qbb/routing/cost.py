"""Interface output cost of a QBB link (seed 002 Appendix B "Interface output cost(s)", §4 Fig. 18).

The seed lets link costs be "assigned by an administrator or ... computed according to a
predefined set of rules", and warns that dynamic costs "might cause heavy overhead and
instability".  qbb supports both:

* configured: :class:`~qbb.routing.interface.InterfaceConfig` ``cost`` (default), or
* computed by :func:`computed_cost` from the link's key generation rate ``r`` (bit/s,
  all QKD devices of the link together) and its key-store level ``L`` (bits)::

      base  = reference_rate / r                       (1 Mbit/s -> 1, 10 kbit/s -> 100)
      scale = 1 + penalty * max(0, 1 - L / low_level)   (an empty store costs 1+penalty times more)
      cost  = clamp(round(base * scale), 1, 65535)      (r = 0 -> 65535)

  ``reference_rate`` defaults to 1 Mbit/s (the seed's R0 at zero distance is 100 kbit/s
  to a few Mbit/s, Fig. 6); ``low_level`` to 1 Mbit, ``penalty`` to 3.

Stability (:class:`LinkCost`): a computed cost replaces the advertised one only when it
differs by more than ``hysteresis`` (relative, default 25 %) and at least
``min_change_interval`` seconds (default 60) passed since the last change, so a cost
change - which means a new Router-LSA flooded through the area and an SPF run on every
node - happens at most once a minute per link and not for small fluctuations.  A node starts
its ``LinkCost`` with the cost it first advertises and ``since`` = its start time, so no
change comes in a node's first minute either: key stores start empty and fill within
seconds, and reacting to that would make every link of a fresh network flap once.

Feeding: :class:`qbb.node.QBBNode` samples every link whose cost is not configured once
per ``NodeConfig.cost_interval`` when the topology says ``"costs": "auto"``
(docs/topology.md, docs/node.md): ``rate`` = the link's QKD devices' total rate,
``level`` = the node's encryption pool on that link; a change goes to
:meth:`qbb.routing.router.Router.set_cost`, which re-originates the Router-LSA.
"""

from __future__ import annotations

from dataclasses import dataclass

from qbb.errors import ConfigError
from qbb.routing.interface import MAX_COST

__all__ = ["CostPolicy", "LinkCost", "computed_cost"]


@dataclass(frozen=True, kw_only=True)
class CostPolicy:
    """Parameters of the computed-cost rule (see the module docstring)."""

    reference_rate: float = 1e6
    low_level: float = 1e6
    penalty: float = 3.0
    hysteresis: float = 0.25
    min_change_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.reference_rate <= 0 or self.low_level <= 0 or self.penalty < 0:
            raise ConfigError("cost policy: reference_rate, low_level > 0 and penalty >= 0")
        if self.hysteresis < 0 or self.min_change_interval < 0:
            raise ConfigError("cost policy: hysteresis and min_change_interval >= 0")


def computed_cost(rate: float, level: float, policy: CostPolicy = CostPolicy()) -> int:
    """Cost of a link generating ``rate`` bit/s of key with ``level`` bits in store."""
    if rate <= 0:
        return MAX_COST
    scale = 1 + policy.penalty * max(0.0, 1 - max(level, 0) / policy.low_level)
    value = policy.reference_rate / rate * scale  # inf for a rate near 0
    return MAX_COST if not value < MAX_COST else max(1, round(value))


class LinkCost:
    """The advertised cost of one link, with hysteresis and a rate limit."""

    def __init__(self, initial: int, policy: CostPolicy = CostPolicy(),
                 since: float | None = None) -> None:
        """``initial`` is the advertised cost; ``since`` the time it was first advertised
        (it counts as a change for the rate limit; None: the first change may come at once)."""
        self.policy = policy
        self.cost = initial
        self.changed_at: float | None = since
        self.changes = 0

    def update(self, rate: float, level: float, now: float) -> int | None:
        """Feed a measurement; the new cost when the advertised one changes, else None."""
        target = computed_cost(rate, level, self.policy)
        if abs(target - self.cost) <= self.policy.hysteresis * self.cost:
            return None
        if (self.changed_at is not None
                and now - self.changed_at < self.policy.min_change_interval):
            return None
        self.cost, self.changed_at = target, now
        self.changes += 1
        return target

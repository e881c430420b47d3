"""The local interface database of a QBB node (seed 002 Appendix B; RFC 2328 §9).

Every QBB link is a point-to-point network (Appendix B: "In SeCoQC project we will have
only point-to-point links"), so an interface has at most one neighbour and the RFC 2328
interface state machine (§9.1, §9.3) reduces to two states that matter:

* ``Down``: lower layer down, no Hello packets, no neighbour, nothing advertised;
* ``Point-to-point``: lower layer up; Hellos every HelloInterval, an adjacency is always
  attempted with the neighbour (§10.4: on point-to-point networks adjacencies form
  with every neighbour).

``Loopback`` exists for completeness and is never entered by the router.

The Appendix B fields are the :class:`InterfaceConfig` attributes: type (always
point-to-point), IP interface address (also the interface's name in the router's
API), mask, Area ID, HelloInterval, RouterDeadInterval, InfTransDelay, output cost,
RxmtInterval and AuType.  Mutable run-time state (state, current output cost, Hello
timer, neighbour) lives in :class:`Interface`.  Intervals are seconds.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qbb.codec import is_canonical_ipv4
from qbb.errors import ConfigError
from qbb.routing.packet import AuType

if TYPE_CHECKING:
    from qbb.routing.neighbor import Neighbor

__all__ = ["InterfaceConfig", "InterfaceState", "InterfaceType", "Interface",
           "MAX_COST", "network_of"]

MAX_COST = 0xFFFF  # a Router-LSA metric is 16 bits (RFC 2328 A.4.2)


class InterfaceType(enum.Enum):
    """OSPF interface type; QBB links are always point-to-point (Appendix B)."""

    POINT_TO_POINT = "point-to-point"


class InterfaceState(enum.Enum):
    """RFC 2328 §9.1 interface states used on point-to-point interfaces."""

    DOWN = "Down"
    LOOPBACK = "Loopback"
    POINT_TO_POINT = "Point-to-point"


@dataclass(frozen=True, kw_only=True)
class InterfaceConfig:
    """The configured Appendix B fields of one interface."""

    address: str
    area: str
    mask: str = "255.255.255.252"
    cost: int = 10
    hello_interval: int = 10
    router_dead_interval: int = 40
    inf_trans_delay: int = 1
    rxmt_interval: int = 5
    au_type: AuType = AuType.NULL
    mtu: int = 1500
    type: InterfaceType = InterfaceType.POINT_TO_POINT

    def __post_init__(self) -> None:
        for name in ("address", "area", "mask"):
            if not is_canonical_ipv4(getattr(self, name)):
                raise ConfigError(f"interface {name} {getattr(self, name)!r} is not a dotted quad")
        if not 1 <= self.cost <= MAX_COST:
            raise ConfigError(f"interface cost {self.cost} outside 1..{MAX_COST}")
        if not 1 <= self.hello_interval <= 0xFFFF:
            raise ConfigError(f"HelloInterval {self.hello_interval} outside 1..65535")
        if not self.hello_interval < self.router_dead_interval <= 0xFFFFFFFF:
            raise ConfigError("RouterDeadInterval must exceed HelloInterval")
        if not 0 <= self.inf_trans_delay <= 3600 or self.rxmt_interval <= 0:
            raise ConfigError("InfTransDelay must be 0..3600 and RxmtInterval positive")
        if self.au_type != AuType.NULL:
            raise ConfigError("only AuType 0 (Null) is used: Q3P authenticates every frame")

    @property
    def network(self) -> str:
        """The attached /30 network (address AND mask)."""
        return network_of(self.address, self.mask)


def network_of(address: str, mask: str) -> str:
    """``address`` AND ``mask`` as a dotted quad."""
    value = int(ipaddress.IPv4Address(address)) & int(ipaddress.IPv4Address(mask))
    return str(ipaddress.IPv4Address(value))


class Interface:
    """Run-time state of one point-to-point interface."""

    def __init__(self, config: InterfaceConfig) -> None:
        self.config = config
        self.state = InterfaceState.DOWN
        self.cost = config.cost
        self.hello_due: float | None = None
        self.neighbor: Neighbor | None = None

    @property
    def address(self) -> str:
        return self.config.address

    @property
    def area(self) -> str:
        return self.config.area

    @property
    def is_up(self) -> bool:
        return self.state is InterfaceState.POINT_TO_POINT

    def up(self, now: float) -> None:
        """InterfaceUp (§9.3): start the Hello timer, first Hello right away."""
        self.state = InterfaceState.POINT_TO_POINT
        self.hello_due = now

    def down(self) -> None:
        """InterfaceDown (§9.3): stop the Hello timer (the router kills the neighbour)."""
        self.state = InterfaceState.DOWN
        self.hello_due = None

    def __repr__(self) -> str:
        return f"Interface({self.address}, area {self.area}, {self.state.value}, cost {self.cost})"

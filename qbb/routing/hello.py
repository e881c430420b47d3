"""The Hello protocol on point-to-point QBB links (RFC 2328 §9.5, §10.5; seed 002 App. B).

Every HelloInterval an up interface sends a Hello listing the neighbour's router ID once
it has heard from it (§9.5).  A received Hello (§10.5) is checked against the receiving
interface: HelloInterval and RouterDeadInterval must match (else the packet is dropped
and counted as ``hello_interval_mismatch`` / ``dead_interval_mismatch``); the network
mask is ignored, as §10.5 prescribes for point-to-point networks.  A Hello from a router
other than the current neighbour first kills that neighbour (KillNbr), then the sender
becomes the neighbour.  The neighbour FSM then gets HelloReceived and either
2-WayReceived (our router ID is listed) or 1-WayReceived.

The functions take the router (:class:`qbb.routing.router.Router`) as context: they
use ``router.router_id``, ``router.options``, ``router.send``, ``router.drop`` and
``router.neighbor_event``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbb.routing.interface import Interface
from qbb.routing.neighbor import Neighbor, NeighborEvent, NeighborState
from qbb.routing.packet import Hello, OspfPacket

if TYPE_CHECKING:
    from qbb.routing.router import Router

__all__ = ["make_hello", "on_hello", "send_hello"]


def make_hello(router: Router, iface: Interface) -> Hello:
    """The Hello this interface sends now (§9.5)."""
    nbr = iface.neighbor
    heard = (nbr.router_id,) if nbr is not None and nbr.state >= NeighborState.INIT else ()
    cfg = iface.config
    return Hello(network_mask=cfg.mask, hello_interval=cfg.hello_interval,
                 options=router.options, router_priority=0,
                 router_dead_interval=cfg.router_dead_interval, neighbors=heard)


def send_hello(router: Router, iface: Interface, now: float) -> None:
    """Hello timer fired: send and re-arm."""
    router.send(iface, make_hello(router, iface))
    iface.hello_due = now + iface.config.hello_interval


def on_hello(router: Router, iface: Interface, packet: OspfPacket, hello: Hello,
             now: float) -> None:
    """Process a received Hello (§10.5)."""
    cfg = iface.config
    if hello.hello_interval != cfg.hello_interval:
        router.drop("hello_interval_mismatch")
        return
    if hello.router_dead_interval != cfg.router_dead_interval:
        router.drop("dead_interval_mismatch")
        return
    nbr = iface.neighbor
    if nbr is not None and nbr.router_id != packet.router_id:
        router.neighbor_event(iface, NeighborEvent.KILL_NBR, now)
        nbr = None
    if nbr is None:
        iface.neighbor = Neighbor(packet.router_id)
    router.neighbor_event(iface, NeighborEvent.HELLO_RECEIVED, now)
    seen = router.router_id in hello.neighbors
    router.neighbor_event(
        iface, NeighborEvent.TWO_WAY_RECEIVED if seen else NeighborEvent.ONE_WAY, now)

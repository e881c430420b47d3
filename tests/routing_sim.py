"""Test helpers around :mod:`qbb.routing.simulate` (the simulator lives in the package so
``qbb bench routing`` can import it): ground truth for converged networks and a converged
two-router fixture for packet-level tests."""

from __future__ import annotations

import heapq

from qbb.routing.lsa import LinkType, LsType, RouterLSA
from qbb.routing.packet import OspfPacket, encode_packet
from qbb.routing.simulate import (  # noqa: F401 - re-exported for the tests
    SimLink, Simulation, Timers, build_network, converge, random_network, reconverge)


def pair(**kwargs) -> Simulation:
    """Two routers ``a`` (1.1.0.5) and ``b`` (1.1.0.9) on one link, converged."""
    sim = build_network({"a": 1, "b": 1}, [("a", "b")], {("a", "b"): 6, ("b", "a"): 5},
                        **kwargs)
    sim.start()
    assert sim.run_until_converged(60) is not None
    return sim


def iface_of(sim: Simulation, name: str) -> str:
    """The (only) interface address of router ``name``."""
    (address,) = sim.routers[name].interfaces
    return address


def inject(sim: Simulation, to: str, sender: str, body) -> list:
    """Deliver ``body`` to ``to`` as if sent by ``sender`` over their link; the output."""
    router, src = sim.routers[to], sim.routers[sender]
    address = next(a for (n, a), (_, peer, _) in sim._peer.items()
                   if n == to and peer == sender)
    raw = encode_packet(OspfPacket(router_id=src.router_id,
                                   area_id=router.interfaces[address].area, body=body))
    out = router.receive(address, raw, sim.now)
    for addr, data in out:
        sim._transmit(to, addr, data)
    sim._timers[to] = router.next_timer()
    return out


def own_router_lsa(sim: Simulation, holder: str, origin: str) -> RouterLSA:
    """``origin``'s Router-LSA as held by ``holder``."""
    rid = sim.routers[origin].router_id
    area = next(iter(sim.routers[origin].interfaces.values())).area
    return sim.routers[holder].database(sim.now)[area][(int(LsType.ROUTER), rid, rid)]


def expected_links(sim: Simulation) -> dict[str, set[tuple[str, int]]]:
    """Ground truth: each router ID -> {(neighbour router ID, own cost)} over up links."""
    truth: dict[str, set] = {r.router_id: set() for r in sim.routers.values()}
    for link in sim.links:
        if not link.up:
            continue
        (a, addr_a), (b, addr_b) = link.ends
        ra, rb = sim.routers[a], sim.routers[b]
        truth[ra.router_id].add((rb.router_id, ra.interfaces[addr_a].cost))
        truth[rb.router_id].add((ra.router_id, rb.interfaces[addr_b].cost))
    return truth


def advertised_links(lsa: RouterLSA) -> set[tuple[str, int]]:
    return {(link.link_id, link.metric) for link in lsa.links
            if link.link_type == LinkType.POINT_TO_POINT}


def shortest_costs(truth: dict[str, set[tuple[str, int]]], source: str) -> dict[str, int]:
    """Dijkstra over the directed cost graph ``truth``."""
    dist, heap = {source: 0}, [(0, source)]
    while heap:
        d, v = heapq.heappop(heap)
        if d > dist[v]:
            continue
        for w, cost in truth[v]:
            if d + cost < dist.get(w, 1 << 60):
                dist[w] = d + cost
                heapq.heappush(heap, (d + cost, w))
    return dist

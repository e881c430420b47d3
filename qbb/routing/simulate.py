"""A deterministic discrete-event simulation of QBB routers in virtual time.

:class:`Simulation` joins :class:`~qbb.routing.router.Router` instances by simulated
point-to-point links with a one-way delay and an optional loss probability (drawn from
a seeded ``random.Random``, so a run is reproducible).  Time is virtual: the loop jumps
to the earliest of the next packet delivery and the routers' ``next_timer()``; no
clock, no threads, no trio.  A link can be taken down (packets on it are lost; by
default the routers are not told, so they notice through RouterDeadInterval) and up
again (both interfaces are signalled up).

:meth:`Simulation.run_until_converged` stops at the first instant the network is
*converged*: on every up link both ends see each other Full, on every down link neither
does, no router has unacknowledged, requested or deferred LSAs, no Database
Description / Request / Update / Ack packet is in flight, and all routers of an area that
are connected by up links hold identical LSDBs (same instances of the same LSAs).
Counts (LSAs sent, packets by type, losses) are cumulative in :attr:`Simulation.counts`.
A router whose timer is still due after ``handle_timer`` would stop virtual time, so
:meth:`Simulation.step` raises RuntimeError instead of spinning.

:func:`make_router` builds one node's router from an address plan (also used by
:class:`qbb.node.QBBNode`); :func:`random_network` builds a random connected single-area
topology with addresses from :func:`qbb.routing.addressing.plan_addresses`;
:func:`converge` measures a cold start of it and :func:`reconverge` a link failure and
repair (used by ``qbb bench routing``).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from qbb.routing.addressing import AddressPlan, TopologySpec, area_id, plan_addresses
from qbb.routing.interface import InterfaceConfig
from qbb.routing.neighbor import NeighborState
from qbb.routing.router import Router, RouterConfig, compute_tables

__all__ = ["SimLink", "Simulation", "Timers", "build_network", "converge", "make_router",
           "random_edges", "random_network", "reconverge"]

_PACKET_NAMES = {1: "hello", 2: "dd", 3: "lsr", 4: "lsu", 5: "lsack"}


@dataclass(frozen=True)
class Timers:
    """Interface timers for a simulated network (seconds; short test defaults)."""

    hello: int = 1
    dead: int = 4
    rxmt: int = 2
    inf_trans_delay: int = 1
    min_ls_interval: float = 1.0
    min_ls_arrival: float = 0.0


@dataclass
class SimLink:
    """A bidirectional link: ``ends[i] = (router name, interface address)``."""

    ends: tuple[tuple[str, str], tuple[str, str]]
    delay: float = 0.01
    loss: float = 0.0
    up: bool = True


class Simulation:
    """Routers and links in virtual time (see the module docstring)."""

    def __init__(self, seed: int = 0) -> None:
        self.now = 0.0
        self.routers: dict[str, Router] = {}
        self.links: list[SimLink] = []
        self.counts: Counter[str] = Counter()
        self._peer: dict[tuple[str, str], tuple[SimLink, str, str]] = {}
        self._queue: list[tuple[float, int, str, str, bytes, int]] = []
        self._timers: dict[str, float | None] = {}
        self._seq = 0
        self._rng = random.Random(seed)
        self._busy = 0  # non-Hello packets in flight
        self._off: set[str] = set()

    def add_router(self, name: str, router: Router) -> Router:
        self.routers[name] = router
        self._timers[name] = router.next_timer()
        return router

    def add_link(self, a: tuple[str, str], b: tuple[str, str], delay: float = 0.01,
                 loss: float = 0.0) -> SimLink:
        link = SimLink((a, b), delay, loss, up=False)
        self.links.append(link)
        self._peer[a] = (link, *b)
        self._peer[b] = (link, *a)
        return link

    def set_link(self, link: SimLink, up: bool, signal: bool = False) -> None:
        """Take ``link`` down or up; ``signal`` tells the routers of a failure too."""
        link.up = up
        for name, address in link.ends:
            router = self.routers[name]
            if up:
                self._call(name, lambda r=router, a=address: r.interface_up(a, self.now))
            elif signal:
                self._call(name, lambda r=router, a=address: r.interface_down(a, self.now))

    def power_off(self, name: str) -> None:
        """Switch router ``name`` off for good: its links go down, its timers stop."""
        for link in self.links:
            if any(n == name for n, _ in link.ends):
                link.up = False
        self._off.add(name)
        self._timers[name] = None

    def start(self) -> None:
        """Bring every link up at the current time."""
        for link in self.links:
            self.set_link(link, True)

    # -- the event loop -------------------------------------------------------------

    def _call(self, name: str, action: Callable[[], list]) -> None:
        if name in self._off:
            return
        for address, data in action():
            self._transmit(name, address, data)
        self._timers[name] = self.routers[name].next_timer()

    def _transmit(self, name: str, address: str, data: bytes) -> None:
        kind = _PACKET_NAMES.get(data[1] if len(data) > 1 else 0, "other")
        self.counts[f"sent_{kind}"] += 1
        link, peer, peer_address = self._peer[(name, address)]
        if not link.up or (link.loss and self._rng.random() < link.loss):
            self.counts["lost"] += 1
            return
        self._seq += 1
        busy = int(kind != "hello")
        self._busy += busy
        heapq.heappush(self._queue, (self.now + link.delay, self._seq, peer, peer_address,
                                     data, busy))

    def step(self) -> float | None:
        """Process the next event; its time, or None when nothing is scheduled."""
        timer = min(((t, n) for n, t in self._timers.items() if t is not None), default=None)
        packet_time = self._queue[0][0] if self._queue else None
        if timer is None and packet_time is None:
            return None
        if timer is None or (packet_time is not None and packet_time <= timer[0]):
            when, _, name, address, data, busy = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            self._busy -= busy
            link = self._peer[(name, address)][0]
            if not link.up:
                self.counts["lost"] += 1
            else:
                router = self.routers[name]
                self._call(name, lambda: router.receive(address, data, self.now))
            return self.now
        self.now = max(self.now, timer[0])
        router = self.routers[timer[1]]
        self._call(timer[1], lambda: router.handle_timer(self.now))
        due = self._timers[timer[1]]
        if due is not None and due <= self.now:  # would spin at this instant for ever
            raise RuntimeError(f"router {timer[1]}: timer still due at {self.now} after "
                               "handle_timer")
        return self.now

    def run(self, until: float) -> None:
        """Process events up to virtual time ``until``."""
        while True:
            upcoming = self._next_time()
            if upcoming is None or upcoming > until:
                break
            self.step()
        self.now = max(self.now, until)

    def run_until_converged(self, limit: float = 600.0) -> float | None:
        """Run until :meth:`converged`; the virtual time then, or None past ``now+limit``."""
        deadline = self.now + limit
        while True:
            if self._busy == 0 and self.converged():
                return self.now
            upcoming = self._next_time()
            if upcoming is None or upcoming > deadline:
                return None
            self.step()

    def _next_time(self) -> float | None:
        times = [t for t in self._timers.values() if t is not None]
        if self._queue:
            times.append(self._queue[0][0])
        return min(times) if times else None

    # -- observation ------------------------------------------------------------------

    def lsas_sent(self) -> int:
        return sum(r.stats["lsas_sent"] for r in self.routers.values())

    def converged(self) -> bool:
        """See the module docstring; routers switched off are left out."""
        for link in self.links:
            for name, address in link.ends:
                if name in self._off:
                    continue
                nbr = self.routers[name].interfaces[address].neighbor
                if link.up != (nbr is not None and nbr.state is NeighborState.FULL):
                    return False
        if any(r.pending() for n, r in self.routers.items() if n not in self._off):
            return False
        return all(len({self._instances(n, area) for n in group}) == 1
                   for area, group in self.components())

    def routes_complete(self) -> bool | None:
        """Every router has a route to every node address (None without route computation)."""
        if compute_tables is None:
            return None
        live = [r for n, r in self.routers.items() if n not in self._off]
        return all(r.tables(self.now).main.lookup(o.router_id) is not None
                   for r in live for o in live)

    def _instances(self, name: str, area: str) -> frozenset:
        return frozenset(self.routers[name].lsdb(area).instances().items())

    def components(self) -> list[tuple[str, list[str]]]:
        """``(area, routers)`` for each set of routers joined by up links of an area."""
        parent = {(n, i.area): (n, i.area) for n, r in self.routers.items()
                  if n not in self._off for i in r.interfaces.values()}

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x
        for link in self.links:
            (a, addr_a), (b, _) = link.ends
            area = self.routers[a].interfaces[addr_a].area
            if link.up and a not in self._off and b not in self._off:
                parent[find((a, area))] = find((b, area))
        groups: dict = {}
        for node in parent:
            groups.setdefault(find(node), []).append(node[0])
        return [(root[1], sorted(names)) for root, names in groups.items()]


# -- topologies ------------------------------------------------------------------------

def make_router(name: str, plan: AddressPlan, cost_of: Callable[[str, str], int],
                timers: Timers = Timers()) -> Router:
    """The router of node ``name``: one interface per link of the address plan.

    Router ID = node address, home area = the node's area; per link (in peer-name order)
    address, area and mask from ``plan``, output cost ``cost_of(name, peer)`` and the
    interface timers of ``timers``.  The one builder of :func:`build_network` and of the
    QBB node (:func:`qbb.node.build_router`)."""
    node = plan.nodes[name]
    router = Router(node.address, RouterConfig(
        home_area=area_id(node.area), min_ls_interval=timers.min_ls_interval,
        min_ls_arrival=timers.min_ls_arrival))
    for link in plan.links_of(name):
        router.add_interface(InterfaceConfig(
            address=link.address_of(name), area=area_id(link.area), mask=link.mask,
            cost=cost_of(name, link.peer_of(name)), hello_interval=timers.hello,
            router_dead_interval=timers.dead, rxmt_interval=timers.rxmt,
            inf_trans_delay=timers.inf_trans_delay))
    return router


def random_edges(n: int, extra: int, rng: random.Random) -> list[tuple[int, int]]:
    """A random spanning tree on ``n`` nodes plus up to ``extra`` further edges."""
    edges = {(rng.randrange(i), i) for i in range(1, n)}
    for _ in range(extra):
        a, b = sorted(rng.sample(range(n), 2)) if n > 1 else (0, 0)
        if a != b:
            edges.add((a, b))
    return sorted(edges)


def build_network(nodes: Mapping[str, int], links: Sequence[tuple[str, str]],
                  costs: Mapping[tuple[str, str], int] | None = None, *,
                  timers: Timers = Timers(), delay: float = 0.01, loss: float = 0.0,
                  seed: int = 0, link_areas: Mapping | None = None) -> Simulation:
    """Routers named ``nodes`` (name -> area number) joined by ``links``.

    ``costs[(a, b)]`` is the cost of ``a``'s interface towards ``b`` (default 10).
    Addresses come from :func:`~qbb.routing.addressing.plan_addresses`.
    """
    plan = plan_addresses(TopologySpec(nodes=dict(nodes), links=list(links),
                                       link_areas=dict(link_areas or {})))
    costs = costs or {}
    sim = Simulation(seed)
    for name in plan.nodes:
        sim.add_router(name, make_router(name, plan, lambda a, b: costs.get((a, b), 10),
                                         timers))
    for (a, b), link in plan.links.items():
        sim.add_link((a, link.address_of(a)), (b, link.address_of(b)), delay, loss)
    return sim


def random_network(n: int, seed: int = 0, extra: int | None = None, **kwargs) -> Simulation:
    """A random connected single-area network of ``n`` routers, costs 1..20 per direction."""
    rng = random.Random(seed)
    edges = random_edges(n, n // 2 if extra is None else extra, rng)
    names = [f"n{i:03d}" for i in range(n)]
    links = [(names[a], names[b]) for a, b in edges]
    costs = {}
    for a, b in links:
        costs[(a, b)], costs[(b, a)] = rng.randint(1, 20), rng.randint(1, 20)
    return build_network({name: 1 for name in names}, links, costs, seed=seed, **kwargs)


def converge(n: int = 20, seed: int = 0, **kwargs) -> dict:
    """Cold start of a random ``n``-node network: LSAs sent and virtual seconds to converge."""
    sim = random_network(n, seed, **kwargs)
    sim.start()
    seconds = sim.run_until_converged()
    return {"nodes": n, "links": len(sim.links), "converged": seconds is not None,
            "routes_complete": sim.routes_complete(), "seconds": seconds,
            "lsas_sent": sim.lsas_sent(),
            "packets": sum(v for k, v in sim.counts.items() if k.startswith("sent_"))}


def reconverge(n: int = 20, seed: int = 0, signal: bool = False, **kwargs) -> dict:
    """Converge, fail one link, reconverge, repair it, reconverge; figures per phase."""
    sim = random_network(n, seed, **kwargs)
    sim.start()
    sim.run_until_converged()
    link = random.Random(seed).choice(sim.links)
    result = {}
    for phase, up in (("down", False), ("up", True)):
        start, lsas = sim.now, sim.lsas_sent()
        sim.set_link(link, up, signal=signal)
        done = sim.run_until_converged()
        result[phase] = {"converged": done is not None,
                         "seconds": None if done is None else done - start,
                         "lsas_sent": sim.lsas_sent() - lsas}
    return result

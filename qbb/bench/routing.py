"""Route computation benchmark: ``qbb bench routing``.

One case per network size (100, 1,000 and 5,000 QBB nodes; ``quick``: 100 and 1,000):
the time :func:`qbb.routing.spf.compute_tables` takes to build, for one router, every
table of seed 002 §2.5.2 from a single-area link-state database: the area graph, the
shortest-path tree, the standard routing table, one table per outgoing interface and
the extended routing table.  Topologies are random connected graphs of average degree 4
(a random spanning tree plus random extra links) with asymmetric link costs 1-100,
written as the Router-LSAs of the routing conventions (docs/routing.md); the measured
router is the one of median degree.  Target (``extra``): 200 ms at 1,000 nodes.

Convergence (``convergence/20``): the sans-IO protocol of :mod:`qbb.routing.simulate` on a
random 20-node network in virtual time — cold start, then one link failing (dead interval)
and coming back — with the LSAs sent and the virtual seconds until every node's tables
are complete and its LSDB agrees with its area's.

Two cases per size: ``all-tables`` rebuilds the area graph from the LSAs every time (the
cost after a topology change; the headline figure) and ``all-tables-memoised`` calls again
on the same LSDB objects, so the memoised graph is reused.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from qbb.bench import Result, time_per_call
from qbb.routing.lsa import LinkType, RouterLink, RouterLSA, lsa_key
from qbb.routing.spf import clear_cache, compute_tables
from qbb.routing.table import int_ip

BENCH = "routing"
TARGET_MS = {1000: 200.0}
AREA = "0.0.0.1"
_MASK = "255.255.255.252"


def random_links(n: int, degree: float, rng: random.Random) -> list[tuple[int, int]]:
    """Undirected links of a random connected graph with ``n`` nodes and mean ``degree``."""
    order = list(range(n))
    rng.shuffle(order)
    links = {tuple(sorted((order[i], order[rng.randrange(i)]))) for i in range(1, n)}
    target = max(len(links), int(n * degree / 2))
    while len(links) < target:
        a, b = rng.randrange(n), rng.randrange(n)
        if a != b:
            links.add((min(a, b), max(a, b)))
    return sorted(links)


def database(n: int, degree: float = 4.0, seed: int = 1) -> tuple[dict, list[str]]:
    """A one-area LSDB of a random topology and the router ids by node number."""
    rng = random.Random(seed)
    ids = [int_ip(0x0A000000 + 4 * k + 1) for k in range(n)]
    links: list[list[RouterLink]] = [[] for _ in range(n)]
    for k, (a, b) in enumerate(random_links(n, degree, rng)):
        net = 0xAC000000 + 4 * k
        for me, other, host in ((a, b, 1), (b, a, 2)):
            cost = rng.randint(1, 100)
            links[me].append(RouterLink(link_id=ids[other], link_data=int_ip(net + host),
                                        link_type=LinkType.POINT_TO_POINT, metric=cost))
            links[me].append(RouterLink(link_id=int_ip(net), link_data=_MASK,
                                        link_type=LinkType.STUB, metric=cost))
    lsdb = {}
    for k in range(n):
        block = RouterLink(link_id=int_ip(0x0A000000 + 4 * k), link_data=_MASK,
                           link_type=LinkType.STUB, metric=0)
        lsa = RouterLSA(link_state_id=ids[k], advertising_router=ids[k],
                        links=(*links[k], block))
        lsdb[lsa_key(lsa)] = lsa
    return {AREA: lsdb}, ids


def _median_degree_router(db: dict, ids: list[str]) -> tuple[str, int]:
    lsdb = db[AREA]
    degree = {r: sum(link.link_type == LinkType.POINT_TO_POINT for link in lsdb[(1, r, r)].links)
              for r in ids}
    ranked = sorted(ids, key=lambda r: degree[r])
    root = ranked[len(ranked) // 2]
    return root, degree[root]


def _measure(root: str, db: dict, budget: float, cold: bool) -> float:
    def call() -> None:
        if cold:
            clear_cache()
        compute_tables(root, db)
    return time_per_call(call, budget)


def run(quick: bool) -> Iterator[Result]:
    """Time to compute all routing tables of one router (100 / 1,000 / 5,000 nodes)."""
    sizes = (100, 1000) if quick else (100, 1000, 5000)
    for n in sizes:
        db, ids = database(n)
        root, degree = _median_degree_router(db, ids)
        tables = compute_tables(root, db)
        p2p = sum(link.link_type == LinkType.POINT_TO_POINT
                  for lsa in db[AREA].values() for link in lsa.links)
        extra = {"nodes": n, "links": p2p // 2, "router_degree": degree,
                 "per_interface_tables": len(tables.per_interface),
                 "destinations": len(tables.main)}
        budget = (0.4 if quick else 1.5) if n <= 1000 else 4.0
        for case, cold in (("all-tables", True), ("all-tables-memoised", False)):
            seconds = _measure(root, db, budget, cold)
            row = dict(extra, graph="rebuilt from the LSAs" if cold else "memoised (same LSDB)")
            if n in TARGET_MS:
                row.update(target_ms=TARGET_MS[n], meets_target=seconds * 1e3 <= TARGET_MS[n])
            yield Result(BENCH, f"{case}/{n}", "time", round(seconds * 1e3, 3), "ms", row)
    yield from convergence(20)


def convergence(n: int) -> Iterator[Result]:
    """Cold start, link failure and repair of an ``n``-node network, in virtual time."""
    from qbb.routing.simulate import SimLink, Timers, converge, reconverge

    cold = converge(n)
    defaults = Timers()
    timers = {"hello_s": defaults.hello, "dead_s": defaults.dead, "rxmt_s": defaults.rxmt,
              "link_delay_s": SimLink.delay}
    phases = {"cold-start": cold, **reconverge(n)}
    for phase, figures in phases.items():
        extra = dict(timers, nodes=n, converged=figures["converged"],
                     lsas_sent=figures["lsas_sent"])
        case = f"convergence/{n}/{phase}"
        yield Result(BENCH, case, "virtual_time", figures["seconds"] or -1.0, "s", extra)
        yield Result(BENCH, case, "lsas_sent", figures["lsas_sent"], "LSAs", extra)

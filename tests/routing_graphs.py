"""Link-state databases built from networkx graphs, and networkx oracles for route computation.

A :class:`Topology` is a directed networkx graph of QBB nodes: one edge per direction of
each QBB link, with attributes ``cost`` (that direction's outgoing cost), ``area`` (the
link's area, both directions alike) and ``listed`` (False: the tail omits the link from
its Router-LSA, i.e. its adjacency is not full; the link then fails the bidirectional
check).  :meth:`Topology.database` writes the Router-LSAs of the shared routing
conventions (docs/routing.md): per listed link a point-to-point link and the link's /30
stub, plus the node's /30 block (stub, metric 0) in the node's home area.

The oracles recompute what :func:`qbb.routing.spf.compute_tables` should return with
networkx shortest paths, independently of the code under test: per-interface tables on
the graph with the root's other out-edges removed, and inter-area costs as shortest paths
over the overlay graph of area border routers.  Rows are compared as :func:`row` tuples.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import networkx as nx
from hypothesis import strategies as st

from qbb.routing.lsa import LinkType, RouterFlags, RouterLink, RouterLSA, lsa_key
from qbb.routing.table import DestType, PathType, Route

BLOCK_MASK = LINK_MASK = "255.255.255.252"
_INF = float("inf")


def ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def num(address: str) -> int:
    return int(ipaddress.IPv4Address(address))


def node_address(n: int) -> str:
    """Node address of the ``n``-th QBB node: first host of block 10.0.0.0 + 4n."""
    return ip(0x0A000000 + 4 * n + 1)


def block_of(router: str) -> str:
    return ip(num(router) & ~3)


def area_id(k: int) -> str:
    return ip(k)


@dataclass
class Topology:
    graph: nx.DiGraph
    home: dict[str, str] = field(default_factory=dict)  # area of each node block
    networks: dict[frozenset, str] = field(default_factory=dict)  # link -> /30 network

    def __post_init__(self) -> None:
        for k, (u, v) in enumerate(sorted({frozenset(e) for e in self.graph.edges},
                                          key=lambda s: sorted(map(num, s)))):
            self.networks.setdefault(frozenset((u, v)), ip(0xAC100000 + 4 * k))
        for r in self.graph.nodes:
            areas = self.areas_of(r)
            self.home.setdefault(r, min(areas, key=num) if areas else area_id(1))

    def areas_of(self, router: str) -> set[str]:
        return {d["area"] for _, _, d in self.graph.out_edges(router, data=True)} | (
            {self.home[router]} if router in self.home else set())

    def areas(self) -> set[str]:
        return {a for r in self.graph.nodes for a in self.areas_of(r)}

    def address(self, u: str, v: str) -> str:
        """u's interface address on the link to v (lower router id gets .1)."""
        net = num(self.networks[frozenset((u, v))])
        return ip(net + (1 if num(u) < num(v) else 2))

    def link_network(self, u: str, v: str) -> str:
        return self.networks[frozenset((u, v))]

    def listed(self, u: str, v: str) -> bool:
        return self.graph.edges[u, v].get("listed", True)

    def usable(self, u: str, v: str) -> bool:
        return self.listed(u, v) and self.listed(v, u)

    def stubs(self, router: str, area: str) -> list[tuple[str, str, int]]:
        """(network, mask, metric) of the router's stub links in ``area``."""
        out = [(self.link_network(router, v), LINK_MASK, d["cost"])
               for _, v, d in self.graph.out_edges(router, data=True)
               if d["area"] == area and self.listed(router, v)]
        if self.home[router] == area:
            out.append((block_of(router), BLOCK_MASK, 0))
        return out

    def router_lsa(self, router: str, area: str) -> RouterLSA:
        links = []
        for _, v, d in sorted(self.graph.out_edges(router, data=True), key=lambda e: num(e[1])):
            if d["area"] == area and self.listed(router, v):
                links.append(RouterLink(link_id=v, link_data=self.address(router, v),
                                        link_type=LinkType.POINT_TO_POINT, metric=d["cost"]))
        for net, mask, metric in self.stubs(router, area):
            links.append(RouterLink(link_id=net, link_data=mask, link_type=LinkType.STUB,
                                    metric=metric))
        flags = RouterFlags.B if len(self.areas_of(router)) > 1 else RouterFlags(0)
        return RouterLSA(link_state_id=router, advertising_router=router, flags=flags,
                         links=links)

    def database(self, summaries=None) -> dict[str, dict]:
        """Per-area LSDBs: Router-LSAs plus the given ``{area: [SummaryLSA]}``."""
        db: dict[str, dict] = {a: {} for a in self.areas()}
        for r in self.graph.nodes:
            for a in self.areas_of(r):
                lsa = self.router_lsa(r, a)
                db[a][lsa_key(lsa)] = lsa
        for a, lsas in (summaries or {}).items():
            for lsa in lsas:
                db[a][lsa_key(lsa)] = lsa
        return db

    def view(self, router: str, database: dict) -> dict:
        """The part of ``database`` a router holds: its own areas."""
        return {a: database[a] for a in self.areas_of(router)}

    def area_graph(self, area: str) -> nx.DiGraph:
        """The usable directed edges of one area (both ends list the link)."""
        g = nx.DiGraph()
        g.add_nodes_from(r for r in self.graph.nodes if area in self.areas_of(r))
        g.add_edges_from((u, v, d) for u, v, d in self.graph.edges(data=True)
                         if d["area"] == area and self.usable(u, v))
        return g


# -- hypothesis strategy ------------------------------------------------------------

@st.composite
def topologies(draw, min_nodes: int = 2, max_nodes: int = 9, max_areas: int = 1,
               max_cost: int = 6, one_way: bool = False) -> Topology:
    """Random connected topologies: asymmetric costs, optional areas and one-way links.

    Small cost ranges make equal-cost ties frequent, so tie-breaking gets exercised.
    """
    n = draw(st.integers(min_nodes, max_nodes))
    labels = draw(st.permutations(range(n)))
    names = [node_address(k) for k in labels]
    edges = {(draw(st.integers(0, i - 1)), i) for i in range(1, n)}
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                          max_size=n))
    edges |= {(min(a, b), max(a, b)) for a, b in extra if a != b}
    homes = [draw(st.integers(1, max_areas)) for _ in range(n)]
    g = nx.DiGraph()
    g.add_nodes_from(names)
    for a, b in sorted(edges):
        area = area_id(homes[draw(st.sampled_from((a, b)))])
        for u, v in ((a, b), (b, a)):
            listed = not (one_way and draw(st.integers(0, 5)) == 0)
            g.add_edge(names[u], names[v], cost=draw(st.integers(1, max_cost)), area=area,
                       listed=listed)
    return Topology(g, home={names[i]: area_id(homes[i]) for i in range(n)})


# -- oracles ------------------------------------------------------------------------

def row(route: Route) -> tuple:
    """The comparable content of a route: (cost, path type, interface, area, adv router)."""
    hop = None if route.next_hop is None else route.next_hop.interface
    return (route.cost, route.path_type, hop, route.area, route.advertising_router)


def _rank(item: tuple) -> tuple:
    cost, path, hop, area, adv = item
    return (path != PathType.INTRA_AREA, cost, -1 if hop is None else num(hop), num(area),
            num(adv))


def _keep(table: dict, key: tuple, item: tuple) -> None:
    if key not in table or _rank(item) < _rank(table[key]):
        table[key] = item


def interfaces(topo: Topology, root: str) -> dict[str, tuple[str, str, int]]:
    """Usable interfaces of ``root``: address -> (neighbour, area, cost)."""
    return {topo.address(root, v): (v, d["area"], d["cost"])
            for _, v, d in topo.graph.out_edges(root, data=True) if topo.usable(root, v)}


def local_rows(topo: Topology, root: str) -> dict:
    out: dict = {}
    for area in topo.areas_of(root):
        if topo.home[root] == area:
            _keep(out, (DestType.NETWORK, block_of(root), BLOCK_MASK),
                  (0, PathType.INTRA_AREA, None, area, root))
    return out


def interface_rows(topo: Topology, database: dict, root: str, address: str) -> dict:
    """Expected per-interface table: networkx on the graph without root's other out-edges."""
    nbr, area, cost = interfaces(topo, root)[address]
    g = topo.area_graph(area)
    g.remove_edges_from([(root, v) for v in list(g.successors(root)) if v != nbr])
    dist = nx.single_source_dijkstra_path_length(g, root, weight="cost")
    table = dict(local_rows(topo, root))
    _keep(table, (DestType.NETWORK, topo.link_network(root, nbr), LINK_MASK),
          (cost, PathType.INTRA_AREA, address, area, root))
    for v, d in dist.items():
        if v == root:
            continue
        _keep(table, (DestType.ROUTER, v, None), (d, PathType.INTRA_AREA, address, area, v))
        for net, mask, metric in topo.stubs(v, area):
            _keep(table, (DestType.NETWORK, net, mask),
                  (d + metric, PathType.INTRA_AREA, address, area, v))
    for lsa in database[area].values():
        if getattr(lsa, "ls_type", None) == 3 and lsa.advertising_router in dist \
                and lsa.advertising_router != root \
                and len(topo.areas_of(lsa.advertising_router)) > 1:
            net = ip(num(lsa.link_state_id) & num(lsa.network_mask))
            _keep(table, (DestType.NETWORK, net, lsa.network_mask),
                  (dist[lsa.advertising_router] + lsa.metric, PathType.INTER_AREA, address,
                   area, lsa.advertising_router))
    return table


def expected_tables(topo: Topology, database: dict, root: str) -> tuple[dict, dict, dict]:
    """(main, per-interface, extended) rows that compute_tables must produce."""
    local = local_rows(topo, root)
    per = {a: interface_rows(topo, database, root, a) for a in interfaces(topo, root)}
    main = dict(local)
    extended: dict = {k: [v] for k, v in local.items()}
    for table in per.values():
        for key, item in table.items():
            _keep(main, key, item)
            if item[2] is not None:
                extended.setdefault(key, []).append(item)
    return main, per, {k: sorted(v, key=_rank) for k, v in extended.items()}


def border_routers(topo: Topology) -> set[str]:
    return {r for r in topo.graph.nodes if len(topo.areas_of(r)) > 1}


def all_lengths(topo: Topology) -> dict[str, dict]:
    """Per area, networkx all-pairs intra-area distances."""
    return {a: dict(nx.all_pairs_dijkstra_path_length(topo.area_graph(a), weight="cost"))
            for a in topo.areas()}


def all_networks(topo: Topology) -> set[tuple[str, str]]:
    return {(net, mask) for r in topo.graph.nodes for a in topo.areas_of(r)
            for net, mask, _ in topo.stubs(r, a)}


def optimal_costs(topo: Topology, network: tuple[str, str], lengths: dict) -> dict[str, float]:
    """Believed cost of every router to ``network`` under the no-backbone rule.

    Routers that reach the network intra-area use that cost; the others take the
    shortest path over the overlay graph (router -> ABR of a common area, weight the
    intra-area distance) to such a router.  ``lengths`` is :func:`all_lengths`.
    """
    intra: dict[str, float] = {}
    overlay = nx.DiGraph()
    borders = border_routers(topo)
    for area, pairs in lengths.items():
        owners = {r: m for r in pairs for n_, k, m in topo.stubs(r, area) if (n_, k) == network}
        for r, reach in pairs.items():
            for o, metric in owners.items():
                if o in reach:
                    intra[r] = min(intra.get(r, _INF), reach[o] + metric)
            for b in borders & set(reach):
                if b != r and (not overlay.has_edge(b, r) or overlay.edges[b, r]["w"] > reach[b]):
                    overlay.add_edge(b, r, w=reach[b])  # reversed: from the ABR back to r
    overlay.remove_edges_from([(u, v) for u, v in list(overlay.edges) if v in intra])
    for source, cost in intra.items():
        overlay.add_edge("sink", source, w=cost)
    if "sink" not in overlay:
        return {}
    found = nx.single_source_dijkstra_path_length(overlay, "sink", weight="w")
    return {r: d for r, d in found.items() if r != "sink"}


def converge(topo: Topology, max_rounds: int = 60) -> tuple[dict, int]:
    """Iterate summary origination and route computation to a fixpoint.

    Every round each area border router computes its tables from the current database
    and replaces its Summary-LSAs with :func:`summaries_to_originate`'s answer (all
    routers at once).  Returns the final database and the number of rounds.
    """
    from qbb.routing.interarea import summaries_to_originate
    from qbb.routing.spf import compute_tables

    own: dict[str, dict] = {}
    for rounds in range(1, max_rounds + 1):
        database = topo.database(_merge(own))
        new = {}
        for r in sorted(border_routers(topo)):
            view = topo.view(r, database)
            new[r] = summaries_to_originate(r, view, compute_tables(r, view))
        if new == own:
            return database, rounds
        own = new
    raise AssertionError(f"no fixpoint after {max_rounds} rounds")


def _merge(own: dict[str, dict]) -> dict[str, list]:
    merged: dict[str, list] = {}
    for per_area in own.values():
        for area, lsas in per_area.items():
            merged.setdefault(area, []).extend(lsas)
    return merged

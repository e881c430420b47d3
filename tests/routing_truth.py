"""Ground truth for converged QBB routers, computed with networkx from the topology alone.

A :class:`Net` is what a test draws: nodes (name -> declared area), undirected links,
each link's area and each direction's cost.  :class:`Truth` derives from it, without
looking at any router, LSDB or LSA, the routing tables that docs/routing.md defines:

* the Router-LSA contents of the shared conventions (per link: the neighbour and the
  link's /30 stub at the own outgoing cost, both in the link's area; the node's /30
  block at metric 0 in its declared area if it has an interface there, else in every
  area it has an interface in - :class:`qbb.routing.router.RouterConfig` ``home_area``);
* per-interface tables (seed §2.5.2): for interface *i* of router *r* in area *A* with
  neighbour *v*, routers and stubs of *A* at ``cost(i) + dist_{G_A - r}(v, x)`` (+ stub
  metric), the link of *i* itself at ``cost(i)``, and inter-area routes through the
  Summary-LSAs of area border routers *b* of *A* reached from *v* at
  ``cost(i) + dist_{G_A - r}(v, b) + metric``; the node's own block is local;
* preference (path type, cost, interface address with local first, area id,
  advertising router id), standard table = best over the per-interface tables, extended
  table = the per-interface routes of each destination in that order;
* Summary-LSAs (split horizon by area, docs/routing.md "Inter-area routing without a
  backbone"): an ABR advertises into each of its areas X every network of its standard
  table whose route's area is not X and that is not its own stub in X, metric = cost.
  The summaries depend on the tables and the tables on the summaries: :class:`Truth`
  iterates both from no summaries to the fixpoint (it exists and is unique, and every
  advertised metric stays at or above the optimum on the way).

:func:`overlay_costs` is a second, closed-form oracle for the standard-table costs
(intra-area distance if the network is reachable inside an area of the router, else
the shortest path over the overlay graph of area border routers), used to cross-check
the fixpoint iteration.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import networkx as nx
from hypothesis import strategies as st

from qbb.errors import ConfigError
from qbb.routing.addressing import AddressPlan, TopologySpec, area_id, plan_addresses
from qbb.routing.table import DestType, PathType

INTRA, INTER = PathType.INTRA_AREA, PathType.INTER_AREA
LS_INFINITY = 0xFFFFFF
_INF = float("inf")


def num(address: str) -> int:
    return int(ipaddress.IPv4Address(address))


def ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def net_key(network: str, mask: str) -> tuple:
    return (DestType.NETWORK, network, mask)


def rtr_key(router_id: str) -> tuple:
    return (DestType.ROUTER, router_id, None)


@dataclass(frozen=True)
class Net:
    """A drawn topology: ``costs[(a, b)]`` is a's outgoing cost towards b."""

    nodes: dict[str, int]
    links: list[tuple[str, str]]
    link_areas: dict[tuple[str, str], int]
    costs: dict[tuple[str, str], int]


@dataclass(frozen=True)
class Iface:
    address: str
    neighbor: str  # router id
    area: str
    cost: int
    network: str
    mask: str


@dataclass
class Truth:
    """Expected tables of every router of ``net`` (router id -> ...).

    Addresses are planned with every link of ``net``; links in ``down`` are then left
    out (neither end lists a neighbour or stub for them).  Choose ``down`` so that every
    node keeps an up link in each area it has links in (see :func:`can_fail`), as a
    router's areas are its configured interfaces' areas, up or down.
    """

    net: Net
    down: frozenset = frozenset()  # links (sorted name pairs) that are down
    plan: AddressPlan = field(init=False)
    rid: dict[str, str] = field(init=False)  # name -> router id
    ifaces: dict[str, list[Iface]] = field(init=False)
    stubs: dict[str, dict[str, list[tuple[str, str, int]]]] = field(init=False)
    graphs: dict[str, nx.DiGraph] = field(init=False)
    summaries: dict[str, dict[str, dict[tuple, int]]] = field(init=False)  # area->abr->net->m
    tables: dict[str, tuple[dict, dict, dict]] = field(init=False)
    rounds: int = field(init=False)

    def __post_init__(self) -> None:
        net = self.net
        self.plan = plan_addresses(TopologySpec(nodes=net.nodes, links=net.links,
                                                link_areas=net.link_areas))
        self.rid = {n: a.address for n, a in self.plan.nodes.items()}
        self.ifaces = {r: [] for r in self.rid.values()}
        for (a, b), link in self.plan.links.items():
            if (a, b) in self.down:
                continue
            for me, peer in ((a, b), (b, a)):
                self.ifaces[self.rid[me]].append(Iface(
                    link.address_of(me), self.rid[peer], area_id(link.area),
                    net.costs[(me, peer)], link.network, link.mask))
        self.stubs = {r: self._stubs(name, r) for name, r in self.rid.items()}
        self.graphs = {}
        for r, ifaces in self.ifaces.items():
            for i in ifaces:
                g = self.graphs.setdefault(i.area, nx.DiGraph())
                g.add_edge(r, i.neighbor, cost=i.cost)
        self._fixpoint()

    # -- the topology as routers advertise it ----------------------------------------

    def areas_of(self, r: str) -> set[str]:
        return {i.area for i in self.ifaces[r]}

    def is_border(self, r: str) -> bool:
        return len(self.areas_of(r)) > 1

    def _stubs(self, name: str, r: str) -> dict[str, list[tuple[str, str, int]]]:
        node = self.plan.nodes[name]
        areas = self.areas_of(r)
        home = area_id(node.area)
        out = {a: [(i.network, i.mask, i.cost) for i in self.ifaces[r] if i.area == a]
               for a in areas}
        for a in ({home} if home in areas else areas):
            out[a].append((node.block, node.mask, 0))
        return out

    def networks(self) -> set[tuple[str, str]]:
        return {(n, m) for per in self.stubs.values() for s in per.values() for n, m, _ in s}

    def owners(self, area: str, network: tuple[str, str]) -> dict[str, int]:
        return {r: m for r, per in self.stubs.items() for n, k, m in per.get(area, ())
                if (n, k) == network}

    # -- tables -----------------------------------------------------------------------

    @staticmethod
    def rank(row: tuple) -> tuple:
        """docs/routing.md preference of a row (cost, path, hop, area, adv)."""
        cost, path, hop, area, adv = row
        return (path is not INTRA, cost, -1 if hop is None else num(hop[0]), num(area),
                num(adv))

    def _keep(self, table: dict, key: tuple, row: tuple) -> None:
        if key not in table or self.rank(row) < self.rank(table[key]):
            table[key] = row

    def local_rows(self, r: str) -> dict:
        own = {i.address for i in self.ifaces[r]}
        table: dict = {}
        for area, stubs in self.stubs[r].items():
            for n, m, metric in stubs:
                if not any(num(a) & num(m) == num(n) for a in own):
                    self._keep(table, net_key(n, m), (metric, INTRA, None, area, r))
        return table

    def interface_rows(self, r: str, i: Iface, summaries: dict) -> dict:
        """Table of interface ``i``: shortest paths from its neighbour in G_A - r."""
        hop = (i.address, i.neighbor)
        table = self.local_rows(r)
        self._keep(table, net_key(i.network, i.mask), (i.cost, INTRA, hop, i.area, r))
        g = self.graphs[i.area].copy()
        g.remove_node(r)
        dist = nx.single_source_dijkstra_path_length(g, i.neighbor, weight="cost")
        for x, d in dist.items():
            self._keep(table, rtr_key(x), (i.cost + d, INTRA, hop, i.area, x))
            for n, m, metric in self.stubs[x][i.area]:
                self._keep(table, net_key(n, m), (i.cost + d + metric, INTRA, hop, i.area, x))
        for b, offered in summaries.get(i.area, {}).items():
            if b in dist and self.is_border(b):
                for (n, m), metric in offered.items():
                    self._keep(table, net_key(n, m),
                               (i.cost + dist[b] + metric, INTER, hop, i.area, b))
        return table

    def compute(self, r: str, summaries: dict) -> tuple[dict, dict, dict]:
        """(main, per-interface by local address, extended) rows of router ``r``."""
        local = self.local_rows(r)
        per = {i.address: self.interface_rows(r, i, summaries) for i in self.ifaces[r]}
        main = dict(local)
        extended: dict = {k: [v] for k, v in local.items()}
        for table in per.values():
            for key, row in table.items():
                self._keep(main, key, row)
                if row[2] is not None:
                    extended.setdefault(key, []).append(row)
        return main, per, {k: sorted(v, key=self.rank) for k, v in extended.items()}

    def originate(self, r: str, main: dict) -> dict[str, dict[tuple, int]]:
        """Summaries of ABR ``r`` per area (split horizon by area, own stubs left out)."""
        if not self.is_border(r):
            return {}
        out = {}
        for area in self.areas_of(r):
            own = {(n, m) for n, m, _ in self.stubs[r][area]}
            out[area] = {(k[1], k[2]): row[0] for k, row in main.items()
                         if k[0] is DestType.NETWORK and row[3] != area
                         and (k[1], k[2]) not in own and row[0] < LS_INFINITY}
        return out

    def _fixpoint(self, max_rounds: int = 100) -> None:
        summaries: dict = {}
        for rounds in range(1, max_rounds + 1):
            self.tables = {r: self.compute(r, summaries) for r in self.ifaces}
            new: dict = {}
            for r, (main, _per, _ext) in self.tables.items():
                for area, offered in self.originate(r, main).items():
                    new.setdefault(area, {})[r] = offered
            if new == summaries:
                self.summaries, self.rounds = summaries, rounds
                return
            summaries = new
        raise AssertionError(f"ground truth: no fixpoint after {max_rounds} rounds")


def can_fail(net: Net, link: tuple[str, str]) -> bool:
    """Whether ``link`` can go down leaving a topology :class:`Truth` models exactly:

    the network and every area stay connected (:func:`plan_addresses` accepts the rest)
    and every node keeps an up link in each area it has links in.
    """
    rest = [x for x in net.links if x != link]
    areas = {x: net.link_areas[x] for x in rest}
    try:
        plan_addresses(TopologySpec(nodes=net.nodes, links=rest, link_areas=areas))
    except ConfigError:
        return False
    if not nx.is_connected(nx.Graph(rest)) or len(set().union(*rest)) != len(net.nodes):
        return False
    return all(net.link_areas[link] in {a for x, a in areas.items() if end in x}
               for end in link)


def abr_cycle_free(truth: Truth) -> bool:
    """No cycle in the graph joining each area border router to its areas.

    Two ABRs sharing two areas (or any longer ABR-area cycle) can pass a withdrawn
    network's summaries round the cycle, counting to infinity (docs/routing.md).
    """
    g = nx.Graph()
    g.add_edges_from((("router", r), ("area", a)) for r in truth.ifaces
                     if truth.is_border(r) for a in truth.areas_of(r))
    return nx.is_forest(g) if len(g) else True


def overlay_costs(truth: Truth, network: tuple[str, str]) -> dict[str, float]:
    """Closed-form standard-table cost of every router to ``network`` (networkx only).

    A router that reaches the network inside one of its areas uses the smallest such
    intra-area distance (intra-area routes are preferred, docs/routing.md); any other
    router takes the shortest path over the overlay graph (router -> area border router
    of a common area, weighted by the intra-area distance) to such a router.
    """
    intra: dict[str, float] = {}
    overlay = nx.DiGraph()
    for area, g in truth.graphs.items():
        owners = truth.owners(area, network)
        lengths = dict(nx.all_pairs_dijkstra_path_length(g, weight="cost"))
        for r, reach in lengths.items():
            for o, metric in owners.items():
                if o in reach:
                    intra[r] = min(intra.get(r, _INF), reach[o] + metric)
            for b in reach:
                if b != r and truth.is_border(b):
                    w = reach[b]
                    if not overlay.has_edge(b, r) or overlay.edges[b, r]["w"] > w:
                        overlay.add_edge(b, r, w=w)  # reversed: from the ABR back to r
    overlay.remove_edges_from([(u, v) for u, v in list(overlay.edges) if v in intra])
    for source, cost in intra.items():
        overlay.add_edge("sink", source, w=cost)
    found = nx.single_source_dijkstra_path_length(overlay, "sink", weight="w")
    return {r: d for r, d in found.items() if r != "sink"}


# -- hypothesis strategy -----------------------------------------------------------------

@st.composite
def nets(draw, min_nodes: int = 2, max_nodes: int = 8, min_areas: int = 1,
         max_areas: int = 1, max_cost: int = 6) -> Net:
    """Random connected topologies that :func:`plan_addresses` accepts.

    Each area's declared nodes get a random spanning tree of links of that area; a
    random tree over the areas adds one link per area pair joined, in either end's area;
    up to ``n`` further links join any two nodes, each in either end's area (a link in
    the other end's area never disconnects an area, so every area stays connected).
    Areas thus join in any graph, cycles included, and nodes may have interfaces only in
    a foreign area.  Costs per direction 1..``max_cost`` (small: equal-cost ties).
    """
    n = draw(st.integers(min_nodes, max_nodes))
    k = draw(st.integers(min(min_areas, n), min(max_areas, n)))
    areas = list(range(1, k + 1)) + [draw(st.integers(1, k)) for _ in range(n - k)]
    names = draw(st.permutations([f"q{j}" for j in range(n)]))
    nodes = dict(zip(names, areas))
    members = {a: [x for x in names if nodes[x] == a] for a in range(1, k + 1)}
    links: dict[tuple[str, str], int] = {}

    def add(x: str, y: str, area: int) -> None:
        key = (x, y) if x < y else (y, x)
        links.setdefault(key, area)

    for a, group in members.items():
        for j in range(1, len(group)):
            add(group[draw(st.integers(0, j - 1))], group[j], a)
    for a in range(2, k + 1):
        b = draw(st.integers(1, a - 1))
        x, y = draw(st.sampled_from(members[a])), draw(st.sampled_from(members[b]))
        add(x, y, draw(st.sampled_from((a, b))))
    pairs = st.tuples(st.sampled_from(names), st.sampled_from(names))
    for x, y in draw(st.lists(pairs, max_size=n)):
        if x != y:
            add(x, y, draw(st.sampled_from((nodes[x], nodes[y]))))
    costs = {}
    for x, y in links:
        costs[(x, y)] = draw(st.integers(1, max_cost))
        costs[(y, x)] = draw(st.integers(1, max_cost))
    return Net(nodes, sorted(links), links, costs)

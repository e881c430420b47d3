"""Shortest paths and routing tables from the link-state database (seed 002 §2.5.2).

Theory of operation (RFC 2328 16.1, adapted to SECOQC's point-to-point QBB links):

* **Area graph** (:func:`area_graph`).  Vertices are the routers with a Router-LSA in the
  area (Link State ID = Advertising Router, LS age < MaxAge).  A point-to-point link
  (type 1) from V to W is an edge of cost ``metric`` only if W's Router-LSA has a
  point-to-point link back to V (the bidirectional check of 16.1 step 2b); parallel links
  keep the smallest cost.  Stub links (type 3) become leaves: network ``link_id & mask``
  at ``metric`` beyond the router.  Transit and virtual links do not occur in a QKD
  network (no Network-LSAs, no backbone) and are ignored.  Type 3 Summary-LSAs are kept
  for :mod:`qbb.routing.interarea`.
* **Per-interface tables** (seed §2.5.2: the table of interface *i* is the standard
  computation with every other outgoing interface at infinite cost).  A shortest path
  never passes through its own source twice, so the distance through *i* to router X is
  ``cost(i) + dist_{G - self}(neighbour(i), X)``: one Dijkstra from each neighbour in the
  area graph with the computing router removed (parallel links to one neighbour share
  it).  These are d independent single-source problems for a router of degree d, and
  nothing cheaper yields them exactly; the graph is built once, and the standard table
  and the Dijkstra tree of the computing router are derived from the d runs rather than
  computed by another Dijkstra (the best interface for X is the one minimising the sum).
* **Candidates**.  Through interface *i*: every router X reached (``R``, intra-area), every
  stub of X (``N``, intra-area, cost + stub metric), every Summary-LSA of an area border
  router X (inter-area, :func:`qbb.routing.interarea.offer_inter_area`).  The computing
  router's own stubs are *attached* to the interface whose address they contain (only
  in that interface's table, next hop the neighbour across it; dropped while that
  interface has no bidirectional neighbour) or else *local* (no next hop, in every
  table: e.g. the node's own /30 block).
* **Choice** by :func:`qbb.routing.table.preference`: intra-area before inter-area, then
  cost, then next-hop interface address, area id, advertising router (addresses as
  integers).  The standard table is the preferred route over all per-interface tables
  and the local routes; the extended table lists, per destination, the distinct routes
  of the per-interface tables in that same order.
* **Dijkstra** uses a binary heap over router indices ordered by address, so equal
  distances pop in address order and a router's parent in a run is its first popped
  predecessor on a shortest path (smallest (distance, router id)).  In the tree of the
  computing router (:attr:`RoutingTables.spt`) a router hangs off the branch of the
  interface chosen for it, with that run's parent.
* **Memoisation**: area graphs are cached by the identity of their (immutable) LSA
  objects and each Router-LSA is parsed once (:func:`clear_cache` forgets both).
"""

from __future__ import annotations

import gc
import heapq
from operator import itemgetter
from collections.abc import Mapping
from dataclasses import dataclass, replace

from qbb.routing import interarea
from qbb.routing.lsa import MAX_AGE, LinkType, Lsa, LsType, RouterFlags, RouterLSA, SummaryLSA
from qbb.routing.table import (
    DestType, ExtendedRoutingTable, Interface, NextHop, PathType, Route, RoutingTable,
    RoutingTables, ShortestPathTree, int_ip, ip_int)

__all__ = ["AreaGraph", "Database", "area_graph", "clear_cache", "compute_tables", "distances"]

LsaKey = tuple[int, str, str]
Database = Mapping[str, Mapping[LsaKey, Lsa]]
_P2P, _STUB = LinkType.POINT_TO_POINT, LinkType.STUB
_N, _R = DestType.NETWORK, DestType.ROUTER
_INTRA = PathType.INTRA_AREA
_first = itemgetter(0)


@dataclass(frozen=True, eq=False)
class AreaGraph:
    """One area's LSDB as index-based adjacency lists (indices ordered by router id)."""

    area: str
    ids: tuple[str, ...]
    index: dict[str, int]
    keys: tuple[int, ...]  # router ids as integers (tie-breaking)
    adjacency: tuple[tuple[tuple[int, int], ...], ...]  # (neighbour index, cost)
    links: tuple[tuple[tuple[str, str, int], ...], ...]  # checked p2p: (nbr, address, cost)
    addresses: tuple[tuple[str, ...], ...]  # every p2p interface address, checked or not
    stubs: tuple[tuple[tuple[tuple, str, str, int], ...], ...]  # (key, network, mask, metric)
    router_keys: tuple[tuple, ...]  # routing table key of each router
    border: tuple[bool, ...]  # RouterFlags.B
    summaries: tuple[tuple[int, str, str, int], ...]  # (advertiser index, network, mask, metric)


def _usable(lsa: Lsa) -> bool:
    return lsa.ls_age < MAX_AGE


def _network(address: str, mask: str) -> str:
    return int_ip(ip_int(address) & ip_int(mask))


_LSA_CACHE: dict[int, tuple[RouterLSA, tuple]] = {}
_GRAPH_CACHE: dict[str, tuple[tuple[int, ...], list, AreaGraph]] = {}
_LSA_CACHE_LIMIT = 200_000
_GRAPH_CACHE_LIMIT = 64


def clear_cache() -> None:
    """Forget the memoised Router-LSA parts and area graphs."""
    _LSA_CACHE.clear()
    _GRAPH_CACHE.clear()


def area_graph(area: str, lsdb: Mapping[LsaKey, Lsa]) -> AreaGraph:
    """The graph of one area from its link-state database (see module docstring).

    Memoised: the same LSA objects (by identity; they are immutable) give the same graph
    without rebuilding, and each Router-LSA's links are parsed once.
    """
    lsas = list(lsdb.values())
    fingerprint = tuple(map(id, lsas))
    cached = _GRAPH_CACHE.get(area)
    if cached is not None and cached[0] == fingerprint:
        return cached[2]
    graph = _build_graph(area, lsas)
    if len(_GRAPH_CACHE) >= _GRAPH_CACHE_LIMIT:
        _GRAPH_CACHE.clear()
    _GRAPH_CACHE[area] = (fingerprint, lsas, graph)
    return graph


def _build_graph(area: str, lsas: list) -> AreaGraph:
    routers: dict[str, tuple] = {}
    summary_lsas: list[SummaryLSA] = []
    for lsa in lsas:
        if not _usable(lsa):
            continue
        if isinstance(lsa, RouterLSA) and lsa.link_state_id == lsa.advertising_router:
            routers[lsa.advertising_router] = _parts(lsa)
        elif isinstance(lsa, SummaryLSA) and lsa.ls_type == LsType.SUMMARY_NETWORK:
            summary_lsas.append(lsa)
    ids = tuple(sorted(routers, key=ip_int))
    index = {rid: i for i, rid in enumerate(ids)}
    pairs = {(rid, nbr) for rid, parts in routers.items() for nbr, _a, _m in parts[0]}
    adjacency, links = [], []
    for rid in ids:
        edges: dict[int, int] = {}
        own = []
        for nbr, address, metric in routers[rid][0]:
            if nbr == rid or (nbr, rid) not in pairs:
                continue
            w = index[nbr]
            if w not in edges or metric < edges[w]:
                edges[w] = metric
            own.append((nbr, address, metric))
        adjacency.append(tuple(edges.items()))
        links.append(tuple(own))
    summaries = tuple(
        (index[s.advertising_router], _network(s.link_state_id, s.network_mask),
         s.network_mask, s.metric)
        for s in summary_lsas
        if s.advertising_router in index and s.metric < interarea.LS_INFINITY)
    return AreaGraph(
        area=area, ids=ids, index=index, keys=tuple(ip_int(r) for r in ids),
        adjacency=tuple(adjacency), links=tuple(links),
        addresses=tuple(routers[r][1] for r in ids), stubs=tuple(routers[r][2] for r in ids),
        router_keys=tuple((_R, r, None) for r in ids),
        border=tuple(routers[r][3] for r in ids), summaries=summaries)


def _parts(lsa: RouterLSA) -> tuple:
    """(p2p links, p2p addresses, stub leaves, B flag) of a Router-LSA, memoised."""
    cached = _LSA_CACHE.get(id(lsa))
    if cached is not None and cached[0] is lsa:
        return cached[1]
    p2p, leaves = [], []
    for link in lsa.links:
        if link.link_type == _P2P:
            p2p.append((link.link_id, link.link_data, link.metric))
        elif link.link_type == _STUB:
            network = _network(link.link_id, link.link_data)
            leaves.append(((_N, network, link.link_data), network, link.link_data, link.metric))
    parts = (tuple(p2p), tuple(a for _n, a, _m in p2p), tuple(leaves),
             bool(lsa.flags & RouterFlags.B))
    if len(_LSA_CACHE) >= _LSA_CACHE_LIMIT:
        _LSA_CACHE.clear()
    _LSA_CACHE[id(lsa)] = (lsa, parts)
    return parts


def distances(graph: AreaGraph, source: int, exclude: int = -1) -> tuple[list, list]:
    """Dijkstra from router index ``source`` avoiding index ``exclude``.

    Returns ``(dist, parent)`` lists by index: ``dist[v]`` is ``None`` when ``v`` is
    unreachable (always for ``exclude``), ``parent[v]`` is -1 for the source.
    """
    n = len(graph.ids)
    dist: list = [None] * n
    parent = [-1] * n
    done = [False] * n
    if exclude >= 0:
        done[exclude] = True
    dist[source] = 0
    heap = [(0, source)]
    adjacency = graph.adjacency
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        d, u = pop(heap)
        if done[u]:
            continue
        done[u] = True
        for v, w in adjacency[u]:
            if done[v]:
                continue
            nd = d + w
            dv = dist[v]
            if dv is None or nd < dv:
                dist[v] = nd
                parent[v] = u
                push(heap, (nd, v))
    return dist, parent


# -- the tables ---------------------------------------------------------------------

def compute_tables(router_id: str, database: Database,
                   feasible: Mapping[tuple, int] | None = None) -> RoutingTables:
    """All routing tables of ``router_id`` from its per-area databases.

    ``feasible`` (route key -> feasible distance) applies the feasibility condition of
    :mod:`qbb.routing.interarea` to inter-area candidates; keys whose preferred route
    it refuses are listed in :attr:`RoutingTables.constrained`.

    The cyclic garbage collector is paused meanwhile: the computation allocates many
    small acyclic tuples, and repeated collector passes over a large LSDB would
    otherwise dominate its run time (3x at 5,000 nodes).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _compute_tables(router_id, database, feasible or None)
    finally:
        if enabled:
            gc.enable()


def _compute_tables(router_id: str, database: Database,
                    feasible: Mapping[tuple, int] | None) -> RoutingTables:
    graphs = {area: area_graph(area, lsdb) for area, lsdb in database.items()}
    interfaces = _interfaces(router_id, graphs)
    local, attached = _own_stubs(router_id, graphs, interfaces)
    runs: dict[tuple[str, str], tuple[list, list]] = {}
    candidates: dict[str, dict] = {}
    allowed: dict[str, dict] = {}
    for iface in interfaces.values():
        graph = graphs[iface.area]
        run = runs.get((iface.area, iface.neighbor))
        if run is None:
            run = distances(graph, graph.index[iface.neighbor], graph.index[router_id])
            runs[(iface.area, iface.neighbor)] = run
        best = dict(local)
        _offer_all(best, attached.get(iface.address, ()))
        hop, hop_key = NextHop(iface.neighbor, iface.address), ip_int(iface.address)
        _offer_intra(best, graph, run[0], iface.cost, hop, hop_key)
        if feasible:
            allowed[iface.address] = ok = dict(best)
            interarea.offer_inter_area(ok, graph, run[0], iface.cost, hop, hop_key, feasible)
        interarea.offer_inter_area(best, graph, run[0], iface.cost, hop, hop_key)
        candidates[iface.address] = best
    if not feasible:
        return _assemble(router_id, graphs, interfaces, local, candidates, runs)
    return _assemble_feasible(router_id, graphs, interfaces, local, candidates, allowed, runs)


def _preferred(local: dict, candidates: dict[str, dict]) -> dict:
    main = dict(local)
    for best in candidates.values():
        for key, item in best.items():
            current = main.get(key)
            if current is None or item[0] < current[0]:
                main[key] = item
    return main


def _assemble_feasible(router_id: str, graphs: Mapping[str, AreaGraph],
                       interfaces: dict[str, Interface], local: dict,
                       candidates: dict[str, dict], allowed: dict[str, dict],
                       runs: dict) -> RoutingTables:
    """Tables where the feasible choice differs from the preferred one: the main table
    from feasible candidates, and the constrained keys' per-interface entries too."""
    preferred, chosen = _preferred(local, candidates), _preferred(local, allowed)
    constrained = frozenset(k for k, item in preferred.items()
                            if k not in chosen or chosen[k][0] != item[0])
    if constrained:
        for address, best in candidates.items():
            ok = allowed[address]
            candidates[address] = {k: (ok.get(k) if k in constrained else item)
                                   for k, item in best.items()}
            for key in [k for k, item in candidates[address].items() if item is None]:
                del candidates[address][key]
    tables = _assemble(router_id, graphs, interfaces, local, candidates, runs)
    return replace(tables, main=RoutingTable({k: item[1] for k, item in chosen.items()}),
                   constrained=constrained)


def _interfaces(router_id: str, graphs: Mapping[str, AreaGraph]) -> dict[str, Interface]:
    found: dict[str, Interface] = {}
    for area in sorted(graphs, key=ip_int):
        graph = graphs[area]
        root = graph.index.get(router_id)
        if root is None:
            continue
        for nbr, address, cost in graph.links[root]:
            found.setdefault(address, Interface(address, nbr, area, cost))
    return dict(sorted(found.items(), key=lambda item: ip_int(item[0])))


def _own_stubs(router_id: str, graphs: Mapping[str, AreaGraph],
               interfaces: Mapping[str, Interface]) -> tuple[dict, dict]:
    """Local candidates (every table) and attached ones (one interface's table)."""
    local: dict = {}
    attached: dict[str, list] = {}
    for area, graph in graphs.items():
        root = graph.index.get(router_id)
        if root is None:
            continue
        area_key = ip_int(area)
        for _key, network, mask, metric in graph.stubs[root]:
            inside = [a for a in graph.addresses[root]
                      if ip_int(a) & ip_int(mask) == ip_int(network)]
            key = (_N, network, mask)
            if not inside:
                pref = (0, metric, -1, area_key, ip_int(router_id))
                _offer(local, key, pref, Route(_N, network, mask, area, _INTRA, metric, None,
                                               router_id))
                continue
            for address in inside:
                iface = interfaces.get(address)
                if iface is None or iface.area != area:
                    continue
                pref = (0, metric, ip_int(address), area_key, ip_int(router_id))
                item = Route(_N, network, mask, area, _INTRA, metric,
                             NextHop(iface.neighbor, address), router_id)
                attached.setdefault(address, []).append((key, pref, item))
    return local, attached


def _offer(best: dict, key: tuple, pref: tuple, payload: tuple) -> None:
    current = best.get(key)
    if current is None or pref < current[0]:
        best[key] = (pref, payload)


def _offer_all(best: dict, entries) -> None:
    for key, pref, payload in entries:
        _offer(best, key, pref, payload)


def _offer_intra(best: dict, graph: AreaGraph, dist: list, base: int, hop: NextHop,
                 hop_key: int) -> None:
    """Routers and stub networks of ``graph`` reached through one interface."""
    area, area_key, ids, keys = graph.area, ip_int(graph.area), graph.ids, graph.keys
    stubs, router_keys = graph.stubs, graph.router_keys
    get = best.get
    for v, d in enumerate(dist):
        if d is None:
            continue
        rid, cost, adv_key, key = ids[v], base + d, keys[v], router_keys[v]
        pref = (0, cost, hop_key, area_key, adv_key)
        current = get(key)
        if current is None or pref < current[0]:
            best[key] = (pref, Route(_R, rid, None, area, _INTRA, cost, hop, rid))
        for key, network, mask, metric in stubs[v]:
            pref = (0, cost + metric, hop_key, area_key, adv_key)
            current = get(key)
            if current is None or pref < current[0]:
                best[key] = (pref, Route(_N, network, mask, area, _INTRA, cost + metric, hop, rid))


def _assemble(router_id: str, graphs: Mapping[str, AreaGraph],
              interfaces: dict[str, Interface], local: dict, candidates: dict[str, dict],
              runs: dict) -> RoutingTables:
    main = _preferred(local, candidates)
    return RoutingTables(
        router_id=router_id, interfaces=interfaces,
        main=RoutingTable({k: item[1] for k, item in main.items()}),
        per_interface={address: RoutingTable({k: item[1] for k, item in best.items()})
                       for address, best in candidates.items()},
        extended=_extended(local, candidates),
        spt=_trees(router_id, graphs, interfaces, runs))


def _extended(local: dict, candidates: dict[str, dict]) -> ExtendedRoutingTable:
    merged: dict = {key: [item] for key, item in local.items()}
    for best in candidates.values():
        for key, item in best.items():
            if item[1].next_hop is not None:  # local routes are already in
                merged.setdefault(key, []).append(item)
    entries = {}
    for key, items in merged.items():
        if len(items) > 1:
            items.sort(key=_first)
            entries[key] = tuple([item[1] for item in items])
        else:
            entries[key] = (items[0][1],)
    return ExtendedRoutingTable(entries)


def _trees(router_id: str, graphs: Mapping[str, AreaGraph], interfaces: dict[str, Interface],
           runs: dict) -> dict[str, ShortestPathTree]:
    """Each area's Dijkstra tree, derived from the per-neighbour runs."""
    trees = {}
    for area, graph in graphs.items():
        if router_id not in graph.index:
            continue
        best: dict[int, tuple] = {}
        for iface in interfaces.values():
            if iface.area != area:
                continue
            dist, parent = runs[(area, iface.neighbor)]
            hop_key = ip_int(iface.address)
            for v, d in enumerate(dist):
                if d is not None:
                    rank = (iface.cost + d, hop_key)
                    if v not in best or rank < best[v][0]:
                        best[v] = (rank, iface.address, parent[v])
        ids = graph.ids
        trees[area] = ShortestPathTree(
            router_id, area, {router_id: 0, **{ids[v]: b[0][0] for v, b in best.items()}},
            {ids[v]: (ids[b[2]] if b[2] >= 0 else router_id) for v, b in best.items()},
            {ids[v]: b[1] for v, b in best.items()})
    return trees

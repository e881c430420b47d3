"""Inter-area routing without a backbone (qbb.routing.interarea): fixpoint, optimality, loops."""

from __future__ import annotations

import dataclasses

import networkx as nx
from hypothesis import given

from qbb.routing.interarea import LS_INFINITY, summaries_to_originate
from qbb.routing.lsa import MAX_AGE, LsType, SummaryLSA, lsa_key
from qbb.routing.spf import compute_tables
from qbb.routing.table import DestType, PathType
from routing_graphs import (
    Topology, all_lengths, all_networks, area_id, block_of, border_routers, converge,
    expected_tables, node_address, optimal_costs, row, topologies)

A1, A2, A3 = area_id(1), area_id(2), area_id(3)


def _walk(topo: Topology, tables: dict, start: str, key: tuple) -> list[str]:
    """Routers visited following main-table next hops until the network's owner."""
    path, here = [start], start
    while True:
        route = tables[here].main[key]
        if route.next_hop is None or (route.advertising_router == here
                                      and route.path_type is PathType.INTRA_AREA):
            return path
        here = route.next_hop.neighbor
        assert here not in path, f"forwarding loop {path + [here]}"
        path.append(here)


@given(topologies(max_nodes=9, max_areas=3))
def test_fixpoint_is_optimal_and_loop_free(topo: Topology) -> None:
    database, _rounds = converge(topo)
    tables = {r: compute_tables(r, topo.view(r, database)) for r in topo.graph.nodes}
    lengths = all_lengths(topo)
    for net, mask in all_networks(topo):
        key = (DestType.NETWORK, net, mask)
        expected = optimal_costs(topo, (net, mask), lengths)
        assert set(expected) == set(topo.graph.nodes)
        for r in topo.graph.nodes:
            assert tables[r].main[key].cost == expected[r], (r, net)
            last = _walk(topo, tables, r, key)[-1]
            assert (net, mask) in {s[:2] for a in topo.areas_of(last) for s in topo.stubs(last, a)}


@given(topologies(max_nodes=8, max_areas=3, one_way=True))
def test_fixpoint_tables_match_networkx(topo: Topology) -> None:
    database, _rounds = converge(topo)
    for root in topo.graph.nodes:
        tables = compute_tables(root, topo.view(root, database))
        main, per, extended = expected_tables(topo, database, root)
        assert {k: row(r) for k, r in tables.main.items()} == main
        for address, rows in per.items():
            assert {k: row(r) for k, r in tables.per_interface[address].items()} == rows
        assert {k: [row(r) for r in v] for k, v in tables.extended.items()} == extended


def _chain() -> Topology:
    """a -(A1)- b -(A2)- c -(A3)- d : b and c are ABRs, areas in a chain."""
    a, b, c, d = (node_address(k) for k in range(4))
    g = nx.DiGraph()
    for u, v, area, cost in ((a, b, A1, 2), (b, c, A2, 3), (c, d, A3, 4)):
        g.add_edge(u, v, cost=cost, area=area)
        g.add_edge(v, u, cost=cost, area=area)
    return Topology(g, home={a: A1, b: A1, c: A2, d: A3})


def test_chain_of_areas_propagates_transitively() -> None:
    topo = _chain()
    database, rounds = converge(topo)
    a, d = node_address(0), node_address(3)
    route = compute_tables(a, topo.view(a, database)).main.lookup(d)
    assert route.path_type is PathType.INTER_AREA and route.cost == 2 + 3 + 4
    assert route.advertising_router == node_address(1) and route.area == A1
    assert rounds <= 4


def test_split_horizon_and_own_stubs() -> None:
    topo = _chain()
    database, _ = converge(topo)
    b = node_address(1)
    view = topo.view(b, database)
    out = summaries_to_originate(b, view, compute_tables(b, view))
    assert set(out) == {A1, A2}
    into_a1 = {(s.link_state_id, s.network_mask) for s in out[A1]}
    into_a2 = {(s.link_state_id, s.network_mask) for s in out[A2]}
    a1_networks = {s[:2] for r in topo.graph.nodes for s in topo.stubs(r, A1)}
    assert not into_a1 & a1_networks  # never back into the area of the best path
    assert (block_of(b), "255.255.255.252") in into_a2  # own block lives in A1
    assert (block_of(node_address(3)), "255.255.255.252") in into_a1
    assert all(s.advertising_router == b and s.ls_type == LsType.SUMMARY_NETWORK
               for s in out[A1] + out[A2])
    ids = [s.link_state_id for s in out[A1]]
    assert ids == sorted(ids, key=lambda x: tuple(map(int, x.split("."))))


def test_non_border_router_originates_nothing() -> None:
    topo = _chain()
    a = node_address(0)
    database = topo.database()
    assert summaries_to_originate(a, database, compute_tables(a, database)) == {A1: []}


def _abr_view() -> tuple[Topology, dict, str, str]:
    topo = _chain()
    database, _ = converge(topo)
    return topo, database, node_address(0), node_address(1)


def _replace_summaries(database: dict, change) -> None:
    for key, lsa in list(database[A1].items()):
        if isinstance(lsa, SummaryLSA):
            del database[A1][key]
            new = change(lsa)
            if new is not None:
                database[A1][lsa_key(new)] = new


def test_unusable_summaries_are_ignored() -> None:
    for change in (lambda s: dataclasses.replace(s, metric=LS_INFINITY),
                   lambda s: dataclasses.replace(s, ls_age=MAX_AGE),
                   lambda s: dataclasses.replace(s, advertising_router=node_address(0))):
        topo, database, a, _b = _abr_view()
        _replace_summaries(database, change)
        assert compute_tables(a, topo.view(a, database)).main.lookup(node_address(3)) is None


def test_summary_from_router_without_b_flag_is_ignored() -> None:
    topo, database, a, b = _abr_view()
    key = (1, b, b)
    database[A1][key] = dataclasses.replace(database[A1][key], flags=0)
    assert compute_tables(a, topo.view(a, database)).main.lookup(node_address(3)) is None


def test_intra_area_route_preferred_over_cheaper_inter_area() -> None:
    topo, database, a, b = _abr_view()
    cheap = SummaryLSA(ls_type=LsType.SUMMARY_NETWORK, link_state_id=block_of(b),
                       advertising_router=b, network_mask="255.255.255.252", metric=0)
    database[A1][lsa_key(cheap)] = cheap
    route = compute_tables(a, topo.view(a, database)).main.lookup(b)
    assert route.path_type is PathType.INTRA_AREA


def test_appendix_e_link_state_ids() -> None:
    topo = _chain()
    database, _ = converge(topo)
    c = node_address(2)
    view = topo.view(c, database)
    tables = compute_tables(c, view)
    extra = tables.main.lookup(node_address(3))._replace(mask="255.255.255.0")
    routes = dict(tables.main)
    routes[extra.key] = extra
    fake = dataclasses.replace(tables, main=type(tables.main)(routes))
    into_a2 = summaries_to_originate(c, view, fake)[A2]
    wide = [s for s in into_a2 if s.network_mask == "255.255.255.0"]
    assert [s.link_state_id for s in wide] == ["10.0.0.255"]
    assert any(s.link_state_id == "10.0.0.12" for s in into_a2)


def test_unreachable_network_is_withdrawn() -> None:
    topo = _chain()
    c, d = node_address(2), node_address(3)
    database, _ = converge(topo)
    topo.graph.remove_edges_from([(c, d), (d, c)])
    topo.graph.remove_node(d)
    database, _ = converge(topo)
    b = node_address(1)
    view = topo.view(b, database)
    out = summaries_to_originate(b, view, compute_tables(b, view))
    assert all(s.link_state_id != block_of(d) for s in out[A1])
    assert border_routers(topo) == {b}

"""SPF and per-interface tables (qbb.routing.spf) against networkx on random topologies."""

from __future__ import annotations

import dataclasses

import networkx as nx
from hypothesis import given, strategies as st

from qbb.routing.lsa import MAX_AGE, LinkType, RouterLink, RouterLSA, lsa_key
from qbb.routing.spf import area_graph, clear_cache, compute_tables, distances
from qbb.routing.table import DestType, NextHop
from routing_graphs import (
    Topology, area_id, expected_tables, interfaces, node_address, num, row, topologies)

AREA = area_id(1)


def _rows(table) -> dict:
    return {key: row(route) for key, route in table.items()}


def _check_router(topo: Topology, database: dict, root: str) -> None:
    tables = compute_tables(root, topo.view(root, database))
    main, per, extended = expected_tables(topo, database, root)
    assert _rows(tables.main) == main
    assert set(tables.per_interface) == set(per)
    for address, expected in per.items():
        assert _rows(tables.per_interface[address]) == expected, address
    assert {k: [row(r) for r in v] for k, v in tables.extended.items()} == extended


@given(topologies(one_way=True))
def test_tables_match_networkx_single_area(topo: Topology) -> None:
    database = topo.database()
    for root in topo.graph.nodes:
        _check_router(topo, database, root)


@given(topologies(max_nodes=7, max_cost=2))
def test_tables_match_networkx_with_many_ties(topo: Topology) -> None:
    database = topo.database()
    for root in topo.graph.nodes:
        _check_router(topo, database, root)


@given(topologies(one_way=True, max_cost=2))
def test_spt_costs_and_parents(topo: Topology) -> None:
    database = topo.database()
    g = topo.area_graph(AREA)
    for root in g.nodes:
        tree = compute_tables(root, database).spt[AREA]
        expected = nx.single_source_dijkstra_path_length(g, root, weight="cost")
        assert tree.cost == expected
        assert set(tree.parent) == set(expected) - {root}
        for v, p in tree.parent.items():  # every parent is on a shortest path
            assert expected[p] + g.edges[p, v]["cost"] == expected[v]
        for v, p in tree.parent.items():  # parent rule: in the branch, min (distance, id)
            if p != root or topo.address(root, v) != tree.interface[v]:
                preds = [q for q in g.predecessors(v) if q != root
                         and tree.interface[q] == tree.interface[v]
                         and expected[q] + g.edges[q, v]["cost"] == expected[v]]
                assert p == min(preds, key=lambda q: (expected[q], num(q)))
        for v, address in tree.interface.items():  # first hop is the tree's branch
            first = v
            while tree.parent[first] != root:
                first = tree.parent[first]
            assert topo.address(root, first) == address


@given(topologies(one_way=True))
def test_main_table_next_hop_is_the_spt_branch(topo: Topology) -> None:
    database = topo.database()
    for root in topo.graph.nodes:
        tables = compute_tables(root, database)
        tree = tables.spt[AREA]
        for v, cost in tree.cost.items():
            if v != root:
                route = tables.main.router(v)
                assert route.cost == cost
                assert route.next_hop.interface == tree.interface[v]


def test_distances_excludes_a_vertex() -> None:
    topo = _line(3)
    graph = area_graph(AREA, topo.database()[AREA])
    a, b, c = (graph.index[node_address(k)] for k in range(3))
    dist, parent = distances(graph, a)
    assert dist[c] == 2 and parent[c] == b and parent[a] == -1
    dist, _ = distances(graph, a, exclude=b)
    assert dist[b] is None and dist[c] is None


def _line(n: int, cost: int = 1) -> Topology:
    g = nx.DiGraph()
    for k in range(n - 1):
        u, v = node_address(k), node_address(k + 1)
        g.add_edge(u, v, cost=cost, area=AREA)
        g.add_edge(v, u, cost=cost, area=AREA)
    return Topology(g)


def test_one_sided_link_is_not_used() -> None:
    topo = _line(2)
    a, b = node_address(0), node_address(1)
    topo.graph.edges[b, a]["listed"] = False
    tables = compute_tables(a, topo.database())
    assert tables.per_interface == {} and tables.interfaces == {}
    assert tables.main.router(b) is None
    assert [r.next_hop for r in tables.main.values()] == [None]  # only the node block


def test_max_age_lsas_are_ignored() -> None:
    topo = _line(3)
    database = topo.database()
    c = node_address(2)
    key = (1, c, c)
    database[AREA][key] = dataclasses.replace(database[AREA][key], ls_age=MAX_AGE)
    tables = compute_tables(node_address(0), database)
    assert tables.main.router(c) is None
    assert tables.main.router(node_address(1)).cost == 1


def test_router_lsa_with_foreign_link_state_id_is_ignored() -> None:
    topo = _line(2)
    database = topo.database()
    b = node_address(1)
    bogus = dataclasses.replace(database[AREA][(1, b, b)], link_state_id="10.9.9.9")
    del database[AREA][(1, b, b)]
    database[AREA][lsa_key(bogus)] = bogus
    assert compute_tables(node_address(0), database).per_interface == {}


def test_parallel_links_share_one_neighbour() -> None:
    a, b = node_address(0), node_address(1)
    def lsa(me: str, other: str, costs: list[int], base: int) -> RouterLSA:
        links = [RouterLink(link_id=other, link_data=f"172.16.0.{base + 4 * k}",
                            link_type=LinkType.POINT_TO_POINT, metric=c)
                 for k, c in enumerate(costs)]
        return RouterLSA(link_state_id=me, advertising_router=me, links=links)
    database = {AREA: {lsa_key(x): x for x in (lsa(a, b, [5, 3], 1), lsa(b, a, [1, 1], 2))}}
    tables = compute_tables(a, database)
    assert set(tables.per_interface) == {"172.16.0.1", "172.16.0.5"}
    assert tables.main.router(b).next_hop == NextHop(b, "172.16.0.5")
    assert [r.cost for r in tables.extended[(DestType.ROUTER, b, None)]] == [3, 5]
    assert tables.spt[AREA].interface[b] == "172.16.0.5"


@given(topologies(max_nodes=6), st.data())
def test_unknown_and_irrelevant_lsas_change_nothing(topo: Topology, data) -> None:
    from qbb.routing.lsa import UnknownLSA
    database = topo.database()
    root = data.draw(st.sampled_from(sorted(topo.graph.nodes)))
    before = _rows(compute_tables(root, database).main)
    junk = UnknownLSA(ls_type=2, link_state_id=root, advertising_router=root, body=b"\0" * 4)
    database[AREA][lsa_key(junk)] = junk
    assert _rows(compute_tables(root, database).main) == before


def test_router_without_own_lsa_has_no_routes() -> None:
    topo = _line(3)
    tables = compute_tables("10.200.0.1", topo.database())
    assert len(tables.main) == 0 and tables.per_interface == {} and tables.spt == {}
    assert interfaces(topo, node_address(1)).keys() == tables_interfaces(topo, 1)


def tables_interfaces(topo: Topology, k: int):
    return compute_tables(node_address(k), topo.database()).interfaces.keys()


def test_memoised_graph_follows_lsdb_changes() -> None:
    topo = _line(3)
    database = topo.database()
    a, b = node_address(0), node_address(1)
    assert compute_tables(a, database).main.router(b).cost == 1
    lsa = database[AREA][(1, a, a)]
    links = tuple(dataclasses.replace(link, metric=7) if link.link_id == b else link
                  for link in lsa.links)
    database[AREA][(1, a, a)] = dataclasses.replace(lsa, links=links)
    assert compute_tables(a, database).main.router(b).cost == 7
    clear_cache()
    assert compute_tables(a, database).main.router(b).cost == 7
    assert area_graph(AREA, database[AREA]) is area_graph(AREA, database[AREA])

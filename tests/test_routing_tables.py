"""Routing table structures (qbb.routing.table): lookups, ordering, extended-table invariants."""

from __future__ import annotations

from hypothesis import given, strategies as st

from qbb.routing.spf import compute_tables
from qbb.routing.table import (
    DestType, ExtendedRoutingTable, NextHop, PathType, Route, RoutingTable, int_ip, ip_int,
    network_key, preference, router_key)
from routing_graphs import Topology, converge, topologies

A1 = "0.0.0.1"


def _route(dest: str, mask: str | None, cost: int, hop: str | None = None,
           path: PathType = PathType.INTRA_AREA, adv: str = "9.9.9.9") -> Route:
    dest_type = DestType.ROUTER if mask is None else DestType.NETWORK
    next_hop = None if hop is None else NextHop("7.7.7.7", hop)
    return Route(dest_type, dest, mask, A1, path, cost, next_hop, adv)


def test_address_conversions() -> None:
    assert ip_int("10.0.0.1") == 0x0A000001
    assert int_ip(0xFFFFFFFE) == "255.255.255.254"


def test_longest_prefix_lookup() -> None:
    routes = [_route("10.0.0.0", "255.0.0.0", 5, "1.1.1.1"),
              _route("10.1.0.0", "255.255.0.0", 9, "1.1.1.2"),
              _route("10.1.2.0", "255.255.255.252", 1, "1.1.1.3"),
              _route("10.1.2.1", None, 1, "1.1.1.3")]
    table = RoutingTable({r.key: r for r in routes})
    assert table.lookup("10.1.2.3").cost == 1
    assert table.lookup("10.1.2.4").cost == 9
    assert table.lookup("10.200.0.1").cost == 5
    assert table.lookup("11.0.0.1") is None
    assert table.router("10.1.2.1") is routes[3]
    assert table.network("10.1.0.0", "255.255.0.0") is routes[1]
    assert len(table) == 4 and set(table) == {r.key for r in routes}
    assert "10.1.2.0" in table.format() and "intra-area" in table.format()
    assert [r.dest_type for r in table.rows()] == [DestType.NETWORK] * 3 + [DestType.ROUTER]


def test_default_route_and_empty_tables() -> None:
    default = _route("0.0.0.0", "0.0.0.0", 3, "1.1.1.1")
    assert RoutingTable({default.key: default}).lookup("200.1.1.1") is default
    assert RoutingTable({}).lookup("1.2.3.4") is None
    assert ExtendedRoutingTable({}).lookup("1.2.3.4") == ()


def test_preference_order() -> None:
    local = _route("10.0.0.0", "255.255.255.252", 4)
    via_low = _route("10.0.0.0", "255.255.255.252", 4, "1.1.1.1")
    via_high = _route("10.0.0.0", "255.255.255.252", 4, "1.1.1.9")
    cheaper_inter = _route("10.0.0.0", "255.255.255.252", 1, "1.1.1.1", PathType.INTER_AREA)
    ordered = sorted([cheaper_inter, via_high, via_low, local], key=preference)
    assert ordered == [local, via_low, via_high, cheaper_inter]


def test_keys() -> None:
    assert network_key("10.0.0.0", "255.0.0.0") == (DestType.NETWORK, "10.0.0.0", "255.0.0.0")
    assert router_key("1.2.3.4") == (DestType.ROUTER, "1.2.3.4", None)
    assert _route("1.2.3.4", None, 1).key == router_key("1.2.3.4")


def _check_invariants(topo: Topology, database: dict, root: str) -> None:
    tables = compute_tables(root, topo.view(root, database))
    assert set(tables.extended) == set(tables.main)
    for key, entries in tables.extended.items():
        assert entries[0] is tables.main[key]
        assert list(entries) == sorted(entries, key=preference)
        hops = [r.next_hop.interface for r in entries if r.next_hop is not None]
        assert len(hops) == len(set(hops))  # one entry per interface
        assert sum(r.next_hop is None for r in entries) <= 1
        assert all(r.key == key for r in entries)
        for r in entries:
            if r.next_hop is not None:
                assert tables.per_interface[r.next_hop.interface][key] is r
    for address, table in tables.per_interface.items():
        iface = tables.interfaces[address]
        assert iface.address == address
        for route in table.values():
            assert route.next_hop in (None, NextHop(iface.neighbor, address))
            assert route.cost >= (0 if route.next_hop is None else iface.cost)
        for key, route in table.items():
            assert preference(tables.main[key]) <= preference(route)


@given(topologies(max_nodes=8, max_areas=3, one_way=True), st.data())
def test_extended_table_invariants(topo: Topology, data) -> None:
    database, _ = converge(topo)
    root = data.draw(st.sampled_from(sorted(topo.graph.nodes)))
    _check_invariants(topo, database, root)


@given(topologies(max_nodes=8, max_areas=2), st.data())
def test_lookup_of_every_node_address(topo: Topology, data) -> None:
    database, _ = converge(topo)
    root = data.draw(st.sampled_from(sorted(topo.graph.nodes)))
    tables = compute_tables(root, topo.view(root, database))
    for node in topo.graph.nodes:
        route = tables.main.lookup(node)
        assert route is not None and route.dest_type is DestType.NETWORK
        assert (route.next_hop is None) == (node == root)
        assert tables.extended.lookup(node)[0] is route

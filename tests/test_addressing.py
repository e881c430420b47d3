"""QKD addressing (seed 002 §2.3): golden plan, invariants over random topologies, and
every configuration error of :func:`qbb.routing.addressing.plan_addresses`."""

from __future__ import annotations

import dataclasses
import re
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qbb.errors import ConfigError
from qbb.routing.addressing import (
    AREA_MASK, BLOCK_MASK, AddressPlan, LinkAddress, NodeAddress, TopologySpec, area_id,
    area_network, area_number, area_of_address, is_reserved, plan_addresses)

NAME = st.text(alphabet="abcxyzABQ019-_", min_size=1, max_size=5)


@st.composite
def topologies(draw, max_areas: int = 4, max_nodes: int = 6) -> TopologySpec:
    """A valid topology: each area a random connected graph, areas joined by random links
    (some with an explicit link area), some node and link address overrides."""
    areas = draw(st.lists(st.integers(1, 255), min_size=1, max_size=max_areas, unique=True))
    sizes = [draw(st.integers(1, max_nodes)) for _ in areas]
    names = draw(st.lists(NAME, min_size=sum(sizes), max_size=sum(sizes), unique=True))
    nodes, members, links = {}, {}, set()
    for area, size in zip(areas, sizes):
        members[area] = [names.pop() for _ in range(size)]
        nodes.update((name, area) for name in members[area])
        for i, name in enumerate(members[area][1:], 1):  # a random spanning tree
            links.add(frozenset((name, members[area][draw(st.integers(0, i - 1))])))
    everyone = sorted(nodes)
    for _ in range(draw(st.integers(0, 2 * len(everyone)))):
        a, b = draw(st.sampled_from(everyone)), draw(st.sampled_from(everyone))
        if a != b:
            links.add(frozenset((a, b)))
    pairs = [tuple(draw(st.permutations(sorted(link)))) for link in sorted(links, key=sorted)]
    link_areas = {p: nodes[p[1]] for p in pairs
                  if nodes[p[0]] != nodes[p[1]] and draw(st.booleans())}
    return TopologySpec(nodes, pairs, *draw(_overrides(nodes, pairs, link_areas)), link_areas)


@st.composite
def _overrides(draw, nodes, pairs, link_areas):
    owners = [n for n in sorted(nodes) if draw(st.integers(0, 3)) == 0]
    owners += [p for p in pairs if draw(st.integers(0, 3)) == 0]
    blocks = draw(st.lists(st.integers(1, 16382), min_size=len(owners),
                           max_size=len(owners), unique=True))
    node_addresses, link_networks = {}, {}
    for owner, block in zip(owners, blocks):
        if isinstance(owner, str):
            base = _base(nodes[owner]) + 4 * block
            node_addresses[owner] = str(IPv4Address(base + draw(st.sampled_from([1, 2]))))
        else:
            area = link_areas.get(owner, min(nodes[owner[0]], nodes[owner[1]]))
            link_networks[owner] = str(IPv4Address(_base(area) + 4 * block))
    return node_addresses, link_networks


def _base(area: int) -> int:
    return int(IPv4Address(area_network(area)))


def _in(address: str, network: str, mask: str) -> bool:
    return IPv4Address(address) in IPv4Network(f"{network}/{mask}")


def _all_addresses(plan: AddressPlan) -> list[str]:
    return ([n.address for n in plan.nodes.values()]
            + [a for ln in plan.links.values() for a in ln.addresses])


# --- golden example (a Fig. 18-like Area 1 with an area border node to Area 2) -------

GOLDEN = TopologySpec(
    nodes={"QBB1": 1, "QBB2": 1, "QBB3": 1, "QBB4": 1, "QBB5": 2, "QBB6": 2},
    links=[("QBB2", "QBB1"), ("QBB1", "QBB3"), ("QBB2", "QBB4"), ("QBB3", "QBB4"),
           ("QBB4", "QBB5"), ("QBB5", "QBB6")])


def test_golden_plan():
    plan = plan_addresses(GOLDEN)
    assert [(n.name, n.area, n.address, n.block) for n in plan.nodes.values()] == [
        ("QBB1", 1, "1.1.0.5", "1.1.0.4"), ("QBB2", 1, "1.1.0.9", "1.1.0.8"),
        ("QBB3", 1, "1.1.0.13", "1.1.0.12"), ("QBB4", 1, "1.1.0.17", "1.1.0.16"),
        ("QBB5", 2, "1.2.0.5", "1.2.0.4"), ("QBB6", 2, "1.2.0.9", "1.2.0.8")]
    assert [(ln.ends, ln.area, ln.network, ln.addresses) for ln in plan.links.values()] == [
        (("QBB1", "QBB2"), 1, "1.1.128.0", ("1.1.128.1", "1.1.128.2")),
        (("QBB1", "QBB3"), 1, "1.1.128.4", ("1.1.128.5", "1.1.128.6")),
        (("QBB2", "QBB4"), 1, "1.1.128.8", ("1.1.128.9", "1.1.128.10")),
        (("QBB3", "QBB4"), 1, "1.1.128.12", ("1.1.128.13", "1.1.128.14")),
        (("QBB4", "QBB5"), 1, "1.1.128.16", ("1.1.128.17", "1.1.128.18")),
        (("QBB5", "QBB6"), 2, "1.2.128.0", ("1.2.128.1", "1.2.128.2"))]
    assert all(n.mask == ln.mask == BLOCK_MASK == "255.255.255.252"
               for n in plan.nodes.values() for ln in plan.links.values())
    assert plan.is_abr("QBB5") and not plan.is_abr("QBB4")
    assert plan.areas_of("QBB5") == {1, 2}
    assert [ln.peer_of("QBB4") for ln in plan.links_of("QBB4")] == ["QBB2", "QBB3", "QBB5"]
    assert plan.link("QBB5", "QBB4").address_of("QBB5") == "1.1.128.18"


def test_golden_lookups():
    plan = plan_addresses(GOLDEN)
    assert plan.node_of("1.1.0.5") == "QBB1"
    assert plan.node_of("1.1.128.10") == "QBB4"
    assert plan.node_of("1.1.0.6") is None and plan.node_of("1.1.128.0") is None
    assert plan.lookup("1.1.0.6") == plan.nodes["QBB1"]
    assert plan.lookup("1.2.128.3") == plan.links[("QBB5", "QBB6")]
    assert plan.lookup("1.3.0.5") is None and plan.node_of("9.9.9.9") is None


def test_link_area_override_moves_the_border():
    spec = dataclasses.replace(GOLDEN, link_areas={("QBB5", "QBB4"): 2})
    plan = plan_addresses(spec)
    assert plan.link("QBB4", "QBB5") == LinkAddress(
        ("QBB4", "QBB5"), 2, "1.2.128.0", ("1.2.128.1", "1.2.128.2"))
    assert plan.is_abr("QBB4") and not plan.is_abr("QBB5")


def test_overrides_are_honoured_and_skipped():
    spec = dataclasses.replace(GOLDEN, node_addresses={"QBB2": "1.1.0.6"},
                               link_networks={("QBB3", "QBB1"): "1.1.128.0"})
    plan = plan_addresses(spec)
    assert plan.nodes["QBB2"] == NodeAddress("QBB2", 1, "1.1.0.6", "1.1.0.4")
    assert plan.nodes["QBB1"].address == "1.1.0.9"  # next free block after the override
    assert plan.link("QBB1", "QBB3").network == "1.1.128.0"
    assert plan.link("QBB1", "QBB2").network == "1.1.128.4"
    assert plan.node_of("1.1.0.6") == "QBB2" and plan.node_of("1.1.0.5") is None


def test_area_functions():
    assert [area_id(a) for a in (1, 5, 255)] == ["0.0.0.1", "0.0.0.5", "0.0.0.255"]
    assert all(area_number(area_id(a)) == a for a in range(1, 256))
    assert area_network(7) == "1.7.0.0" and AREA_MASK == "255.255.0.0"
    assert [area_of_address(a) for a in ("1.4.2.3", "1.0.0.1", "2.4.0.1", "1.255.9.9")] == [
        4, None, None, 255]
    for bad in (0, 256, -1, "1", True, 1.0):
        with pytest.raises(ConfigError):
            area_id(bad)
    with pytest.raises(ConfigError):
        area_number("0.0.0.0")


@pytest.mark.parametrize("address,reserved", [
    ("127.0.0.1", True), ("224.0.0.5", True), ("239.255.255.255", True), ("240.0.0.1", True),
    ("255.255.255.255", True), ("0.0.0.0", True), ("1.1.0.0", True), ("1.9.255.255", True),
    ("1.1.0.1", False), ("1.1.255.254", False), ("10.0.0.0", False), ("1.0.0.0", False)])
def test_is_reserved(address, reserved):
    assert is_reserved(address) is reserved


# --- invariants over random topologies ---------------------------------------------


@given(topologies())
def test_random_plan_invariants(spec):
    plan = plan_addresses(spec)
    addresses = _all_addresses(plan)
    assert len(set(addresses)) == len(addresses)
    blocks = [n.block for n in plan.nodes.values()] + [ln.network for ln in plan.links.values()]
    assert len(set(blocks)) == len(blocks)
    for address in addresses + blocks:
        assert not is_reserved(address)
        assert int(IPv4Address(address)) & 0xFFFC not in (0, 0xFFFC)  # reserved blocks
    for node in plan.nodes.values():
        assert node.area == spec.nodes[node.name]
        assert _in(node.address, area_network(node.area), AREA_MASK)
        assert _in(node.address, node.block, BLOCK_MASK) and node.address != node.block
        assert plan.node_of(node.address) == node.name
    for link in plan.links.values():
        assert link.area in {spec.nodes[end] for end in link.ends}
        assert _in(link.network, area_network(link.area), AREA_MASK)
        assert int(IPv4Address(link.network)) % 4 == 0
        assert all(_in(a, link.network, BLOCK_MASK) for a in link.addresses)
        assert [plan.node_of(a) for a in link.addresses] == list(link.ends)


@given(topologies())
def test_random_plan_honours_spec(spec):
    plan = plan_addresses(spec)
    assert set(plan.links) == {tuple(sorted(p)) for p in spec.links}
    for name, address in spec.node_addresses.items():
        assert plan.nodes[name].address == address
    for pair, network in spec.link_networks.items():
        assert plan.link(*pair).network == network
    for pair, area in spec.link_areas.items():
        assert plan.link(*pair).area == area
    for name, area in spec.nodes.items():
        others = {ln.area for ln in plan.links_of(name)} - {area}
        assert plan.is_abr(name) == bool(others)


@given(topologies(), st.randoms(use_true_random=False))
def test_random_plan_is_deterministic(spec, rnd):
    shuffled_nodes = list(spec.nodes.items())
    rnd.shuffle(shuffled_nodes)
    links = [p[::-1] if rnd.random() < 0.5 else p for p in spec.links]
    rnd.shuffle(links)
    again = dataclasses.replace(spec, nodes=dict(shuffled_nodes), links=links)
    assert plan_addresses(again) == plan_addresses(spec)


# --- configuration errors ----------------------------------------------------------

TWO = {"A": 1, "B": 1}


@pytest.mark.parametrize("spec,message", [
    (TopologySpec({"A": 0}), "area must be an int in 1..255"),
    (TopologySpec({"A": 256}), "area must be an int"),
    (TopologySpec({"A": "1"}), "area must be an int"),
    (TopologySpec({"A": True}), "area must be an int"),
    (TopologySpec({"": 1}), "non-empty str"),
    (TopologySpec({7: 1}), "non-empty str"),
    (TopologySpec(TWO, [("A", "C")]), "unknown node 'C'"),
    (TopologySpec(TWO, [("A", "A")]), "self-loop"),
    (TopologySpec(TWO, [("A", "B"), ("B", "A")]), "duplicate link"),
    (TopologySpec(TWO, [("A", "B", "C")]), "pair of node names"),
    (TopologySpec(TWO, [("A", 2)]), "pair of node names"),
    (TopologySpec(TWO, ["AB"]), "pair of node names"),
    (TopologySpec(TWO), "area 1 is not connected"),
    (TopologySpec({"A": 1, "B": 2, "C": 2}, [("A", "B"), ("A", "C")]),
     "area 2 is not connected"),
    (TopologySpec({"A": 1, "B": 2}, [("A", "B")], link_areas={("A", "B"): 3}),
     "not an area of its ends"),
    (TopologySpec({"A": 1, "B": 2}, [("A", "B")], link_areas={("A", "B"): 0}),
     "area must be an int"),
    (TopologySpec({"A": 1, "B": 2, "C": 2}, [("A", "B"), ("B", "C")],
                  link_areas={("A", "C"): 1}), "not a link"),
    (TopologySpec({"A": 1, "B": 2}, [("A", "B")],
                  link_areas={("A", "B"): 1, ("B", "A"): 2}), "given twice"),
    (TopologySpec(TWO, [("A", "B")], node_addresses={"C": "1.1.0.5"}), "unknown node 'C'"),
    (TopologySpec(TWO, [("A", "B")], node_addresses={"A": "1.1.0"}), "not a dotted-quad"),
    (TopologySpec(TWO, [("A", "B")], node_addresses={"A": 16843013}), "not a dotted-quad"),
    (TopologySpec(TWO, [("A", "B")], node_addresses={"A": "1.2.0.5"}), "outside area 1"),
    (TopologySpec(TWO, [("A", "B")], node_addresses={"A": "10.1.0.5"}), "outside area 1"),
    (TopologySpec(TWO, [("A", "B")], node_addresses={"A": "1.1.0.1"}), "reserved block"),
    (TopologySpec(TWO, [("A", "B")], node_addresses={"A": "1.1.255.254"}), "reserved block"),
    (TopologySpec(TWO, [("A", "B")], node_addresses={"A": "1.1.0.8"}),
     "offset .1 or .2 of /30 1.1.0.8"),
    (TopologySpec(TWO, [("A", "B")], node_addresses={"A": "1.1.0.11"}), ".1 or .2"),
    (TopologySpec(TWO, [("A", "B")], node_addresses={"A": "1.1.0.5", "B": "1.1.0.6"}),
     "collision: node 'B' and node 'A' both use 1.1.0.4/30"),
    (TopologySpec(TWO, [("A", "B")], node_addresses={"A": "1.1.128.1"},
                  link_networks={("B", "A"): "1.1.128.0"}), "collision"),
    (TopologySpec(TWO, [("A", "B")], link_networks={("A", "B"): "1.1.128.1"}),
     "must be offset .0 of /30 1.1.128.0"),
    (TopologySpec(TWO, [("A", "B")], link_networks={("A", "B"): "1.2.128.0"}), "outside"),
    (TopologySpec(TWO, [("A", "B")], link_networks={("A", "B"): "1.1.255.252"}), "reserved"),
    (TopologySpec(TWO, [("A", "B")], link_networks={("A", "C"): "1.1.128.0"}), "not a link"),
])
def test_config_errors(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        plan_addresses(spec)


def _star(size: int) -> TopologySpec:
    names = [f"n{i:05d}" for i in range(size)]
    return TopologySpec(dict.fromkeys(names, 3), [(names[0], n) for n in names[1:]])


def test_node_range_capacity_and_exhaustion():
    plan = plan_addresses(_star(8191))  # 8191 nodes fill 1.3.0.0/17, 8190 links
    assert plan.nodes["n08190"].address == "1.3.127.253"
    with pytest.raises(ConfigError, match=r"node range 1\.3\.0\.0/17 of area 3 exhausted"):
        plan_addresses(_star(8192))


def test_link_range_exhaustion():
    names = [f"n{i:03d}" for i in range(129)]  # complete graph: 8256 links > 8191 blocks
    spec = TopologySpec(dict.fromkeys(names, 9), [
        (a, b) for i, a in enumerate(names) for b in names[i + 1:]])
    with pytest.raises(ConfigError, match=r"link range 1\.9\.128\.0/17 of area 9 exhausted"):
        plan_addresses(spec)


def test_override_in_the_other_half():
    spec = dataclasses.replace(_star(8191), node_addresses={"n00000": "1.3.128.1"})
    plan = plan_addresses(spec)  # a node block in the link half: all still fit
    assert plan.nodes["n08190"].address == "1.3.127.249"
    assert plan.link("n00000", "n00001").network == "1.3.128.4"
    assert plan.link("n00000", "n08190").network == "1.3.255.248"


def test_plan_lookup_errors():
    plan = plan_addresses(GOLDEN)
    for call in (lambda: plan.link("QBB1", "QBB6"), lambda: plan.links_of("nobody"),
                 lambda: plan.areas_of("nobody"), lambda: plan.is_abr("nobody")):
        with pytest.raises(ConfigError):
            call()


def test_isolated_single_node_areas_are_fine():
    plan = plan_addresses(TopologySpec({"solo": 200, "other": 17}))
    assert plan.nodes["solo"].address == "1.200.0.5" and plan.links == {}
    assert plan.nodes["other"].address == "1.17.0.5" and plan.links_of("solo") == ()

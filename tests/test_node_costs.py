"""Dynamic link costs (qbb/routing/cost.py fed by qbb/node.py), in virtual time.

With ``"costs": "auto"`` every link without a configured cost follows its key rate and
key-store level through :class:`~qbb.routing.cost.LinkCost` (hysteresis, one change per
``min_change_interval``); a change re-originates the Router-LSA and routes move.
"""

from __future__ import annotations

import dataclasses

import pytest
import trio
from hypothesis import given, settings, strategies as st

from qbb.errors import ConfigError
from qbb.network import EmbeddedNetwork
from qbb.node import NodeConfig, QBBNode
from qbb.routing.cost import CostPolicy, LinkCost, computed_cost
from qbb.topology import LinkSpec, NodeSpec, Topology, parse_topology, topology_to_dict


def ring5(costs: str = "auto") -> Topology:
    """A-B-C-D-E-A at 1 Mbit/s; C-D has configured costs (never computed)."""
    names = "ABCDE"
    links = [LinkSpec(a, b) for a, b in zip(names, names[1:] + names[0])]
    links[2] = dataclasses.replace(links[2], cost_ab=1, cost_ba=1)
    return Topology("ring5auto", tuple(NodeSpec(n, 1) for n in names), tuple(links),
                    costs=costs)


def lsas(net: EmbeddedNetwork) -> int:
    return sum(node.router.stats["lsas_originated"] for node in net.running())


def interface(net: EmbeddedNetwork, a: str, b: str) -> str:
    return net.plan.link(a, b).address_of(a)


def cost(net: EmbeddedNetwork, a: str, b: str) -> int:
    return net.nodes[a].router.interfaces[interface(net, a, b)].cost


def route_interface(net: EmbeddedNetwork, a: str, b: str) -> str | None:
    block = net.plan.nodes[b].block
    routes = {r["dest"]: r for r in net.nodes[a].status()["routes"]}
    return routes[block]["interface"]


def config(hold: float) -> NodeConfig:
    """Cost changes at most every ``hold`` s; key refills every 0.5 s (fewer wake-ups)."""
    return NodeConfig(cost_policy=CostPolicy(min_change_interval=hold), key_interval=0.5)


async def test_a_slow_link_gets_costlier_and_traffic_moves_without_flapping(autojump_clock):
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            net = await nursery.start(EmbeddedNetwork(ring5(), config=config(30)).run)
            assert await net.wait_converged(timeout=20) is not None
            a = net.nodes["A"]
            assert a.auto_costs == {interface(net, "A", "B"), interface(net, "A", "E")}
            assert route_interface(net, "A", "B") == interface(net, "A", "B")
            await trio.sleep_until(net.epoch + 10)
            assert cost(net, "A", "B") == 1 and lsas(net) > 0
            net.set_key_rate("A", "B", 10_000)  # 1 Mbit/s -> 10 kbit/s: cost 100
            net.set_key_rate("C", "D", 10_000)  # configured: stays 1
            await trio.sleep_until(net.epoch + 29)  # one change per 30 s since start
            assert cost(net, "A", "B") == 1
            await trio.sleep_until(net.epoch + 35)
            assert cost(net, "A", "B") == cost(net, "B", "A") == 100
            assert cost(net, "C", "D") == cost(net, "D", "C") == 1
            assert a.status()["links"][interface(net, "A", "B")]["cost"] == 100
            assert route_interface(net, "A", "B") == interface(net, "A", "E")
            assert route_interface(net, "B", "A") == interface(net, "B", "C")
            before = {n: net.nodes[n].forwarder.counters["forwarded"] for n in "CDE"}
            for _ in range(3):
                net.relay_key("A", "B", 256)
            await trio.sleep(1)
            assert net.keys["delivered"] == 3
            assert all(net.nodes[n].forwarder.counters["forwarded"] - before[n] == 3
                       for n in "CDE")
            changes, originated = a.counters["cost_changes"], lsas(net)
            await trio.sleep(60)  # a quiet minute: no cost change, no new LSA anywhere
            assert a.counters["cost_changes"] == changes == 1
            assert sum(n.counters["cost_changes"] for n in net.running()) == 2
            assert lsas(net) == originated
            nursery.cancel_scope.cancel()


async def test_a_drained_key_store_raises_the_cost_until_it_refills(autojump_clock):
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            net = await nursery.start(EmbeddedNetwork(ring5(), config=config(20)).run)
            assert await net.wait_converged(timeout=20) is not None
            await trio.sleep_until(net.epoch + 25)
            store = net.hardware["A"]["B"].store
            for _ in range(12):  # a consumer keeps A's pool towards B nearly empty
                spare = store.status(net.clock()).enc_level_bits // 8 - 64
                if spare > 0:
                    store.take(spare)
                await trio.sleep(0.25)
            assert cost(net, "A", "B") >= 3 and cost(net, "B", "A") == 1
            await trio.sleep_until(net.epoch + 50)  # refilled, and the hold has passed
            assert cost(net, "A", "B") == 1
            assert net.nodes["A"].counters["cost_changes"] == 2
            assert not net.key_reuse_detected()
            nursery.cancel_scope.cancel()


def test_static_topologies_and_configured_links_never_change_cost():
    net = EmbeddedNetwork(ring5("static"))
    node = QBBNode("A", net.topology, net.plan, net.hardware["A"])
    assert node.auto_costs == frozenset()
    auto = EmbeddedNetwork(ring5())
    assert QBBNode("C", auto.topology, auto.plan, auto.hardware["C"]).auto_costs == {
        interface(auto, "C", "B")}


def test_topology_costs_field_round_trips_and_is_checked():
    document = topology_to_dict(ring5())
    assert document["costs"] == "auto"
    assert "costs" not in topology_to_dict(ring5("static"))
    assert parse_topology(__import__("json").dumps(document)) == ring5()
    with pytest.raises(ConfigError, match="costs"):
        ring5("dynamic")


@settings(max_examples=100)
@given(st.lists(st.tuples(st.floats(0, 2e6), st.floats(0, 4e6)), min_size=1, max_size=40),
       st.floats(0.1, 30))
def test_link_cost_changes_at_most_once_per_interval(samples, step):
    policy = CostPolicy()
    link_cost = LinkCost(1, policy, since=0.0)
    changes = []
    for i, (rate, level) in enumerate(samples):
        now = (i + 1) * step
        new = link_cost.update(rate, level, now)
        if new is not None:
            assert new == computed_cost(rate, level, policy) == link_cost.cost
            changes.append(now)
    assert all(t >= policy.min_change_interval for t in changes[:1])
    assert all(b - a >= policy.min_change_interval for a, b in zip(changes, changes[1:]))
    assert link_cost.changes == len(changes)


def test_link_cost_hysteresis():
    link_cost = LinkCost(100, CostPolicy(min_change_interval=0))
    assert link_cost.update(1e6 / 120, 1e9, 0.0) is None  # 120: within 25 %
    assert link_cost.update(1e6 / 130, 1e9, 1.0) == 130
    assert link_cost.update(1e6 / 130, 0.0, 2.0) == 520  # empty store: 1 + penalty 3


def test_a_node_restarting_after_a_rate_change_starts_from_the_current_rate():
    net = EmbeddedNetwork(ring5())
    for me, peer in (("A", "B"), ("B", "A")):
        net.hardware[me][peer].devices.set_rate(0, 10_000, 0.0)
    node = QBBNode("A", net.topology, net.plan, net.hardware["A"])
    costs = {a: i.cost for a, i in node.router.interfaces.items()}
    assert costs == {interface(net, "A", "B"): 100, interface(net, "A", "E"): 1}
    static = EmbeddedNetwork(ring5("static"))
    static.hardware["A"]["B"].devices.set_rate(0, 10_000, 0.0)
    node = QBBNode("A", static.topology, static.plan, static.hardware["A"])
    assert node.router.interfaces[interface(static, "A", "B")].cost == 1

"""The whole protocol over simulated links: convergence, failures, costs, areas."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbb.errors import ConfigError
from qbb.routing.cost import CostPolicy, LinkCost, computed_cost
from qbb.routing.lsa import RouterFlags
from qbb.routing.router import compute_tables, summaries_to_originate
from routing_sim import (
    advertised_links, build_network, converge, expected_links, own_router_lsa, random_network,
    reconverge, shortest_costs)


def check_ground_truth(sim) -> None:
    """Identical LSDBs hold every router's true links; tables give shortest costs."""
    truth = expected_links(sim)
    names = sorted(sim.routers)
    for origin in names:
        rid = sim.routers[origin].router_id
        for holder in names:
            assert advertised_links(own_router_lsa(sim, holder, origin)) == truth[rid]
    if compute_tables is None:
        return
    for name in names:
        router = sim.routers[name]
        costs = shortest_costs(truth, router.router_id)
        main = router.tables().main
        for other in sim.routers.values():
            if other is not router:
                assert main.router(other.router_id).cost == costs[other.router_id]


@settings(max_examples=8, deadline=None)
@given(n=st.integers(2, 7), seed=st.integers(0, 10_000))
def test_random_topologies_converge_to_the_ground_truth(n, seed):
    sim = random_network(n, seed=seed)
    sim.start()
    assert sim.run_until_converged(120) is not None
    check_ground_truth(sim)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), signal=st.booleans())
def test_link_failure_and_repair_reconverge(seed, signal):
    sim = random_network(6, seed=seed, extra=4)
    sim.start()
    assert sim.run_until_converged(120) is not None
    link = sim.links[seed % len(sim.links)]
    for up in (False, True):
        start = sim.now
        sim.set_link(link, up, signal=signal)
        done = sim.run_until_converged(120)
        assert done is not None
        if not up and not signal:
            assert done - start >= 3  # noticed through RouterDeadInterval (4 s)
        if all(len(group) == len(sim.routers) for _, group in sim.components()):
            check_ground_truth(sim)


def test_convergence_figures():
    result = converge(8, seed=1)
    assert result["converged"] and 0 < result["seconds"] < 10
    assert result["lsas_sent"] > 0 and result["packets"] > result["lsas_sent"] / 20
    again = reconverge(8, seed=1)
    assert again["down"]["converged"] and again["up"]["converged"]
    assert 3 <= again["down"]["seconds"] <= 6  # RouterDeadInterval 4 s + flooding
    assert again["up"]["lsas_sent"] > 0


def test_simulation_is_deterministic():
    assert converge(6, seed=5) == converge(6, seed=5)
    assert reconverge(5, seed=2, signal=True) == reconverge(5, seed=2, signal=True)


def test_cost_change_is_flooded():
    sim = random_network(4, seed=7)
    sim.start()
    assert sim.run_until_converged(60) is not None
    name = sorted(sim.routers)[0]
    router = sim.routers[name]
    address = sorted(router.interfaces)[0]
    for addr, raw in router.set_cost(address, 77, sim.now):
        sim._transmit(name, addr, raw)
    sim._timers[name] = router.next_timer()
    assert sim.run_until_converged(60) is not None
    check_ground_truth(sim)
    assert any(m == 77 for _, m in advertised_links(own_router_lsa(sim, sorted(sim.routers)[-1],
                                                                   name)))
    with pytest.raises(ConfigError):
        router.set_cost(address, 0, sim.now)


def test_seed_figure_18_asymmetric_costs():
    sim = build_network({"QBB1": 1, "QBB2": 1}, [("QBB1", "QBB2")],
                        {("QBB1", "QBB2"): 6, ("QBB2", "QBB1"): 5})
    sim.start()
    assert sim.run_until_converged(30) is not None
    check_ground_truth(sim)
    lsa = own_router_lsa(sim, "QBB2", "QBB1")
    assert {(link.link_type, link.metric) for link in lsa.links} == {(1, 6), (3, 6), (3, 0)}


def test_three_areas_without_backbone():
    sim = build_network({"a": 1, "b": 1, "c": 2, "d": 2, "e": 3},
                        [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d"), ("d", "e")],
                        link_areas={("b", "c"): 2, ("d", "e"): 3})
    sim.start()
    assert sim.run_until_converged(60) is not None
    border = {n for n, r in sim.routers.items() if r.is_border()}
    assert border == {"b", "d"}
    for name in border:
        for area in {i.area for i in sim.routers[name].interfaces.values()}:
            rid = sim.routers[name].router_id
            lsa = sim.routers[name].database()[area][(1, rid, rid)]
            assert lsa.flags == RouterFlags.B
    if compute_tables is None or summaries_to_originate is None:
        return
    for router in sim.routers.values():  # every node address is reachable from everywhere
        tables = router.tables()
        for other in sim.routers.values():
            assert tables.main.lookup(other.router_id) is not None


def test_computed_cost_rule():
    assert computed_cost(1e6, 1e7) == 1
    assert computed_cost(1e4, 1e7) == 100
    assert computed_cost(1e4, 0) == 400  # empty key store: 1 + penalty 3
    assert computed_cost(1e4, 5e5) == 250
    assert computed_cost(0, 1e9) == 0xFFFF and computed_cost(1, 1e9) == 0xFFFF
    with pytest.raises(ConfigError):
        CostPolicy(reference_rate=0)


@settings(max_examples=40)
@given(st.floats(1, 1e7), st.floats(0, 1e8))
def test_computed_cost_is_a_metric(rate, level):
    assert 1 <= computed_cost(rate, level) <= 0xFFFF


def test_cost_hysteresis_and_rate_limit():
    cost = LinkCost(100, CostPolicy(hysteresis=0.25, min_change_interval=60))
    assert cost.update(1e4 / 1.2, 1e7, 0.0) is None  # 120: within 25 %
    assert cost.update(1e3, 1e7, 1.0) == 1000
    assert cost.update(1e4, 1e7, 30.0) is None  # too soon after the last change
    assert cost.update(1e4, 1e7, 61.0) == 100 and cost.cost == 100

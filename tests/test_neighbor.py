"""The neighbour state machine table (RFC 2328 §10.3), pair by pair, and adjacency forming."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbb.routing.interface import InterfaceConfig
from qbb.routing.neighbor import (
    TABLE, Action, NeighborEvent, NeighborState, format_table, transition)
from qbb.routing.router import Router
from routing_sim import build_network, pair

S, E, A = NeighborState, NeighborEvent, Action

# (state, event, new state, actions): every transition RFC 2328 §10.3 lists.
EXPECTED = [
    (S.DOWN, E.START, S.ATTEMPT, (A.START_INACTIVITY_TIMER,)),
    (S.DOWN, E.HELLO_RECEIVED, S.INIT, (A.START_INACTIVITY_TIMER,)),
    (S.ATTEMPT, E.HELLO_RECEIVED, S.INIT, (A.START_INACTIVITY_TIMER,)),
    (S.INIT, E.HELLO_RECEIVED, S.INIT, (A.START_INACTIVITY_TIMER,)),
    (S.FULL, E.HELLO_RECEIVED, S.FULL, (A.START_INACTIVITY_TIMER,)),
    (S.INIT, E.TWO_WAY_RECEIVED, S.EXSTART, (A.START_EXSTART,)),
    (S.TWO_WAY, E.ADJ_OK, S.EXSTART, (A.START_EXSTART,)),
    (S.EXSTART, E.NEGOTIATION_DONE, S.EXCHANGE, (A.START_EXCHANGE,)),
    (S.EXCHANGE, E.EXCHANGE_DONE, S.LOADING, (A.START_LOADING,)),
    (S.LOADING, E.LOADING_DONE, S.FULL, (A.ORIGINATE_ROUTER_LSA,)),
    (S.EXCHANGE, E.SEQ_NUMBER_MISMATCH, S.EXSTART, (A.CLEAR_LISTS, A.START_EXSTART)),
    (S.LOADING, E.BAD_LS_REQ, S.EXSTART, (A.CLEAR_LISTS, A.START_EXSTART)),
    (S.FULL, E.SEQ_NUMBER_MISMATCH, S.EXSTART,
     (A.CLEAR_LISTS, A.START_EXSTART, A.ORIGINATE_ROUTER_LSA)),
    (S.EXCHANGE, E.ONE_WAY, S.INIT, (A.CLEAR_LISTS,)),
    (S.FULL, E.ONE_WAY, S.INIT, (A.CLEAR_LISTS, A.ORIGINATE_ROUTER_LSA)),
    (S.INIT, E.ONE_WAY, S.INIT, ()),
    (S.FULL, E.TWO_WAY_RECEIVED, S.FULL, ()),
    (S.EXCHANGE, E.TWO_WAY_RECEIVED, S.EXCHANGE, ()),
]


@pytest.mark.parametrize("state,event,new,actions", EXPECTED,
                         ids=[f"{s.name}-{e.name}" for s, e, _, _ in EXPECTED])
def test_listed_transitions(state, event, new, actions):
    assert transition(state, event) == (actions, new)


@pytest.mark.parametrize("event", [E.KILL_NBR, E.LL_DOWN, E.INACTIVITY_TIMER])
@pytest.mark.parametrize("state", list(S))
def test_any_state_to_down(state, event):
    actions, new = transition(state, event)
    assert new is S.DOWN
    assert A.CLEAR_LISTS in actions and A.STOP_INACTIVITY_TIMER in actions
    assert (A.ORIGINATE_ROUTER_LSA in actions) == (state is S.FULL)


def test_table_is_total_and_typed():
    assert set(TABLE) == {(s, e) for s in S for e in E}
    for (state, event), (actions, new) in TABLE.items():
        assert isinstance(new, NeighborState)
        assert all(isinstance(a, Action) for a in actions)
        if A.ORIGINATE_ROUTER_LSA in actions:  # only adjacency changes touch the LSA
            assert (state is S.FULL) != (new is S.FULL)


def test_unlisted_pairs_are_ignored():
    for state in S:
        for event in (E.NEGOTIATION_DONE, E.EXCHANGE_DONE, E.LOADING_DONE):
            if (state, event) not in {(s, e) for s, e, _, _ in EXPECTED}:
                assert transition(state, event) == ((), state)


def test_format_table_prints_every_change():
    text = format_table()
    assert "INIT      | 2-WayReceived" in text and text.count("\n") >= 40
    assert len(format_table(changes_only=False).splitlines()) == len(S) * len(E)


@settings(max_examples=50)
@given(st.lists(st.sampled_from(list(E)), max_size=30))
def test_any_event_sequence_stays_in_the_table(events):
    state = S.DOWN
    for event in events:
        _, state = transition(state, event)
        assert isinstance(state, NeighborState)


# -- adjacency forming through the router -----------------------------------------------

def test_pair_becomes_full_higher_id_is_master():
    sim = pair()
    a, b = sim.routers["a"], sim.routers["b"]
    (na,), (nb,) = a.neighbors().values(), b.neighbors().values()
    assert na.state is nb.state is S.FULL
    assert na.router_id == b.router_id and nb.router_id == a.router_id
    assert nb.master and not na.master  # 1.1.0.9 > 1.1.0.5
    assert a.stats["nbr_NEGOTIATION_DONE"] == 1 == b.stats["nbr_NEGOTIATION_DONE"]


def test_hello_interval_mismatch_prevents_adjacency():
    sim = build_network({"a": 1, "b": 1}, [("a", "b")])
    b = sim.routers["b"]
    (address,) = b.interfaces
    old = b.interfaces[address].config
    b.interfaces[address].config = InterfaceConfig(
        address=old.address, area=old.area, hello_interval=2, router_dead_interval=8)
    sim.start()
    sim.run(10)
    assert not sim.routers["a"].neighbors()
    assert sim.routers["a"].drops["hello_interval_mismatch"] >= 3


def test_dead_interval_kills_the_neighbour():
    sim = pair()
    link = sim.links[0]
    sim.set_link(link, False)
    start = sim.now
    done = sim.run_until_converged(30)
    assert done is not None and 3 <= done - start <= 5  # RouterDeadInterval 4 s
    assert not sim.routers["a"].neighbors() and not sim.routers["b"].neighbors()


def test_interface_down_kills_at_once():
    sim = pair()
    sim.set_link(sim.links[0], False, signal=True)
    assert not sim.routers["a"].neighbors() and not sim.routers["b"].neighbors()


def test_router_without_neighbours_has_only_timers():
    router = Router("1.1.0.5", interfaces=[InterfaceConfig(address="1.1.128.1", area="0.0.0.1")])
    out = router.interface_up("1.1.128.1", 0.0)
    assert [a for a, _ in out] == ["1.1.128.1"]  # one Hello
    assert router.next_timer() == 10.0

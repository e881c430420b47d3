"""The QKDTL connection state machine table (qbb/transport/fsm.py), pair by pair."""

from __future__ import annotations

import pytest

from qbb.errors import QbbError
from qbb.transport.fsm import (TRANSITIONS, Event, IllegalTransition, State, format_table,
                               transition)

S, E = State, Event

# The expected table, written out independently of fsm._build (RFC 793 Figure 6, minus
# simultaneous open, plus ABORT / TIMEOUT / RECV_RST from every live state).
LIVE = [S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING,
        S.CLOSE_WAIT, S.LAST_ACK]
EXPECTED = {
    (S.CLOSED, E.OPEN): S.SYN_SENT,
    (S.CLOSED, E.RECV_SYN): S.SYN_RECEIVED,
    (S.SYN_SENT, E.RECV_SYN_ACK): S.ESTABLISHED,
    (S.SYN_SENT, E.CLOSE): S.CLOSED,
    (S.SYN_RECEIVED, E.RECV_ACK): S.ESTABLISHED,
    (S.SYN_RECEIVED, E.CLOSE): S.FIN_WAIT_1,
    (S.ESTABLISHED, E.CLOSE): S.FIN_WAIT_1,
    (S.ESTABLISHED, E.RECV_FIN): S.CLOSE_WAIT,
    (S.FIN_WAIT_1, E.RECV_ACK): S.FIN_WAIT_2,
    (S.FIN_WAIT_1, E.RECV_FIN): S.CLOSING,
    (S.FIN_WAIT_2, E.RECV_FIN): S.TIME_WAIT,
    (S.CLOSING, E.RECV_ACK): S.TIME_WAIT,
    (S.CLOSE_WAIT, E.CLOSE): S.LAST_ACK,
    (S.LAST_ACK, E.RECV_ACK): S.CLOSED,
    (S.TIME_WAIT, E.RECV_FIN): S.TIME_WAIT,
    (S.TIME_WAIT, E.TIME_WAIT_EXPIRED): S.CLOSED,
    (S.TIME_WAIT, E.ABORT): S.CLOSED,
    **{(s, e): S.CLOSED for s in LIVE for e in (E.RECV_RST, E.ABORT, E.TIMEOUT)},
}
ALL_PAIRS = [(s, e) for s in State for e in Event]


def test_table_is_exactly_the_expected_one():
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize("state,event", ALL_PAIRS, ids=lambda x: x.name)
def test_every_pair(state, event):
    if (state, event) in EXPECTED:
        assert transition(state, event) is EXPECTED[state, event]
    else:
        with pytest.raises(IllegalTransition) as info:
            transition(state, event)
        assert info.value.state is state and info.value.event is event
        assert isinstance(info.value, QbbError)
        assert state.value in str(info.value)


def test_every_state_is_reachable_from_closed_and_leads_back():
    reach, frontier = {S.CLOSED}, [S.CLOSED]
    while frontier:
        state = frontier.pop()
        for (s, _), new in TRANSITIONS.items():
            if s is state and new not in reach:
                reach.add(new)
                frontier.append(new)
    assert reach == set(State)
    for state in State:
        if state is not S.CLOSED:
            assert any(s is state and new is S.CLOSED for (s, _), new in TRANSITIONS.items())


def test_format_table_lists_every_pair_once():
    text = format_table()
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(TRANSITIONS)
    for (state, event), new in TRANSITIONS.items():
        assert f"| {state.value} | {event.value} | {new.value} |" in rows

"""The neighbour state machine (RFC 2328 §10.1-10.3) as a table, and the neighbour data.

:data:`TABLE` maps every ``(state, event)`` pair to ``(actions, new state)``; it is plain
data, printed by :func:`format_table` and tested pair by pair.  Pairs that RFC 2328 §10.3
does not list are entries with no action and an unchanged state (the event is ignored).
The actions are names (:class:`Action`); :mod:`qbb.routing.router` executes them:

* ``START_INACTIVITY_TIMER`` - (re)start the RouterDeadInterval timer;
* ``STOP_INACTIVITY_TIMER`` - stop it (neighbour gone);
* ``START_EXSTART`` - new DD sequence number, claim master, send empty DD with I|M|MS;
* ``START_EXCHANGE`` - snapshot the area database into the summary list (§10.3
  NegotiationDone); MaxAge LSAs go to the retransmission list instead;
* ``START_LOADING`` - send LS Requests; when the request list is empty the router
  generates ``LOADING_DONE`` at once (§10.3 ExchangeDone: "new state Full");
* ``CLEAR_LISTS`` - clear the summary, request and retransmission lists;
* ``ORIGINATE_ROUTER_LSA`` - the adjacency came up or went away: the router's
  Router-LSA changes (§12.4 event 5).

QBB networks are point-to-point only, so the "should an adjacency form?" decision of
§10.4 is always yes: 2-WayReceived in Init goes straight to ExStart, AdjOK? in 2-Way
starts it.  ``START`` (NBMA only) is kept for completeness.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from qbb.routing.lsa import LsaHeader
from qbb.routing.packet import DdFlags
from qbb.routing.common import Options

__all__ = ["Action", "Neighbor", "NeighborEvent", "NeighborState", "TABLE",
           "format_table", "transition"]

Key = tuple[int, str, str]


class NeighborState(enum.IntEnum):
    """§10.1, ordered so that ``state >= EXCHANGE`` reads like the RFC."""

    DOWN = 0
    ATTEMPT = 1
    INIT = 2
    TWO_WAY = 3
    EXSTART = 4
    EXCHANGE = 5
    LOADING = 6
    FULL = 7


class NeighborEvent(enum.Enum):
    """§10.2."""

    HELLO_RECEIVED = "HelloReceived"
    START = "Start"
    TWO_WAY_RECEIVED = "2-WayReceived"
    NEGOTIATION_DONE = "NegotiationDone"
    EXCHANGE_DONE = "ExchangeDone"
    BAD_LS_REQ = "BadLSReq"
    LOADING_DONE = "LoadingDone"
    ADJ_OK = "AdjOK?"
    SEQ_NUMBER_MISMATCH = "SeqNumberMismatch"
    ONE_WAY = "1-WayReceived"
    KILL_NBR = "KillNbr"
    INACTIVITY_TIMER = "InactivityTimer"
    LL_DOWN = "LLDown"


class Action(enum.Enum):
    """What a transition asks the router to do (see the module docstring)."""

    START_INACTIVITY_TIMER = "start inactivity timer"
    STOP_INACTIVITY_TIMER = "stop inactivity timer"
    START_EXSTART = "start ExStart"
    START_EXCHANGE = "start Exchange"
    START_LOADING = "start Loading"
    CLEAR_LISTS = "clear lists"
    ORIGINATE_ROUTER_LSA = "originate Router-LSA"


S, E, A = NeighborState, NeighborEvent, Action
Transition = tuple[tuple[Action, ...], NeighborState]


def _with_adjacency(state: NeighborState, actions: tuple[Action, ...]) -> tuple[Action, ...]:
    """Leaving Full withdraws the adjacency from the Router-LSA."""
    return actions + (A.ORIGINATE_ROUTER_LSA,) if state is S.FULL else actions


def _build() -> dict[tuple[NeighborState, NeighborEvent], Transition]:
    table: dict[tuple[NeighborState, NeighborEvent], Transition] = {
        (s, e): ((), s) for s in S for e in E}
    table[S.DOWN, E.START] = ((A.START_INACTIVITY_TIMER,), S.ATTEMPT)
    table[S.DOWN, E.HELLO_RECEIVED] = ((A.START_INACTIVITY_TIMER,), S.INIT)
    table[S.ATTEMPT, E.HELLO_RECEIVED] = ((A.START_INACTIVITY_TIMER,), S.INIT)
    for s in S:
        if s >= S.INIT:
            table[s, E.HELLO_RECEIVED] = ((A.START_INACTIVITY_TIMER,), s)
        if s >= S.TWO_WAY:
            table[s, E.ONE_WAY] = (_with_adjacency(s, (A.CLEAR_LISTS,)), S.INIT)
        for event in (E.KILL_NBR, E.LL_DOWN, E.INACTIVITY_TIMER):
            actions = (A.CLEAR_LISTS, A.STOP_INACTIVITY_TIMER)
            table[s, event] = (_with_adjacency(s, actions), S.DOWN)
    table[S.INIT, E.TWO_WAY_RECEIVED] = ((A.START_EXSTART,), S.EXSTART)
    table[S.TWO_WAY, E.ADJ_OK] = ((A.START_EXSTART,), S.EXSTART)
    table[S.EXSTART, E.NEGOTIATION_DONE] = ((A.START_EXCHANGE,), S.EXCHANGE)
    table[S.EXCHANGE, E.EXCHANGE_DONE] = ((A.START_LOADING,), S.LOADING)
    table[S.LOADING, E.LOADING_DONE] = ((A.ORIGINATE_ROUTER_LSA,), S.FULL)
    for s in (S.EXCHANGE, S.LOADING, S.FULL):
        for event in (E.SEQ_NUMBER_MISMATCH, E.BAD_LS_REQ):
            actions = (A.CLEAR_LISTS, A.START_EXSTART)
            table[s, event] = (_with_adjacency(s, actions), S.EXSTART)
    return table


TABLE: dict[tuple[NeighborState, NeighborEvent], Transition] = _build()


def transition(state: NeighborState, event: NeighborEvent) -> Transition:
    """``(actions, new state)`` for ``event`` in ``state``."""
    return TABLE[state, event]


def format_table(changes_only: bool = True) -> str:
    """The table as aligned text, one ``state | event | actions | new state`` row per pair."""
    rows = []
    for (state, event), (actions, new) in TABLE.items():
        if changes_only and not actions and new is state:
            continue
        names = ", ".join(a.value for a in actions) or "-"
        rows.append(f"{state.name:<9} | {event.value:<17} | {names:<58} | {new.name}")
    return "\n".join(rows)


@dataclass(eq=False)
class Neighbor:
    """The neighbour data structure (§10): one per point-to-point interface."""

    router_id: str
    state: NeighborState = NeighborState.DOWN
    inactivity_due: float | None = None
    master: bool = False  # True when *this* router is the master of the exchange
    dd_sequence: int = 0
    options: Options | None = None
    last_received_dd: tuple[DdFlags, Options, int] | None = None
    last_sent_dd: bytes | None = None
    more_sent: bool = True  # M bit of the last DD we sent
    dd_rxmt_due: float | None = None
    summary_list: list[LsaHeader] = field(default_factory=list)
    request_list: dict[Key, LsaHeader] = field(default_factory=dict)
    outstanding: set[Key] = field(default_factory=set)
    request_due: float | None = None
    retransmission: dict[Key, float] = field(default_factory=dict)  # key -> due time

    def clear_lists(self) -> None:
        self.summary_list.clear()
        self.request_list.clear()
        self.outstanding.clear()
        self.retransmission.clear()
        self.request_due = None
        self.dd_rxmt_due = None
        self.last_sent_dd = None
        self.last_received_dd = None

    def next_due(self) -> float | None:
        """The earliest of this neighbour's timers, or None."""
        times = [t for t in (self.inactivity_due, self.dd_rxmt_due, self.request_due)
                 if t is not None]
        if self.retransmission:
            times.append(min(self.retransmission.values()))
        return min(times) if times else None

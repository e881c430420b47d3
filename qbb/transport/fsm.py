"""The QKDTL connection state machine as a table (SECOQC seed 002 §3.3; RFC 793 §3.2).

A QKDTL connection carries one key stream from the initiator's node to the responder's
node; its life follows TCP's connection diagram (RFC 793 Figure 6) with RFC 793's state
names.  :data:`TRANSITIONS` maps every *allowed* ``(state, event)`` pair to the next state;
it is plain data, printed by :func:`format_table` (the table in ``docs/transport.md`` is
its output) and tested pair by pair.  :func:`transition` raises :class:`IllegalTransition`
for any pair the table does not hold, so a connection can never drift into a state the
diagram does not allow: :class:`qbb.transport.connection.Connection` makes every state
change through it.

Differences from RFC 793, each deliberate:

* no simultaneous open (the roles are fixed: one initiator, one responder), so there is
  no ``SYN_SENT + RECV_SYN``;
* a key stream has no half-close: when the peer's FIN arrives in ESTABLISHED the
  connection enters CLOSE_WAIT and closes at once itself (``CLOSE_WAIT + CLOSE``);
* ``TIMEOUT`` (retransmissions exhausted, connect or idle timeout) and ``ABORT`` (RST sent
  by us) lead from every live state to CLOSED, as does an acceptable ``RECV_RST``.
"""

from __future__ import annotations

import enum

from qbb.errors import QbbError

__all__ = ["Event", "IllegalTransition", "State", "TRANSITIONS", "format_table", "transition"]


class State(enum.Enum):
    """RFC 793 §3.2 connection states."""

    CLOSED = "CLOSED"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSING = "CLOSING"
    CLOSE_WAIT = "CLOSE-WAIT"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


class Event(enum.Enum):
    """What moves a connection: a command, an arriving segment or a timer."""

    OPEN = "open"                      # initiator: send SYN
    RECV_SYN = "recv SYN"              # responder: a SYN arrived (accept_syn)
    RECV_SYN_ACK = "recv SYN+ACK"      # initiator: the acceptance arrived
    RECV_ACK = "recv ACK"              # an ACK of our SYN or of our FIN
    RECV_FIN = "recv FIN"              # the peer's FIN, in sequence
    RECV_RST = "recv RST"              # an acceptable RST
    CLOSE = "close"                    # graceful close: send FIN
    ABORT = "abort"                    # send RST (abort, reject)
    TIMEOUT = "timeout"                # retries exhausted, connect or idle timeout
    TIME_WAIT_EXPIRED = "2MSL expired"


class IllegalTransition(QbbError):
    """An event that the state machine does not allow in the current state."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"event {event.value!r} is not allowed in state {state.value}")
        self.state, self.event = state, event


S, E = State, Event
_LIVE = (S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING,
         S.CLOSE_WAIT, S.LAST_ACK)


def _build() -> dict[tuple[State, Event], State]:
    table = {
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
    }
    for state in _LIVE:
        for event in (E.RECV_RST, E.ABORT, E.TIMEOUT):
            table[state, event] = S.CLOSED
    return table


#: Every allowed ``(state, event)`` pair and the state it leads to.
TRANSITIONS: dict[tuple[State, Event], State] = _build()


def transition(state: State, event: Event) -> State:
    """The state after ``event`` in ``state``; :class:`IllegalTransition` if not allowed."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(state, event) from None


def format_table() -> str:
    """The table as a markdown table, one ``state | event | next state`` row per pair."""
    rows = ["| state | event | next state |", "|---|---|---|"]
    order = {state: i for i, state in enumerate(State)}
    pairs = sorted(TRANSITIONS.items(),
                   key=lambda item: (order[item[0][0]], list(Event).index(item[0][1])))
    for (state, event), new in pairs:
        rows.append(f"| {state.value} | {event.value} | {new.value} |")
    return "\n".join(rows)

"""Link connection management of Q3P as a transition table (seed 002 §3.1; ``docs/q3p.md``).

States: ``down`` (not started, or closed locally), ``handshaking`` (HANDSHAKEs go out
every ``handshake_retry`` until the peer acknowledges *this* instance's session nonce) and
``up`` (data flows).  :data:`TRANSITIONS` maps ``(state, event)`` to the next state and
the actions the endpoint performs, in order; a pair missing from the table leaves the
state unchanged and does nothing.  ``print(format_table())`` shows it.

Events
    ``START`` -- :meth:`start`; ``CONFIRMED`` -- an authentic HANDSHAKE_ACK echoing our
    nonce; ``PEER_RESTART`` -- an authentic HANDSHAKE or HANDSHAKE_ACK with a session
    nonce other than the peer's known one; ``DEAD`` -- no valid frame for the dead
    interval; ``PEER_CLOSED`` -- an authentic CLOSE or RESET; ``CLOSE`` -- local close.
"""

from __future__ import annotations

import enum


class State(str, enum.Enum):
    DOWN = "down"
    HANDSHAKING = "handshaking"
    UP = "up"


class Event(enum.Enum):
    START = "start"
    CONFIRMED = "confirmed"
    PEER_RESTART = "peer_restart"
    DEAD = "dead"
    PEER_CLOSED = "peer_closed"
    CLOSE = "close"


class Action(enum.Enum):
    SEND_HANDSHAKE = "send_handshake"  # (re)arm the HANDSHAKE timer at once
    LINK_UP = "link_up"  # report LinkUp, send a SYNC
    LINK_DOWN = "link_down"  # report LinkDown
    RESET_SESSION = "reset_session"  # message numbers to 0, unacknowledged messages re-queued
    SEND_CLOSE = "send_close"


S, E, A = State, Event, Action

TRANSITIONS: dict[tuple[State, Event], tuple[State, tuple[Action, ...]]] = {
    (S.DOWN, E.START): (S.HANDSHAKING, (A.SEND_HANDSHAKE,)),
    (S.HANDSHAKING, E.CONFIRMED): (S.UP, (A.LINK_UP,)),
    (S.HANDSHAKING, E.PEER_RESTART): (S.HANDSHAKING, (A.RESET_SESSION, A.SEND_HANDSHAKE)),
    (S.HANDSHAKING, E.CLOSE): (S.DOWN, (A.SEND_CLOSE,)),
    (S.UP, E.PEER_RESTART): (S.HANDSHAKING,
                             (A.LINK_DOWN, A.RESET_SESSION, A.SEND_HANDSHAKE)),
    (S.UP, E.DEAD): (S.HANDSHAKING, (A.LINK_DOWN, A.SEND_HANDSHAKE)),
    (S.UP, E.PEER_CLOSED): (S.HANDSHAKING, (A.LINK_DOWN, A.SEND_HANDSHAKE)),
    (S.UP, E.CLOSE): (S.DOWN, (A.LINK_DOWN, A.SEND_CLOSE)),
}


def transition(state: State, event: Event) -> tuple[State, tuple[Action, ...]]:
    """Next state and actions; unlisted pairs keep the state and do nothing."""
    return TRANSITIONS.get((state, event), (state, ()))


def format_table() -> str:
    """The table as text, one ``state + event -> state [actions]`` line per entry."""
    return "\n".join(
        f"{state.value:12} + {event.value:12} -> {new.value:12} "
        f"[{', '.join(action.value for action in actions)}]"
        for (state, event), (new, actions) in TRANSITIONS.items())


__all__ = ["Action", "Event", "State", "TRANSITIONS", "format_table", "transition"]

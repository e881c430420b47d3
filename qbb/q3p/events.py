"""Events a Q3P endpoint reports to the layer above (seed 002 §3.1; ``docs/q3p.md``).

:meth:`qbb.q3p.endpoint.Q3PEndpoint.events` returns them in the order they happened:

* :class:`Delivered` -- one upper-layer message, exactly once and in order per channel;
* :class:`LinkUp` / :class:`LinkDown` -- the link connection came up or went down;
* :class:`KeyStarved` -- the encryption pool ran short (``True``) or has key again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Delivered:
    channel: int
    payload: bytes


@dataclass(frozen=True)
class LinkUp:
    peer_id: str


@dataclass(frozen=True)
class LinkDown:
    peer_id: str
    reason: str


@dataclass(frozen=True)
class KeyStarved:
    starved: bool


Event = Union[Delivered, LinkUp, LinkDown, KeyStarved]

__all__ = ["Delivered", "Event", "KeyStarved", "LinkDown", "LinkUp"]

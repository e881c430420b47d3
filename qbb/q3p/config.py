"""Settings of one end of a Q3P link (seed 002 §3.1; ``docs/q3p.md``).

:class:`LinkConfig` is what :class:`qbb.q3p.endpoint.Q3PEndpoint` needs besides its key
store.  All times are seconds of the driver's clock (the endpoint never reads a clock).

* ``mtu``: the largest Q3P frame this end sends or accepts, header and tag included
  (at most 65535: the HANDSHAKE field is 16 bits).  The link uses the smaller of both ends'.
* ``window``: frames in flight (sender) and out-of-order frames buffered (receiver).
* ``rto_initial`` / ``rto_min`` / ``rto_max``: RFC 6298 retransmission timeout bounds.
* ``rto_probe``: on a timeout resend only the oldest frame, judge the others by the next
  ACKs and raise the RTO floor after a spurious timeout (:mod:`qbb.q3p.rto`); ``False``
  is the classic policy (every timed-out frame is resent).
* ``keepalive``: a KEEPALIVE goes out after this long without sending anything;
  ``dead_interval``: the link is declared down after this long without a valid frame.
* ``handshake_retry``: HANDSHAKE repetition while the link is not up.
* ``authenticate_all``: every frame carries a one-time MAC.  ``False`` lets plaintext DATA
  frames go without a tag (no replay or forgery protection for them: for experiments only).
* ``ack_delay`` / ``ack_every``: an ACK leaves after ``ack_every`` new frames (at most half
  the window) or ``ack_delay`` after the first unacknowledged one, whichever comes first.
  Every ACK wakes the sender for a full turn of its driver (~0.1-0.3 ms of CPU in
  ``qbb bench relay``), so the default of 4 instead of 2 cut the ingress's CPU per 57 KB
  frame by about a fifth.
* ``key_poll``: the endpoint pulls key from its devices at most this often on its own.
* ``max_message``, ``queue_messages``, ``queue_bytes``: backpressure limits of ``send``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qbb.codec import is_canonical_ipv4
from qbb.errors import ConfigError
from qbb.q3p.packet import Q3P_HEADER_LEN, Q3P_TAG_LEN

MIN_MTU = Q3P_HEADER_LEN + Q3P_TAG_LEN + 16  # room for a 16-byte fragment at least
MAX_MTU = 0xFFFF
MAX_WINDOW = 1 << 16  # bounds the SACK bitmap (8 KiB) and the receive buffer


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"link {name} must be an int in {low}..{high}, got {value!r}")


def _check_time(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"link {name} must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True)
class LinkConfig:
    """One end's view of a QBB link; both ends name each other by node id."""

    node_id: str
    peer_id: str
    link_id: int
    mtu: int = 1400
    window: int = 64
    rto_initial: float = 0.2
    rto_max: float = 5.0
    keepalive: float = 1.0
    dead_interval: float = 4.0
    handshake_retry: float = 0.5
    authenticate_all: bool = True
    rto_min: float = 0.05
    rto_probe: bool = True
    ack_delay: float = 0.01
    ack_every: int = 4
    key_poll: float = 0.01
    max_message: int = 16 << 20
    queue_messages: int = 4096
    queue_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        for name in ("node_id", "peer_id"):
            if not is_canonical_ipv4(getattr(self, name)):
                raise ConfigError(f"link {name} must be a dotted-quad address, "
                                  f"got {getattr(self, name)!r}")
        if self.node_id == self.peer_id:
            raise ConfigError(f"a link needs two distinct node ids, got {self.node_id} twice")
        _check_int("link_id", self.link_id, 0, 0xFFFFFFFF)
        _check_int("mtu", self.mtu, MIN_MTU, MAX_MTU)
        _check_int("window", self.window, 1, MAX_WINDOW)
        _check_int("ack_every", self.ack_every, 1, MAX_WINDOW)
        _check_int("max_message", self.max_message, 1, 1 << 40)
        _check_int("queue_messages", self.queue_messages, 1, 1 << 40)
        _check_int("queue_bytes", self.queue_bytes, 1, 1 << 50)
        for name in ("rto_initial", "rto_max", "rto_min", "keepalive", "dead_interval",
                     "handshake_retry", "ack_delay", "key_poll"):
            _check_time(name, getattr(self, name))
        if not self.rto_min <= self.rto_initial <= self.rto_max:
            raise ConfigError("link timeouts need rto_min <= rto_initial <= rto_max")
        if self.keepalive >= self.dead_interval:
            raise ConfigError("link keepalive must be shorter than the dead interval")
        for name in ("authenticate_all", "rto_probe"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def max_payload(self) -> int:
        """Payload bytes of one authenticated frame of ``mtu`` bytes."""
        return self.mtu - Q3P_HEADER_LEN - Q3P_TAG_LEN

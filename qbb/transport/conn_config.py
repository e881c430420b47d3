"""Vocabulary of a QKDTL connection: roles, end points, configuration and events.

Re-exported by :mod:`qbb.transport.connection`, which is where callers import them from.
``docs/transport.md`` explains every setting; the defaults follow RFC 6298 (RTO 1 s
initially, at least 0.2 s as modern stacks use, at most 60 s) and RFC 5681 (initial
window of two segments).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from qbb.errors import ConfigError
from qbb.transport.packet import MAX_PAYLOAD, WINDOW_UNIT

__all__ = ["Closed", "ConnectionConfig", "Endpoint", "Established", "KeysAvailable",
           "Reset", "Role", "key_wire_bytes"]

KEY_BODY_HEADER = 6  # key_id u32, key_bits u16
#: Largest segment payload a QKDNL packet carries (65 535 - 20 - 20 header bytes).
MAX_SEGMENT_PAYLOAD = MAX_PAYLOAD - 40


def key_wire_bytes(key_bits: int) -> int:
    """Stream bytes one key of ``key_bits`` bits takes in a KEY payload."""
    return KEY_BODY_HEADER + (key_bits + 7) // 8


class Role(enum.Enum):
    """The initiator generates the keys; the responder receives them."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


@dataclass(frozen=True)
class Endpoint:
    """A transport end point: a QKD node address and a QKDTL port."""

    address: str
    port: int


@dataclass(frozen=True)
class ConnectionConfig:
    """Settings of one connection end (times in seconds, sizes as named).

    ``keys_per_segment`` 0 means as many keys as fit ``mss`` payload bytes (at least one);
    ``keepalive`` 0 means ``idle_timeout / 4``.  ``buffer_bits`` bounds the keys released
    to the application and not yet taken (plus, at the initiator, the keys in flight).
    """

    key_bits: int = 256
    mss: int = 1400
    keys_per_segment: int = 0
    buffer_bits: int = 1 << 20
    rto_initial: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 60.0
    syn_retries: int = 5
    data_retries: int = 8
    connect_timeout: float = 10.0
    idle_timeout: float = 300.0
    keepalive: float = 0.0
    time_wait: float = 2.0
    initial_cwnd: int = 2
    dupack_threshold: int = 3

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.key_bits <= 0xFFFF, "key_bits must be 1..65535"),
            (1 <= self.mss <= MAX_SEGMENT_PAYLOAD,
             f"mss must be 1..{MAX_SEGMENT_PAYLOAD} bytes"),
            (self.keys_per_segment >= 0, "keys_per_segment must be >= 0"),
            (self.buffer_bits >= 8 * (WINDOW_UNIT + key_wire_bytes(self.key_bits)),
             "buffer_bits must hold one KiB of window plus one key"),
            (0 < self.rto_min <= self.rto_initial <= self.rto_max, "need 0 < rto_min <= "
             "rto_initial <= rto_max"),
            (self.syn_retries >= 0 and self.data_retries >= 0, "retries must be >= 0"),
            (self.initial_cwnd >= 1 and self.dupack_threshold >= 1, "initial_cwnd and "
             "dupack_threshold must be >= 1"),
        ]
        for ok, why in checks:
            if not ok:
                raise ConfigError(f"ConnectionConfig: {why}")
        for name in ("connect_timeout", "idle_timeout", "time_wait"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"ConnectionConfig: {name} must be a positive number")

    @property
    def wire_per_key(self) -> int:
        return key_wire_bytes(self.key_bits)

    @property
    def segment_keys(self) -> int:
        """Keys per KEY segment: ``keys_per_segment`` bounded by the MSS, at least one."""
        fit = max(1, self.mss // self.wire_per_key)
        fit = max(1, min(fit, MAX_SEGMENT_PAYLOAD // self.wire_per_key))
        return min(fit, self.keys_per_segment) if self.keys_per_segment else fit

    @property
    def keepalive_interval(self) -> float:
        return self.keepalive or self.idle_timeout / 4


# --- events (drained with Connection.events()) --------------------------------------

@dataclass(frozen=True)
class Established:
    """The three-way handshake completed."""


@dataclass(frozen=True)
class KeysAvailable:
    """``count`` keys were released since the previous KeysAvailable event."""

    count: int


@dataclass(frozen=True)
class Closed:
    """The key stream ended gracefully (both FINs exchanged, or closed before setup)."""

    reason: str


@dataclass(frozen=True)
class Reset:
    """The connection was reset: by the peer (RST), by us (abort), or by a timeout."""

    reason: str

"""The application key interface's vocabulary: status codes, QoS, key chunks, the backend.

SECOQC seed 002 §3.4 (Figs. 15-16) names three phases: a server application *registers*
(name, port) with its QBB node and the registration becomes known network-wide; a client
application *connects* through its node to a registered application; in the
*secure-communication* phase either side asks for keys and both receive identical keys
with the same index.  The calls are modelled on ETSI GS QKD 004 (OPEN_CONNECT with QoS,
GET_KEY, CLOSE) and its status codes; codes from 64 up are qbb's own, for failures the
ETSI list folds together.

A :class:`KeyBackend` is what the API server (:mod:`qbb.keyapi.server`) calls; the QKDTL
transport service of a node implements it, tests may use an in-memory one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from qbb.errors import QbbError

__all__ = ["ApiError", "KeyBackend", "KeyChunk", "Qos", "Status"]


class Status(enum.IntEnum):
    """Result of an API call (ETSI GS QKD 004 §6 status values, then qbb's own)."""

    SUCCESSFUL = 0
    PEER_NOT_CONNECTED = 1          # connection set up, peer application not yet attached
    INSUFFICIENT_KEY = 2            # GET_KEY: not enough key available
    PEER_NOT_CONNECTED_GET_KEY = 3  # GET_KEY: peer application not yet connected
    NO_QKD_CONNECTION = 4           # no route to the destination node
    KSID_IN_USE = 5                 # OPEN_CONNECT: key stream id already in use
    TIMEOUT = 6                     # the call timed out
    QOS_NOT_MET = 7                 # OPEN_CONNECT: requested QoS cannot be met
    METADATA_SIZE_INSUFFICIENT = 8  # GET_KEY: metadata buffer too small
    UNKNOWN_APPLICATION = 64        # no application registered under that name
    PEER_GONE = 65                  # the connection was closed or reset by the peer/network
    UNKNOWN_KSID = 66               # no open key stream with that id here
    BAD_REQUEST = 67                # malformed or invalid request
    NAME_IN_USE = 68                # REGISTER: name already registered at this node
    INTERNAL_ERROR = 69             # the node failed to handle the call (see its log)


class ApiError(QbbError):
    """A call that failed with ``status``; ``reason`` says why in words."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(f"{status.name}: {reason}")
        self.status, self.reason = Status(status), reason


@dataclass(frozen=True)
class Qos:
    """QoS of OPEN_CONNECT (ETSI 004 ``QoS``, the parts qbb honours).

    ``key_chunk_size`` bits per key (1..65535); ``service`` "best_effort" or
    "guaranteed"; ``rate_bps`` lambda and ``burst_bits`` sigma of the token bucket
    (0 = unspecified for best effort; required > 0 for guaranteed); ``timeout_s``
    bounds OPEN_CONNECT and is the default GET_KEY wait.
    """

    key_chunk_size: int = 256
    service: str = "best_effort"
    rate_bps: int = 0
    burst_bits: int = 0
    timeout_s: float = 10.0


@dataclass(frozen=True)
class KeyChunk:
    """One key handed to an application: ``index`` counts from 0 per key stream and is
    the same at both ends for the same key bytes."""

    ksid: str
    index: int
    bits: int
    key: bytes = field(repr=False)


class KeyBackend(Protocol):
    """What a node offers its applications (implemented by the QKDTL transport service).

    Every method raises :class:`ApiError` with the matching :class:`Status` on failure.
    """

    def register(self, name: str) -> int:
        """Register server application ``name`` here; its QKDTL port."""

    def unregister(self, name: str) -> None:
        """Withdraw the registration of ``name``."""

    async def open_connect(self, destination: str, qos: Qos) -> str:
        """Connect to the application registered as ``destination`` anywhere in the
        network; the new key stream id (KSID)."""

    async def accept(self, name: str, timeout_s: float) -> str:
        """Wait for the next connection to registered ``name``; its KSID."""

    async def get_key(self, ksid: str, timeout_s: float) -> KeyChunk:
        """The next key of stream ``ksid`` (waits up to ``timeout_s``)."""

    async def close(self, ksid: str) -> None:
        """Close key stream ``ksid`` (both ends see it end)."""

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot: registrations, key streams, counters."""

"""The node-level QKDTL service: ports, multiplexing, registration (SECOQC seed 002 §3.3-3.4).

Seed 002 §3.3 lists what the QKDTL gives the end applications: reliable delivery,
congestion control, connection management that synchronises key consumption, and
*multiplexing*, "to share network services among multiple connections"; §3.4 (Figs. 15-16)
adds the interface: a server application registers with its QBB node, a client asks its
node to open a connection to a registered application, and then both ask for keys.  The
per-connection machinery is :class:`~qbb.transport.connection.Connection`;
:class:`TransportService` is everything around it for one node, sans-IO: inputs are
packets, ICMP messages, application commands and ``now``; outputs are :class:`Outgoing`
segments and :meth:`~TransportService.next_timer`.  No trio, no clock.

Theory of operation:

* **Ports.**  The service owns QKDNL protocol 253 at its node but only ports
  :data:`DIRECTORY_PORT` (8, the registration directory), :data:`NAME_PORT` (9, connect
  by application name) and 1024-65535: registered applications get ports from
  1024-49151, initiators ephemeral ports from 49152-65535.  A segment for any other port
  is not for the service (:meth:`~TransportService.receive_packet` returns False and the
  driver hands it to the node's key relay, port 7).
* **Multiplexing.**  Connections are keyed by ``(local port, remote address, remote
  port)``, so any number run side by side between the same two nodes.
* **Listening.**  A SYN to a registered port (or to port 9 naming a registered
  application) creates a responder connection; its name must match the registration.
  Otherwise the service answers with an RST (RFC 793 "reset generation") carrying one
  *reason byte* (:class:`RstReason`) that the initiator maps to a status; a segment for
  no connection gets an RST too (never in answer to an RST).
* **Signals.**  ICMP Destination Unreachable / Source Quench quote the original QKDNL
  header and 8 payload bytes, so the QKDTL ports: the service finds the connection and
  calls ``unreachable`` (code 13 means admission refused: QoS not met) or
  ``congestion_signal(now, "source_quench")``.  A packet whose ECN field is CE (TOS & 3 ==
  3, RFC 3168) reaches its connection as ``congestion_mark=True``; connection segments
  leave as ECT(0).
* **Admission.**  A guaranteed-rate connect reserves λ on the first link here
  (:mod:`qbb.transport.admission`), refreshes it while the connection lives and releases
  it when it ends.
* **Robustness.**  Every decode error is counted (``drops``) and the input dropped.
  Segments are built and parsed by :mod:`qbb.transport.fastcodec` (the construct codec's
  bytes and errors in a few microseconds).
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
import struct
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qbb.codec import is_canonical_ipv4
from qbb.errors import DecodeError, EncodeError, QbbError
from qbb.keyapi.model import ApiError, Qos, Status
from qbb.netlayer.icmp import DestinationUnreachable, SourceQuench, UnreachableCode
from qbb.netlayer.packet import QKDNLPacket
from qbb.transport.admission import AdmissionControl, FlowKey
from qbb.transport.connection import (Closed, Connection, ConnectionConfig, Endpoint,
                                      Established, Reset, Role)
from qbb.transport.directory import DIRECTORY_PORT, Directory
from qbb.transport.fastcodec import decode_segment_fast, encode_segment_fast
from qbb.transport.fsm import State
from qbb.transport.packet import (ConnectRequest, Segment, SegmentFlags, ServiceClass,
                                  decode_body)
from qbb.wire import PROTO_QKDTL

__all__ = ["DIRECTORY_PORT", "EPHEMERAL_PORTS", "NAME_PORT", "Outgoing", "REGISTERED_PORTS",
           "RstReason", "Stream", "TransportService"]

NAME_PORT = 9
REGISTERED_PORTS = range(1024, 49152)
EPHEMERAL_PORTS = range(49152, 65536)
ECT0, CE = 0b10, 0b11
KEEP_ENDED = 1024
_SERVICES = {"best_effort": ServiceClass.BEST_EFFORT, "guaranteed": ServiceClass.GUARANTEED_RATE}


class RstReason(enum.IntEnum):
    """The reason byte of an RST the service sends (its payload); docs/transport-service.md."""

    UNKNOWN_APPLICATION = 1  # nothing registered at that port / under that name
    REFUSED = 2              # the responder node has no room for another connection
    QOS_NOT_MET = 3          # the requested service cannot be given
    TIMEOUT = 4              # the connection timed out
    NO_CONNECTION = 5        # segment for a connection this node does not have


#: What the initiator reports for each reason byte (no or unknown byte: PEER_GONE).
RST_STATUS = {RstReason.UNKNOWN_APPLICATION: Status.UNKNOWN_APPLICATION,
              RstReason.REFUSED: Status.QOS_NOT_MET, RstReason.QOS_NOT_MET: Status.QOS_NOT_MET,
              RstReason.TIMEOUT: Status.TIMEOUT, RstReason.NO_CONNECTION: Status.PEER_GONE}


@dataclass(frozen=True)
class Outgoing:
    """A QKDTL segment (encoded) for QKDNL destination ``destination`` with ``tos``."""

    destination: str
    payload: bytes = field(repr=False)
    tos: int = 0


ConnKey = tuple[int, str, int]  # local port, remote address, remote port


@dataclass(eq=False)
class Stream:
    """One connection as the service and the key API see it."""

    connection: Connection
    key: ConnKey
    role: Role
    application: str
    flow: FlowKey | None = None  # guaranteed-rate reservation held at this node
    rate_bps: int = 0
    established: bool = False
    ended: bool = False
    failure: Status | None = None
    reason: str = ""
    cause: Status | None = None  # what an RST reason byte or ICMP said, before the Reset

    @property
    def ksid(self) -> str:
        return self.connection.ksid

    def status(self) -> dict[str, Any]:
        return {"ksid": self.ksid if self.established else None, "role": self.role.value,
                "application": self.application, "local_port": self.key[0],
                "remote": f"{self.key[1]}:{self.key[2]}", "established": self.established,
                "ended": self.ended, "failure": None if self.failure is None else
                self.failure.name, "reason": self.reason, "connection": self.connection.status()}


def _failure_status(stream: Stream, reason: str) -> Status:
    if stream.cause is not None:
        return stream.cause
    payload = stream.connection.reset_payload
    if payload and not stream.established:
        try:
            return RST_STATUS[RstReason(payload[0])]
        except (ValueError, KeyError):
            return Status.PEER_GONE
    if "timeout" in reason.lower() or "retries" in reason.lower():
        return Status.TIMEOUT
    return Status.PEER_GONE


def _quoted_flow(original: bytes) -> tuple[str, str, int, int] | None:
    """``(source, destination, sport, dport)`` of a quoted QKDTL packet, or None."""
    if len(original) < 20 or original[0] >> 4 != 4 or original[9] != PROTO_QKDTL:
        return None
    ihl = 4 * (original[0] & 0x0F)
    if ihl < 20 or len(original) < ihl + 4:
        return None
    src, dst = (".".join(map(str, original[i:i + 4])) for i in (12, 16))
    sport, dport = struct.unpack_from("!HH", original, ihl)
    return src, dst, sport, dport


class TransportService:
    """The QKDTL of one node (module docstring).  ``route(address)`` names the outgoing
    interface towards ``address`` (None: no route); ``isn()`` draws initial sequence
    numbers (default: random)."""

    def __init__(self, address: str, *, config: ConnectionConfig = ConnectionConfig(),
                 directory: Directory | None = None, admission: AdmissionControl | None = None,
                 route: Callable[[str], str | None] = lambda address: None,
                 randbytes: Callable[[int], bytes] = secrets.token_bytes,
                 isn: Callable[[], int] | None = None, max_connections: int = 4096) -> None:
        self.address, self.config, self.route = address, config, route
        self.directory = directory or Directory(address)
        self.admission = admission
        self.randbytes, self.max_connections = randbytes, max_connections
        self._isn = isn or (lambda: int.from_bytes(secrets.token_bytes(4), "big"))
        self.registrations: dict[str, int] = {}
        self.ports: dict[int, str] = {}
        self.connections: dict[ConnKey, Stream] = {}
        self.streams: dict[str, Stream] = {}  # KSID -> stream (initiator: once established)
        self.accept_queues: dict[str, deque[Stream]] = {}
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self._local_ports: Counter[int] = Counter()
        self._next_ephemeral = EPHEMERAL_PORTS.start + secrets.randbelow(len(EPHEMERAL_PORTS))
        self._next_refresh = 0.0
        self._out: list[Outgoing] = []
        self._ended: deque[Stream] = deque()

    # -- registration (phase 1) ------------------------------------------------------

    def register(self, name: str, now: float, port: int | None = None) -> int:
        """Register server application ``name``; its port (lowest free, or ``port``)."""
        if not isinstance(name, str) or not name or "@" in name:
            raise ApiError(Status.BAD_REQUEST, f"bad application name {name!r}")
        if name in self.registrations:
            raise ApiError(Status.NAME_IN_USE, f"{name!r} is already registered here")
        if port is None:
            port = next((p for p in REGISTERED_PORTS if p not in self.ports), None)
        if port not in REGISTERED_PORTS or port in self.ports:
            raise ApiError(Status.BAD_REQUEST, f"port {port} is not a free registered port")
        try:
            self.directory.register(name, port, now)
        except (EncodeError, ValueError) as error:
            raise ApiError(Status.BAD_REQUEST, str(error)) from None
        self.registrations[name], self.ports[port] = port, name
        self.accept_queues[name] = deque()
        return port

    def unregister(self, name: str, now: float) -> None:
        """Withdraw ``name``; connections it never accepted are reset."""
        port = self.registrations.pop(name, None)
        if port is None:
            raise ApiError(Status.UNKNOWN_APPLICATION, f"{name!r} is not registered here")
        del self.ports[port]
        self.directory.unregister(name, now)
        for stream in self.accept_queues.pop(name):
            self.abort(stream, now, "application unregistered")
        for stream in list(self.connections.values()):
            if stream.role is Role.RESPONDER and stream.application == name \
                    and not stream.established:
                self.abort(stream, now, "application unregistered")

    # -- connection (phase 2) --------------------------------------------------------

    def resolve(self, destination: str) -> tuple[str, int, str]:
        """``(address, port, name)`` of ``destination`` ("name" or "name@A.B.C.D")."""
        name, at, address = destination.rpartition("@")
        if at and name and is_canonical_ipv4(address):
            port = self.directory.resolve_at(name, address)
            return address, NAME_PORT if port is None else port, name
        found = self.directory.resolve(destination)
        if found is None:
            raise ApiError(Status.UNKNOWN_APPLICATION, f"no application {destination!r} "
                           "is registered in the network")
        return found[0], found[1], destination

    def connect(self, destination: str, qos: Qos, now: float) -> Stream:
        """Open a connection to registered application ``destination``; raises ApiError."""
        service, config = self._check_qos(qos)
        address, port, name = self.resolve(destination)
        if address == self.address:
            raise ApiError(Status.NO_QKD_CONNECTION, f"{destination!r} is at this node: "
                           "there is no QKD path to itself")
        interface = self.route(address)
        if interface is None:
            raise ApiError(Status.NO_QKD_CONNECTION, f"no route to {address}")
        local = self._ephemeral_port()
        key = (local, address, port)
        flow = self._reserve(key, qos, interface, now) if service is \
            ServiceClass.GUARANTEED_RATE else None
        burst = max(qos.burst_bits, qos.key_chunk_size) if qos.rate_bps else qos.burst_bits
        request = ConnectRequest(service, qos.rate_bps, burst, name)
        connection = Connection(Endpoint(self.address, local), Endpoint(address, port),
                                Role.INITIATOR, config, request=request, isn=self._isn(),
                                randbytes=self.randbytes)
        stream = self._add(Stream(connection, key, Role.INITIATOR, name, flow, qos.rate_bps))
        connection.open(now)
        self.counters["connects"] += 1
        return stream

    def _reserve(self, key: ConnKey, qos: Qos, interface: str, now: float) -> FlowKey:
        """Admission on the first link (the ingress check); raises QOS_NOT_MET."""
        flow = FlowKey(self.address, *key)
        if self.admission is not None and not self.admission.reserve(
                flow, qos.rate_bps, interface, now):
            raise ApiError(Status.QOS_NOT_MET, f"{qos.rate_bps} bit/s guaranteed does not "
                           f"fit the first link ({interface})")
        return flow

    def _check_qos(self, qos: Qos) -> tuple[ServiceClass, ConnectionConfig]:
        service = _SERVICES.get(qos.service)
        ok = (service is not None and isinstance(qos.key_chunk_size, int)
              and 1 <= qos.key_chunk_size <= 0xFFFF
              and all(isinstance(v, int) and 0 <= v <= 0xFFFFFFFF
                      for v in (qos.rate_bps, qos.burst_bits))
              and (service is not ServiceClass.GUARANTEED_RATE or qos.rate_bps > 0))
        if not ok:
            raise ApiError(Status.BAD_REQUEST, f"unusable QoS {qos!r}")
        try:
            timeout = qos.timeout_s if 0 < qos.timeout_s < float("inf") else None
            return service, dataclasses.replace(self.config, key_bits=qos.key_chunk_size,
                                                connect_timeout=timeout or
                                                self.config.connect_timeout)
        except QbbError as error:
            raise ApiError(Status.BAD_REQUEST, str(error)) from None

    def _ephemeral_port(self) -> int:
        for _ in range(len(EPHEMERAL_PORTS)):
            port = self._next_ephemeral
            self._next_ephemeral = port + 1 if port + 1 < EPHEMERAL_PORTS.stop \
                else EPHEMERAL_PORTS.start
            if not self._local_ports[port]:
                return port
        raise ApiError(Status.QOS_NOT_MET, "no free ephemeral port")

    def _add(self, stream: Stream) -> Stream:
        self.connections[stream.key] = stream
        self._local_ports[stream.key[0]] += 1
        return stream

    def accept_next(self, name: str) -> Stream | None:
        """The next established, not yet accepted incoming connection to ``name``."""
        queue = self.accept_queues.get(name)
        while queue:
            stream = queue.popleft()
            if not stream.ended or stream.connection.keys_available():
                return stream
        return None

    def close(self, stream: Stream, now: float) -> None:
        """The application is done with ``stream``: graceful close (FIN)."""
        if self.streams.get(stream.ksid) is stream:
            del self.streams[stream.ksid]
        if stream.connection.state in (State.CLOSED, State.TIME_WAIT) or stream.ended:
            return
        try:
            stream.connection.close(now)
        except QbbError:
            stream.connection.abort(now, "closed by application")

    def abort(self, stream: Stream, now: float, reason: str) -> None:
        if stream.connection.state not in (State.CLOSED, State.TIME_WAIT):
            stream.connection.abort(now, reason)

    # -- wire input ------------------------------------------------------------------

    @staticmethod
    def owns(payload: bytes) -> bool:
        """Whether a protocol-253 payload is for this service (by destination port)."""
        if len(payload) < 4:
            return True  # too short to be anybody's: counted as malformed here
        port = int.from_bytes(payload[2:4], "big")
        return port in (DIRECTORY_PORT, NAME_PORT) or port >= REGISTERED_PORTS.start

    def receive_packet(self, packet: QKDNLPacket, now: float) -> bool:
        """A protocol-253 packet for this node; False if its port is not the service's."""
        if not self.owns(packet.payload):
            return False
        try:
            segment = decode_segment_fast(packet.payload)
        except DecodeError:
            self.drops["malformed"] += 1
            return True
        if segment.dst_port == DIRECTORY_PORT:
            if not self.directory.receive(packet.source, segment.payload, now):
                self.drops["directory"] += 1
            return True
        stream = self.connections.get((segment.dst_port, packet.source, segment.src_port))
        if stream is not None:
            self._to_connection(stream, segment, packet.tos & 3 == CE, now)
        elif segment.flags & (SegmentFlags.SYN | SegmentFlags.ACK | SegmentFlags.RST) \
                == SegmentFlags.SYN:
            self._on_syn(packet.source, segment, now)
        elif not segment.flags & SegmentFlags.RST:
            self.drops["no_connection"] += 1
            self._reset(packet.source, segment, RstReason.NO_CONNECTION)
        else:
            self.drops["rst_no_connection"] += 1
        return True

    def _to_connection(self, stream: Stream, segment: Segment, mark: bool, now: float) -> None:
        try:
            stream.connection.receive_segment(segment, now, congestion_mark=mark)
        except (DecodeError, EncodeError):
            self.drops["malformed_body"] += 1

    def _listener(self, port: int, request: Any) -> str | None:
        name = request.application if isinstance(request, ConnectRequest) else None
        if port == NAME_PORT:
            return name if name in self.registrations else None
        registered = self.ports.get(port)
        return registered if name in (None, registered) else None

    def _on_syn(self, source: str, segment: Segment, now: float) -> None:
        try:
            request = decode_body(segment)
        except DecodeError:
            self.drops["malformed"] += 1
            return
        name = self._listener(segment.dst_port, request)
        if name is None:
            self.drops["unknown_application"] += 1
            return self._reset(source, segment, RstReason.UNKNOWN_APPLICATION)
        if len(self.connections) >= self.max_connections:
            self.drops["refused"] += 1
            return self._reset(source, segment, RstReason.REFUSED)
        key = (segment.dst_port, source, segment.src_port)
        connection = Connection(Endpoint(self.address, segment.dst_port),
                                Endpoint(source, segment.src_port), Role.RESPONDER,
                                self.config, isn=self._isn(), randbytes=self.randbytes)
        stream = self._add(Stream(connection, key, Role.RESPONDER, name))
        connection.accept_syn(segment, now)
        self.streams[connection.ksid] = stream  # known here from the SYN on (final ACK racing)
        self.counters["accepted_syn"] += 1

    def _reset(self, destination: str, segment: Segment, reason: RstReason) -> None:
        """RFC 793 reset generation for a segment that has no connection here."""
        if segment.flags & SegmentFlags.ACK:
            rst = Segment(segment.dst_port, segment.src_port, segment.ack, 0, SegmentFlags.RST,
                          0, bytes([reason]))
        else:
            length = (len(segment.payload) if segment.flags & SegmentFlags.KEY else 0) + sum(
                bool(segment.flags & f) for f in (SegmentFlags.SYN, SegmentFlags.FIN))
            rst = Segment(segment.dst_port, segment.src_port, 0,
                          (segment.seq + length) & 0xFFFFFFFF,
                          SegmentFlags.RST | SegmentFlags.ACK, 0, bytes([reason]))
        self._out.append(Outgoing(destination, encode_segment_fast(rst)))
        self.counters[f"rst_sent.{reason.name.lower()}"] += 1

    def receive_icmp(self, message: Any, now: float) -> None:
        """An ICMP error for this node: find the QKDTL connection it quotes."""
        if not isinstance(message, (DestinationUnreachable, SourceQuench)):
            return
        quoted = _quoted_flow(message.original)
        if quoted is None or quoted[0] != self.address:
            return
        stream = self.connections.get((quoted[2], quoted[1], quoted[3]))
        if stream is None:
            self.drops["icmp_no_connection"] += 1
            return
        if isinstance(message, SourceQuench):
            self.counters["source_quench"] += 1
            stream.connection.congestion_signal(now, "source_quench")
            return
        prohibited = message.code == UnreachableCode.ADMINISTRATIVELY_PROHIBITED
        if not stream.established:
            stream.cause = Status.QOS_NOT_MET if prohibited else Status.NO_QKD_CONNECTION
        self.counters[f"icmp_unreachable.{int(message.code)}"] += 1
        stream.connection.unreachable(now, "admission refused (ICMP 3/13)" if prohibited
                                      else f"destination unreachable (ICMP 3/{int(message.code)})")

    # -- time and output -------------------------------------------------------------

    def set_peers(self, peers: Mapping[str, str] | Iterable[str], now: float) -> None:
        """The QBB nodes this node has routes to (address -> area), for the directory."""
        self.directory.set_peers(peers, now)

    def next_timer(self) -> float | None:
        times = [t for t in (s.connection.next_timer() for s in self.connections.values())
                 if t is not None]
        times.append(self.directory.next_timer())
        if self.admission is not None and any(s.flow for s in self.connections.values()):
            times.append(self._next_refresh)
        return min(times)

    def handle_timer(self, now: float) -> None:
        for stream in list(self.connections.values()):
            due = stream.connection.next_timer()
            if due is not None and due <= now:
                stream.connection.handle_timer(now)
        if self.directory.next_timer() <= now:
            self.directory.handle_timer(now)
        if self.admission is not None and now >= self._next_refresh:
            self._refresh_reservations(now)

    def _refresh_reservations(self, now: float) -> None:
        self._next_refresh = now + self.admission.timeout / 3
        for stream in self.connections.values():
            if stream.flow is not None and not stream.ended:
                interface = self.route(stream.key[1])
                if interface is not None:
                    self.admission.reserve(stream.flow, stream.rate_bps, interface, now)

    def packets_to_send(self, now: float) -> list[Outgoing]:
        """Drain everything to send; process connection events; forget closed ones."""
        out, self._out = self._out, []
        for address, payload in self.directory.datagrams():
            segment = Segment(DIRECTORY_PORT, DIRECTORY_PORT, payload=payload)
            out.append(Outgoing(address, encode_segment_fast(segment)))
        for key, stream in list(self.connections.items()):
            connection = stream.connection
            for segment in connection.segments_to_send(now):
                out.append(Outgoing(key[1], encode_segment_fast(segment), ECT0))
            for event in connection.events():
                self._on_event(stream, event)
            if connection.state is State.CLOSED:
                del self.connections[key]
                self._local_ports[key[0]] -= 1
                if stream.flow is not None and self.admission is not None:
                    self.admission.release(stream.flow)
        return out

    def _on_event(self, stream: Stream, event: Any) -> None:
        if isinstance(event, Established):
            stream.established = True
            self.streams[stream.ksid] = stream
            self.counters["established"] += 1
            if stream.role is Role.RESPONDER and stream.application in self.accept_queues:
                self.accept_queues[stream.application].append(stream)
        elif isinstance(event, (Closed, Reset)):
            stream.ended, stream.reason = True, event.reason
            self._forget_later(stream)
            if isinstance(event, Reset):
                stream.failure = _failure_status(stream, event.reason)
                self.counters["reset"] += 1
            else:
                stream.failure = Status.PEER_GONE
                self.counters["closed"] += 1

    def _forget_later(self, stream: Stream) -> None:
        """Ended streams stay visible (PEER_GONE, leftover keys) until the application
        closes them; a responder stream that never got established goes at once, and at
        most :data:`KEEP_ENDED` ended streams are kept."""
        if not stream.established:
            if self.streams.get(stream.ksid) is stream:
                del self.streams[stream.ksid]
            return
        self._ended.append(stream)
        while len(self._ended) > KEEP_ENDED:
            old = self._ended.popleft()
            if self.streams.get(old.ksid) is old:
                del self.streams[old.ksid]

    # -- observation -----------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        return {
            "address": self.address, "registrations": dict(sorted(self.registrations.items())),
            "connections": [s.status() for s in self.connections.values()],
            "streams": sorted(self.streams), "counters": dict(self.counters),
            "drops": dict(self.drops), "directory": self.directory.status(),
            "admission": None if self.admission is None else self.admission.status(now),
        }

"""Admission control for the guaranteed-key-rate service class (SECOQC seed 002 §2.2).

Seed 002 §2.2 names two service types: *best effort*, bounded by an average rate λ and a
burst σ with no guarantee, and *guaranteed key rate*, where "the QKD network guarantees a
certain rate of session keys" (e.g. 128 bits every second).  A guarantee needs admission
control: a connection is only set up if every link on its path can still carry its λ.

:class:`AdmissionControl` is one node's share of that, sans-IO (``now`` is an argument).
Per outgoing interface it keeps a reservation table, RSVP-style soft state (RFC 2205
§1.2) keyed by the connection's 4-tuple ``(initiator address, port, responder address,
port)``:

* capacity of an interface = ``fraction`` (default 0.5) x the link's QKD key rate in
  bit/s (``capacity_bps(interface)``, read at each decision, so a key-rate change applies
  to the next SYN); the other half is left to best effort, routing and ICMP;
* :meth:`check_syn` (called for a QKDTL packet about to leave on ``out_interface``): a SYN
  (without ACK) asking for ``GUARANTEED_RATE`` is admitted if the interface's reserved
  rate plus the request's λ stays within capacity, and is then reserved; a retransmitted
  SYN of an admitted connection only refreshes.  Everything else passes.  A refused SYN is
  dropped by the caller, which sends the source ICMP Destination Unreachable code 13
  (communication administratively prohibited; :meth:`refusal` builds it);
* :meth:`observe` (any QKDTL packet, either direction) refreshes the reservation of its
  connection, moves it if the flow now leaves on another interface (re-routing; never
  refused once admitted), and releases it on FIN or RST;
* a reservation not refreshed for ``timeout`` seconds expires (a path that went away).

The ingress node's transport service calls :meth:`reserve` / :meth:`release` directly for
its own connections, so a guaranteed connection is checked on its first link even where
the forwarding path does not call :meth:`check_syn`.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from qbb.errors import DecodeError
from qbb.netlayer.icmp import DestinationUnreachable, UnreachableCode, encode_icmp, quote_original
from qbb.netlayer.packet import QKDNLPacket, decode_packet, encode_packet
from qbb.transport.packet import SegmentFlags, ServiceClass, decode_connect_request, decode_segment
from qbb.wire import PROTO_ICMP, PROTO_QKDTL

__all__ = ["AdmissionControl", "FlowKey", "Reservation"]

_PORTS_FLAGS = struct.Struct("!HH8xH")  # src port, dst port, (seq, ack), flags
_SYN, _ACK = int(SegmentFlags.SYN), int(SegmentFlags.ACK)
_FIN_RST = int(SegmentFlags.FIN | SegmentFlags.RST)


@dataclass(frozen=True)
class FlowKey:
    """A connection, in the direction of its SYN (initiator first)."""

    source: str
    source_port: int
    destination: str
    destination_port: int

    def reversed(self) -> "FlowKey":
        return FlowKey(self.destination, self.destination_port, self.source, self.source_port)


@dataclass
class Reservation:
    interface: str
    rate_bps: float
    expires: float


def _as_packet(packet: QKDNLPacket | bytes) -> QKDNLPacket | None:
    if isinstance(packet, QKDNLPacket):
        return packet
    try:
        return decode_packet(packet)
    except DecodeError:
        return None


class AdmissionControl:
    """Reservation tables of one node's outgoing interfaces (module docstring)."""

    def __init__(self, capacity_bps: Callable[[str], float], *, fraction: float = 0.5,
                 timeout: float = 120.0) -> None:
        if not 0 < fraction <= 1 or timeout <= 0:
            raise ValueError("need 0 < fraction <= 1 and timeout > 0")
        self.capacity_bps, self.fraction, self.timeout = capacity_bps, fraction, timeout
        self.reservations: dict[FlowKey, Reservation] = {}
        self.counters: Counter[str] = Counter()

    # -- the table -------------------------------------------------------------------

    def capacity(self, interface: str) -> float:
        """Bit/s the guaranteed class may reserve on ``interface``."""
        return self.fraction * float(self.capacity_bps(interface))

    def expire(self, now: float) -> None:
        for key in [k for k, r in self.reservations.items() if r.expires <= now]:
            del self.reservations[key]
            self.counters["expired"] += 1

    def reserved_bps(self, interface: str, now: float) -> float:
        self.expire(now)
        return sum(r.rate_bps for r in self.reservations.values() if r.interface == interface)

    def reserve(self, flow: FlowKey, rate_bps: float, interface: str, now: float) -> bool:
        """Admit ``flow`` at ``rate_bps`` on ``interface`` (refresh if already admitted)."""
        held = self.reservations.get(flow)
        if held is not None and held.expires > now:
            held.expires = now + self.timeout
            held.interface = interface
            self.counters["refreshed"] += 1
            return True
        if rate_bps <= 0 or self.reserved_bps(interface, now) + rate_bps > self.capacity(interface):
            self.counters["refused"] += 1
            return False
        self.reservations[flow] = Reservation(interface, float(rate_bps), now + self.timeout)
        self.counters["admitted"] += 1
        return True

    def release(self, flow: FlowKey) -> bool:
        """Forget ``flow`` (either direction of its key); True if it held a reservation."""
        for key in (flow, flow.reversed()):
            if self.reservations.pop(key, None) is not None:
                self.counters["released"] += 1
                return True
        return False

    # -- the forwarding-path hooks ---------------------------------------------------

    def check_syn(self, packet: QKDNLPacket | bytes, out_interface: str, now: float) -> bool:
        """False if ``packet`` is a guaranteed-rate SYN that ``out_interface`` cannot carry."""
        packet = _as_packet(packet)
        if packet is None or packet.protocol != PROTO_QKDTL:
            return True
        try:
            segment = decode_segment(packet.payload)
            if segment.flags & (_SYN | _ACK) != _SYN or not segment.payload:
                return True
            request = decode_connect_request(segment.payload)
        except DecodeError:
            self.counters["malformed"] += 1
            return True
        if request.service != ServiceClass.GUARANTEED_RATE:
            return True
        flow = FlowKey(packet.source, segment.src_port, packet.destination, segment.dst_port)
        return self.reserve(flow, request.rate, out_interface, now)

    def observe(self, packet: QKDNLPacket | bytes, out_interface: str | None, now: float) -> None:
        """Refresh, move or (FIN/RST) release the reservation of ``packet``'s connection."""
        packet = _as_packet(packet)
        if packet is None or packet.protocol != PROTO_QKDTL or len(packet.payload) < 14:
            return
        sport, dport, flags = _PORTS_FLAGS.unpack_from(packet.payload)
        flow = FlowKey(packet.source, sport, packet.destination, dport)
        if flags & _FIN_RST:
            self.release(flow)
            return
        for key in (flow, flow.reversed()):
            held = self.reservations.get(key)
            if held is not None:
                held.expires = max(held.expires, now + self.timeout)
                if key == flow and out_interface is not None and held.interface != out_interface:
                    held.interface = out_interface
                    self.counters["moved"] += 1
                return

    def refusal(self, node_address: str, packet: QKDNLPacket | bytes) -> QKDNLPacket:
        """The ICMP Destination Unreachable (code 13) telling the source of a refused SYN."""
        raw = encode_packet(packet) if isinstance(packet, QKDNLPacket) else bytes(packet)
        source = packet.source if isinstance(packet, QKDNLPacket) else decode_packet(raw).source
        message = DestinationUnreachable(UnreachableCode.ADMINISTRATIVELY_PROHIBITED,
                                         quote_original(raw))
        return QKDNLPacket(node_address, source, PROTO_ICMP, encode_icmp(message))

    def status(self, now: float) -> dict:
        self.expire(now)
        interfaces = sorted({r.interface for r in self.reservations.values()})
        return {"fraction": self.fraction, "timeout_s": self.timeout,
                "reserved_bps": {i: self.reserved_bps(i, now) for i in interfaces},
                "reservations": len(self.reservations), "counters": dict(self.counters)}

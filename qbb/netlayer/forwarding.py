"""Sans-IO forwarding module of a QBB node (seed 002 §2.5.3, Fig. 10; Appendix D).

:class:`Forwarder` takes a QKDNL packet (bytes) that arrived on an interface, or that
the node itself originates (``arrived_on=None``), and returns actions for the node:

* :class:`Send` ``(interface, bytes, priority, encrypt)`` -- hand to that link's Q3P
  module (the link's FIFO; priority and one-time-pad flag chosen by protocol);
* :class:`Deliver` ``(packet, interface)`` -- to the local process for its protocol;
* :class:`Drop` ``(reason)`` -- also counted in :attr:`Forwarder.drops`.

Procedure (seed §2.5.3): verify the header checksum (``bad_checksum`` / ``malformed``); if
the destination is one of the node's addresses (or a routing multicast group on arrival)
deliver it -- fragments only once reassembled (:mod:`qbb.netlayer.reassembly`;
:meth:`Forwarder.handle_timer` expires them with ICMP Time Exceeded code 1), an
unregistered protocol gets ICMP Destination Unreachable / Protocol Unreachable; otherwise
decrement the TTL (a transit packet whose TTL would reach 0 gets ICMP Time Exceeded), look
the destination up in the extended routing table (no route: Destination Unreachable / Net;
a destination inside the node's own block that is not one of its addresses: Host
Unreachable) and choose the outgoing interface by the load-balancing rule:

    walk the extended table's entries from the cheapest; take the first whose interface
    is up and whose approximated load L_i (:mod:`qbb.netlayer.loadstate`) is below its
    critical level L_cr; if every entry is over its level, use the cheapest usable entry
    (``overload="default"``) or drop and send ICMP Source Quench (``overload="drop"``;
    ICMP and routing packets, ``overload_exempt``, always take the cheapest usable entry).

An alternate (non-first) entry through neighbour ``n`` towards ``d`` is accepted only if
it is loop-free (RFC 5286 inequality 1, ``loop_free="lfa"``)::

    dist(n, d) < dist(n, self) + dist(self, d)

``dist(self, d)`` is the first entry's cost; ``dist(n, d)`` in the graph without this
node is the per-interface cost minus the interface cost (seed §2.5.2: the per-interface
table is exactly that); ``dist(n, self)`` comes from :func:`reverse_costs`.  Because any
path from ``n`` either avoids this node or passes through it, the inequality over the
reduced graph is equivalent to the one over the full graph.  ``loop_free="downstream"``
uses the stricter ``dist(n, d) < dist(self, d)`` (loop-free even when several nodes
deflect at once), ``"none"`` accepts every alternate.  In addition an alternate never
leads back out of the interface the packet arrived on (split horizon).  Rejections are
counted (``lfa_rejected``, ``split_horizon_rejected``).

The forwarder never fragments: every packet goes to Q3P whole, and Q3P cuts it into
link-MTU frames itself (messages up to 16 MiB, far above the 65535-byte QKDNL maximum), so
a QKDNL packet always fits a QBB link and transit fragments are forwarded as they are.

ICMP errors follow RFC 1122 3.2.2 / RFC 1812 4.3.2.7: never about an ICMP error, a
multicast destination, a non-unicast source or a non-first fragment.  Echo Requests to
the node are answered.  Nothing here reads a clock: ``now`` is an argument.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Union

from qbb.errors import DecodeError, EncodeError
from qbb.netlayer.icmp import (DestinationUnreachable, EchoReply, EchoRequest, IcmpType,
                               SourceQuench, TimeExceeded, TimeExceededCode, UnreachableCode,
                               decode_icmp, encode_icmp, quote_original)
from qbb.netlayer.loadstate import LoadStateConfig, LoadStateDB
from qbb.netlayer.packet import (DEFAULT_TTL, QKDNLHeader, QKDNLPacket, decode_header,
                                 decrement_ttl, encode_packet)
from qbb.netlayer.reassembly import Reassembler, ReassemblyConfig
from qbb.routing.table import Route, RoutingTables
from qbb.wire import PROTO_ICMP, PROTO_OSPF, PROTO_QKDTL, PROTO_QROKR

__all__ = ["Action", "DEFAULT_PRIORITIES", "Deliver", "Drop", "Forwarder", "ForwarderConfig",
           "LoopFreeRule", "OverloadPolicy", "ROUTING_GROUPS", "Send", "reverse_costs"]

#: Q3P priority of each protocol (routing 6, ICMP 5, Q-RoKR 4, key relay / QKDTL 2, other 0).
DEFAULT_PRIORITIES: Mapping[int, int] = {PROTO_OSPF: 6, PROTO_ICMP: 5, PROTO_QROKR: 4,
                                         PROTO_QKDTL: 2}
#: AllSPFRouters and AllDRouters (RFC 2328 A.1): delivered on arrival, never forwarded.
ROUTING_GROUPS = frozenset({"224.0.0.5", "224.0.0.6"})
_ICMP_ERRORS = frozenset({IcmpType.DESTINATION_UNREACHABLE, IcmpType.SOURCE_QUENCH,
                          IcmpType.TIME_EXCEEDED, IcmpType.PARAMETER_PROBLEM})


class OverloadPolicy(str, Enum):
    """What to do when every entry's interface is over its critical load."""

    DEFAULT = "default"  # send over the cheapest usable entry anyway
    DROP = "drop"  # drop and send ICMP Source Quench to the source


class LoopFreeRule(str, Enum):
    """Which alternates the load balancer may use (see the module docstring)."""

    LFA = "lfa"
    DOWNSTREAM = "downstream"
    NONE = "none"


@dataclass(frozen=True)
class ForwarderConfig:
    """Forwarding settings; ``critical_load_bps`` is L_cr of interfaces without their own."""

    critical_load_bps: float = math.inf
    overload: OverloadPolicy = OverloadPolicy.DEFAULT
    loop_free: LoopFreeRule = LoopFreeRule.LFA
    split_horizon: bool = True
    load: LoadStateConfig = field(default_factory=LoadStateConfig)
    ttl: int = DEFAULT_TTL
    priorities: Mapping[int, int] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    encrypt_protocols: frozenset = frozenset({PROTO_QKDTL})
    groups: frozenset = ROUTING_GROUPS
    echo_reply: bool = True
    overload_exempt: frozenset = frozenset({PROTO_ICMP, PROTO_OSPF})  # never dropped as
    # overloaded: control traffic takes the default link (an ICMP error must get out)
    reassembly: ReassemblyConfig = field(default_factory=ReassemblyConfig)


@dataclass(frozen=True)
class Deliver:
    """``packet`` is for this node; ``interface`` it arrived on (None: originated here)."""

    packet: QKDNLPacket
    interface: str | None


@dataclass(frozen=True)
class Send:
    """Queue ``data`` (an encoded QKDNL packet) on the Q3P link of ``interface``."""

    interface: str
    data: bytes = field(repr=False)
    priority: int = 0
    encrypt: bool = False


@dataclass(frozen=True)
class Drop:
    reason: str


Action = Union[Deliver, Send, Drop]


def reverse_costs(tables: RoutingTables, database: Mapping[str, Mapping]) -> dict[str, int | None]:
    """``{interface: dist(neighbour, self)}`` from the LSDB (None where unknown)."""
    from qbb.routing.spf import area_graph, distances  # local: keeps the codec path light
    result: dict[str, int | None] = {}
    runs: dict[tuple[str, str], int | None] = {}
    for address, iface in tables.interfaces.items():
        key = (iface.area, iface.neighbor)
        if key not in runs:
            runs[key] = None
            lsdb = database.get(iface.area)
            if lsdb is not None:
                graph = area_graph(iface.area, lsdb)
                source, me = graph.index.get(iface.neighbor), graph.index.get(tables.router_id)
                if source is not None and me is not None:
                    runs[key] = distances(graph, source)[0][me]
        result[address] = runs[key]
    return result


def _is_unicast(address: str) -> bool:
    ip = ipaddress.IPv4Address(address)
    return not (ip.is_multicast or ip.is_unspecified or ip.is_reserved
                or address == "255.255.255.255")


class Forwarder:
    """The forwarding decision of one QBB node (see the module docstring)."""

    def __init__(self, node_address: str, local_addresses=(), config: ForwarderConfig | None = None
                 ) -> None:
        self.node_address = node_address
        self.local_addresses = frozenset({node_address, *local_addresses})
        self.config = config or ForwarderConfig()
        self.loads = LoadStateDB(self.config.load)
        self.protocols: set[int] = {PROTO_ICMP}
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.sent_by_interface: Counter[str] = Counter()
        self.tables: RoutingTables | None = None
        self.back: Mapping[str, int | None] = {}
        self.reassembly = Reassembler(self.config.reassembly, self.drops)
        self._critical: dict[str, float] = {}
        self._down: set[str] = set()

    # -- configuration ------------------------------------------------------------------

    def update_routes(self, tables: RoutingTables | None,
                      back: Mapping[str, int | None] | None = None) -> None:
        """New routing tables and ``dist(neighbour, self)`` per interface."""
        self.tables, self.back = tables, dict(back or {})

    def set_critical_load(self, interface: str, bps: float) -> None:
        """L_cr of ``interface`` in bit/s."""
        self._critical[interface] = bps

    def critical_load(self, interface: str) -> float:
        return self._critical.get(interface, self.config.critical_load_bps)

    def set_interface_up(self, interface: str, up: bool) -> None:
        (self._down.discard if up else self._down.add)(interface)

    def is_up(self, interface: str) -> bool:
        return interface not in self._down

    # -- inputs -------------------------------------------------------------------------

    def handle(self, data: bytes, arrived_on: str | None, now: float) -> list[Action]:
        """Process one packet; never raises for anything on the wire."""
        try:
            header, offset = decode_header(data)
        except DecodeError as error:
            return [self._drop("bad_checksum" if error.field == "checksum" else "malformed")]
        destination = header.destination
        if destination in self.local_addresses:
            return self._local(data, header, offset, arrived_on, now)
        if destination in self.config.groups:
            if arrived_on is not None:
                return self._local(data, header, offset, arrived_on, now)
            return [self._drop("group_not_forwarded")]
        if arrived_on is not None:
            if header.ttl <= 1:
                return self._error(data, header, now, "ttl_expired", lambda quote: TimeExceeded(
                    TimeExceededCode.TTL_EXCEEDED_IN_TRANSIT, quote))
            data = decrement_ttl(data)
        return self._forward(data, header, arrived_on, now)

    def originate(self, packet: QKDNLPacket, now: float) -> list[Action]:
        """A packet this node sends (TTL as given, no decrement)."""
        try:
            data = encode_packet(packet)
        except EncodeError:
            return [self._drop("encode_error")]
        self.counters["originated"] += 1
        return self.handle(data, None, now)

    def send_link_local(self, interface: str, packet: QKDNLPacket, now: float) -> list[Action]:
        """A packet for the neighbour across ``interface`` only (routing), no lookup."""
        try:
            data = encode_packet(packet)
        except EncodeError:
            return [self._drop("encode_error")]
        return [self._send(interface, data, packet.protocol, now)]

    def handle_timer(self, now: float) -> list[Action]:
        """Expire reassembly timers: ICMP Time Exceeded (code 1) where the first
        fragment had arrived (RFC 1122 3.3.2)."""
        actions: list[Action] = []
        for expired in self.reassembly.handle_timer(now):
            actions += self._report(expired.quote, expired.header, now, "reassembly_timeout",
                                    lambda q: TimeExceeded(
                                        TimeExceededCode.REASSEMBLY_TIME_EXCEEDED, q))
        return actions

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` has work next (None: nothing pending)."""
        return self.reassembly.next_timer()

    # -- local delivery ----------------------------------------------------------------

    def _local(self, data: bytes, header: QKDNLHeader, offset: int, arrived_on: str | None,
               now: float) -> list[Action]:
        if header.more_fragments or header.fragment_offset:
            whole = self.reassembly.add(header, data[offset:], now)
            if whole is None:
                return []
            data = encode_packet(whole)
            header, offset = decode_header(data)
        if header.protocol not in self.protocols:
            return self._error(data, header, now, "protocol_unreachable",
                               lambda q: DestinationUnreachable(
                                   UnreachableCode.PROTOCOL_UNREACHABLE, q))
        packet = QKDNLPacket(header.source, header.destination, header.protocol,
                             bytes(data[offset:]), header.ttl, header.tos,
                             header.identification, header.dont_fragment,
                             header.more_fragments, header.fragment_offset, header.options)
        self.counters["delivered"] += 1
        actions: list[Action] = [Deliver(packet, arrived_on)]
        if header.protocol == PROTO_ICMP and self.config.echo_reply \
                and header.destination in self.local_addresses:
            actions += self._echo_reply(packet, now)
        return actions

    def _echo_reply(self, packet: QKDNLPacket, now: float) -> list[Action]:
        try:
            message = decode_icmp(packet.payload)
        except DecodeError:
            return []
        if not isinstance(message, EchoRequest) or not _is_unicast(packet.source):
            return []
        reply = EchoReply(message.identifier, message.sequence, message.data)
        self.counters["echo_replies"] += 1
        return self.originate(QKDNLPacket(packet.destination, packet.source, PROTO_ICMP,
                                          encode_icmp(reply), self.config.ttl), now)

    # -- forwarding --------------------------------------------------------------------

    def _forward(self, data: bytes, header: QKDNLHeader, arrived_on: str | None,
                 now: float) -> list[Action]:
        tables = self.tables
        entries = tables.extended.lookup(header.destination) if tables is not None else ()
        if not entries:
            return self._error(data, header, now, "no_route", lambda q: DestinationUnreachable(
                UnreachableCode.NET_UNREACHABLE, q))
        if entries[0].next_hop is None:
            return self._error(data, header, now, "host_unreachable",
                               lambda q: DestinationUnreachable(
                                   UnreachableCode.HOST_UNREACHABLE, q))
        exempt = header.protocol in self.config.overload_exempt
        interface, overloaded = self._choose(entries, arrived_on, now, exempt)
        if interface is None:
            if overloaded:
                return self._error(data, header, now, "overloaded", SourceQuench)
            return self._error(data, header, now, "interface_down",
                               lambda q: DestinationUnreachable(
                                   UnreachableCode.NET_UNREACHABLE, q))
        if arrived_on is not None:
            self.counters["forwarded"] += 1
        return [self._send(interface, data, header.protocol, now)]

    def _choose(self, entries: tuple[Route, ...], arrived_on: str | None, now: float,
                exempt: bool = False) -> tuple[str | None, bool]:
        """The interface by the load-balancing rule; ``(None, overloaded?)`` if none."""
        primary, fallback = entries[0], None
        for index, route in enumerate(entries):
            hop = route.next_hop
            if hop is None or not self.is_up(hop.interface):
                continue
            if index and not self._alternate_allowed(route, primary, arrived_on):
                continue
            if fallback is None:
                fallback = hop.interface
            if self.loads.load(hop.interface, now) < self.critical_load(hop.interface):
                if index:
                    self.counters["alternate_used"] += 1
                return hop.interface, False
        if fallback is None:
            return None, False
        if self.config.overload is OverloadPolicy.DEFAULT or exempt:
            self.counters["overload_default"] += 1
            return fallback, False
        return None, True

    def _alternate_allowed(self, route: Route, primary: Route, arrived_on: str | None) -> bool:
        interface = route.next_hop.interface
        if self.config.split_horizon and interface == arrived_on:
            self.counters["split_horizon_rejected"] += 1
            return False
        rule = self.config.loop_free
        if rule is LoopFreeRule.NONE:
            return True
        own = self.tables.interfaces.get(interface) if self.tables is not None else None
        back = self.back.get(interface)
        if own is None or (back is None and rule is LoopFreeRule.LFA):
            self.counters["lfa_rejected"] += 1
            return False
        via_neighbour = route.cost - own.cost  # dist(n, d) avoiding this node
        bound = primary.cost if rule is LoopFreeRule.DOWNSTREAM else back + primary.cost
        if via_neighbour < bound:
            return True
        self.counters["lfa_rejected"] += 1
        return False

    def _send(self, interface: str, data: bytes, protocol: int, now: float) -> Send:
        self.loads.record(interface, 8 * len(data), now)
        self.sent_by_interface[interface] += 1
        return Send(interface, data, self.config.priorities.get(protocol, 0),
                    protocol in self.config.encrypt_protocols)

    # -- errors ------------------------------------------------------------------------

    def _drop(self, reason: str) -> Drop:
        self.drops[reason] += 1
        return Drop(reason)

    def _error(self, data: bytes, header: QKDNLHeader, now: float, reason: str,
               message: Callable[[bytes], Any]) -> list[Action]:
        """Drop with ``reason`` and, where RFC 1122 allows, an ICMP error to the source."""
        return [self._drop(reason)] + self._report(data, header, now, reason, message)

    def _report(self, data: bytes, header: QKDNLHeader, now: float, reason: str,
                message: Callable[[bytes], Any]) -> list[Action]:
        if not self._may_report(data, header):
            self.counters["icmp_suppressed"] += 1
            return []
        icmp = encode_icmp(message(quote_original(data)))
        self.counters["icmp_sent"] += 1
        self.counters[f"icmp_sent.{reason}"] += 1
        source = self.node_address
        return self.originate(
            QKDNLPacket(source, header.source, PROTO_ICMP, icmp, self.config.ttl), now)

    def _may_report(self, data: bytes, header: QKDNLHeader) -> bool:
        if header.fragment_offset or not _is_unicast(header.source) \
                or not _is_unicast(header.destination):
            return False
        if header.protocol == PROTO_ICMP:
            payload = data[header.header_length:]
            return bool(payload) and payload[0] not in _ICMP_ERRORS
        return True

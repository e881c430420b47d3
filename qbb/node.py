"""One QBB node: Q3P links, routing, forwarding and local delivery (seed 002 §2.5, Fig. 7).

A :class:`QBBNode` composes, per QBB link, a sans-IO :class:`~qbb.q3p.endpoint.Q3PEndpoint`
(its key store and emulated QKD devices are handed in as :class:`LinkHardware`, which
outlives a node restart so key offsets never rewind), one OSPF-derived
:class:`~qbb.routing.router.Router`, one :class:`~qbb.netlayer.forwarding.Forwarder` and
local delivery queues for upper layers.  trio only drives them:

* each link's endpoint runs under a :class:`~qbb.q3p.driver.LinkDriver` whose events
  call :meth:`QBBNode._on_link_event` synchronously: ``Delivered`` payloads are QKDNL
  packets for the forwarder, ``LinkUp`` / ``LinkDown`` become the router's
  ``interface_up`` / ``interface_down`` and mark the interface usable or not;
* one task runs the router's timers (woken whenever an input may have moved them);
* one maintenance task ticks every ``NodeConfig.cost_interval`` seconds (and at the
  forwarder's reassembly deadlines): it expires QKDNL fragment reassemblies (ICMP Time
  Exceeded code 1), keeps each link's critical load L_cr at ``critical_fraction`` x its
  devices' current key rate and, when the topology says ``"costs": "auto"``, feeds each
  link without a configured cost to a :class:`~qbb.routing.cost.LinkCost` (key rate of
  the devices, level of the encryption pool); a change it reports goes to
  :meth:`~qbb.routing.router.Router.set_cost`, i.e. a new Router-LSA.

Startup order: :meth:`QBBNode.run` starts every link driver first and holds the events
they report meanwhile (a link may come up before the others' drivers exist, e.g. when the
peer's datagrams are already waiting in a socket); only when every link has its driver
are the held events handled, in order, and the router task started.  So no routing
packet is ever emitted towards a link without a driver (``drop.link_not_running``).

Routing packets travel as QKDNL packets (docs/node.md): protocol 89, TTL 1, source the
sending interface's address, destination AllSPFRouters 224.0.0.5, sent on that one link
(no lookup) with Q3P priority 6, authenticated but not encrypted.  Other packets are
queued on their link with the forwarder's priority (routing 6, ICMP 5, key relay 2) on
the Q3P channel equal to that priority, so a class never waits behind a lower one while
each class stays FIFO; QKDTL (protocol 253, key material) is one-time-pad encrypted.

Upper layers register a protocol with :meth:`QBBNode.register` (a synchronous handler)
or :meth:`QBBNode.listen` (a trio channel); ICMP messages addressed to the node are kept
in :attr:`QBBNode.icmp_received`.  No exception from the wire escapes: every input is
handled under a guard that counts ``internal_error`` and goes on; cancelling the node's
scope stops all its tasks.  :meth:`QBBNode.status` is a JSON-ready snapshot.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from qbb.netlayer.forwarding import Deliver, Drop, Forwarder, ForwarderConfig, Send, reverse_costs
from qbb.netlayer.icmp import decode_icmp
from qbb.netlayer.packet import QKDNLPacket
from qbb.q3p.config import LinkConfig
from qbb.q3p.device import DeviceGroup
from qbb.q3p.driver import LinkDriver, run_memory
from qbb.q3p.endpoint import Q3PEndpoint
from qbb.q3p.events import Delivered, LinkDown, LinkUp
from qbb.q3p.keystore import LinkKeyStore
from qbb.routing.addressing import AddressPlan
from qbb.routing.cost import CostPolicy, LinkCost, computed_cost
from qbb.routing.router import Router
from qbb.routing.simulate import Timers, make_router
from qbb.routing.table import ip_int
from qbb.errors import ConfigError, DecodeError
from qbb.topology import LinkSpec, Topology
from qbb.wire import PROTO_ICMP, PROTO_OSPF, PROTO_QKDTL

_SYN = 0x02


def _is_qkdtl(data: bytes) -> bool:
    return len(data) >= 20 and data[9] == PROTO_QKDTL


def _qkdtl_flags(data: bytes) -> int:
    """The QKDTL flags of a QKDNL packet carrying a segment (0 if too short)."""
    offset = (data[0] & 0x0F) * 4 + 12
    return int.from_bytes(data[offset:offset + 2], "big") if len(data) >= offset + 2 else 0


__all__ = ["ALL_SPF_ROUTERS", "LinkHardware", "NodeConfig", "NodeLink", "QBBNode",
           "build_router"]

log = logging.getLogger(__name__)
ALL_SPF_ROUTERS = "224.0.0.5"
Handler = Callable[[QKDNLPacket, "str | None"], None]


@dataclass
class LinkHardware:
    """What survives a node restart on one link end: the key store and the QKD devices."""

    store: LinkKeyStore
    devices: DeviceGroup


@dataclass(frozen=True)
class NodeConfig:
    """Node settings.  ``critical_fraction``: L_cr of a link = fraction x its key rate;
    ``cost_policy`` / ``cost_interval``: computed link costs and how often (s) the
    maintenance task samples them; ``startup_backlog``: link events held at startup."""

    forwarder: ForwarderConfig = field(default_factory=ForwarderConfig)
    critical_fraction: float = 0.8
    key_interval: float = 0.1
    local_queue: int = 256
    rxmt_interval: int = 2
    min_ls_interval: float = 1.0
    min_ls_arrival: float = 0.0
    link_keepalive: float = 1.0
    cost_policy: CostPolicy = field(default_factory=CostPolicy)
    cost_interval: float = 1.0
    startup_backlog: int = 4096

    def __post_init__(self) -> None:
        if not self.cost_interval > 0 or self.startup_backlog < 0:
            raise ConfigError("node: cost_interval > 0 and startup_backlog >= 0")


@dataclass
class NodeLink:
    """One interface of the node: its link, peer, endpoint and (while running) driver."""

    interface: str
    peer: str
    peer_address: str
    spec: LinkSpec
    endpoint: Q3PEndpoint
    hardware: LinkHardware
    driver: LinkDriver | None = None
    up: bool = False


def build_router(name: str, topology: Topology, plan: AddressPlan,
                 config: NodeConfig = NodeConfig(),
                 rates: Mapping[str, float] | None = None) -> Router:
    """The node's router, built by :func:`qbb.routing.simulate.make_router` (the builder
    of the routing simulation too) with the topology's costs and timers.

    ``rates[peer]``: the link's current key rate, used instead of the topology's for a
    computed cost (a node restarting in ``"costs": "auto"`` after a key-rate change)."""
    timers = Timers(hello=int(topology.hello_s), dead=int(topology.dead_s),
                    rxmt=config.rxmt_interval, inf_trans_delay=1,
                    min_ls_interval=config.min_ls_interval,
                    min_ls_arrival=config.min_ls_arrival)
    policy = config.cost_policy

    def cost_of(node: str, peer: str) -> int:
        spec = topology.link(node, peer)
        if rates is None or peer not in rates or spec.configured_cost(node) is not None:
            return spec.cost_from(node, policy)
        return computed_cost(rates[peer], policy.low_level, policy)
    return make_router(name, plan, cost_of, timers)


class QBBNode:
    """A running QBB node (see the module docstring)."""

    def __init__(self, name: str, topology: Topology, plan: AddressPlan,
                 hardware: Mapping[str, LinkHardware], *, config: NodeConfig = NodeConfig(),
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.name, self.config, self.clock = name, config, clock
        self.address = plan.nodes[name].address
        rates = {peer: link.devices.rate_bps for peer, link in hardware.items()} \
            if topology.costs == "auto" else None
        self.router = build_router(name, topology, plan, config, rates)
        self.links: dict[str, NodeLink] = {}
        for link in plan.links_of(name):
            peer = link.peer_of(name)
            self.links[link.address_of(name)] = self._make_link(
                link, peer, plan.nodes[peer].address, topology.link(name, peer),
                hardware[peer], topology)
        self.forwarder = Forwarder(self.address, tuple(self.links), config.forwarder)
        self.forwarder.protocols.add(PROTO_OSPF)
        for interface, link in self.links.items():
            self.forwarder.set_interface_up(interface, False)
            if config.forwarder.critical_load_bps == float("inf"):
                self.forwarder.set_critical_load(
                    interface, config.critical_fraction * link.spec.total_rate_bps)
        self.counters: Counter[str] = Counter()
        self.icmp_received: deque[tuple[float, str, Any]] = deque(maxlen=1024)
        self.auto_costs = frozenset(
            interface for interface, link in self.links.items()
            if topology.costs == "auto" and link.spec.configured_cost(name) is None)
        self.link_costs: dict[str, LinkCost] = {}
        self._handlers: dict[int, Handler] = {}
        #: admission control of the guaranteed-rate class on forwarded QKDTL packets
        #: (:class:`qbb.transport.admission.AdmissionControl`; set by the transport)
        self.admission: Any = None
        self._routes_version = -1
        self._router_wake = trio.Event()
        self._starting = False
        self._held: deque[tuple[str, Any]] = deque()
        self.running = False

    def _make_link(self, link, peer: str, peer_address: str, spec: LinkSpec,
                   hardware: LinkHardware, topology: Topology) -> NodeLink:
        config = LinkConfig(node_id=self.address, peer_id=peer_address,
                            link_id=ip_int(link.network), mtu=spec.mtu,
                            keepalive=self.config.link_keepalive,
                            dead_interval=float(topology.dead_s))
        endpoint = Q3PEndpoint(config, hardware.store, hardware.devices)
        return NodeLink(link.address_of(self.name), peer, peer_address, spec, endpoint, hardware)

    # -- upper layers ----------------------------------------------------------------

    def register(self, protocol: int, handler: Handler) -> None:
        """Deliver packets of ``protocol`` addressed to this node to ``handler(packet, if)``."""
        self._handlers[protocol] = handler
        self.forwarder.protocols.add(protocol)

    def listen(self, protocol: int) -> trio.MemoryReceiveChannel:
        """A channel of ``(packet, interface)`` for ``protocol`` (full: counted drop)."""
        send, receive = trio.open_memory_channel(self.config.local_queue)

        def handler(packet: QKDNLPacket, interface: str | None) -> None:
            try:
                send.send_nowait((packet, interface))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.counters["local_queue_full"] += 1
        self.register(protocol, handler)
        return receive

    def send_packet(self, packet: QKDNLPacket) -> bool:
        """Originate ``packet``; True if it was queued on a link or delivered locally."""
        return self._guard(self._originate, packet)

    def _originate(self, packet: QKDNLPacket) -> bool:
        self._refresh_routes()
        actions = self.forwarder.originate(packet, self.clock())
        results = self._execute(actions)
        return bool(results) and not isinstance(actions[0], Drop) and results[0]

    # -- running ---------------------------------------------------------------------

    async def run(self, wires: Mapping[str, tuple], *, runner: Callable = run_memory,
                  task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run every link over ``wires[interface]`` and the router.

        ``runner(endpoint, *wires[interface], **options)`` drives one link: by default
        :func:`~qbb.q3p.driver.run_memory` over ``(send, receive)`` channels; the emulated
        mode passes :func:`~qbb.q3p.driver.run_udp` with ``(socket, peer)``."""
        self._starting = True
        try:
            async with trio.open_nursery() as nursery:
                for interface, link in self.links.items():
                    link.driver = await nursery.start(functools.partial(
                        runner, link.endpoint, *wires[interface], clock=self.clock,
                        events=functools.partial(self._on_link_event, interface),
                        key_interval=self.config.key_interval))
                self._started()
                nursery.start_soon(self._router_loop)
                nursery.start_soon(self._maintenance_loop)
                self.running = True
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self.running = self._starting = False
            for link in self.links.values():
                link.driver = None

    def _started(self) -> None:
        """Every link has its driver: cost tracking starts, held events are handled."""
        now = self.clock()
        self.link_costs = {interface: LinkCost(self.router.interfaces[interface].cost,
                                               self.config.cost_policy, since=now)
                           for interface in sorted(self.auto_costs)}
        self._starting = False
        while self._held:
            self._guard(self._link_event, *self._held.popleft())

    async def _router_loop(self) -> None:
        while True:
            due = self.router.next_timer()
            deadline = float("inf") if due is None else \
                trio.current_time() + max(0.0, due - self.clock())
            with trio.move_on_at(deadline):
                await self._router_wake.wait()
            self._router_wake = trio.Event()
            now = self.clock()
            if due is not None and now >= due:
                self._guard(lambda: self._emit_routing(self.router.handle_timer(now)))

    async def _maintenance_loop(self) -> None:
        interval = self.config.cost_interval
        next_sample = self.clock() + interval
        while True:
            timer = self.forwarder.next_timer()
            due = next_sample if timer is None else min(next_sample, timer)
            await trio.sleep(max(0.0, due - self.clock()))
            now = self.clock()
            if now >= next_sample:
                next_sample = max(next_sample + interval, now)
                self._guard(self._sample_links, now)
            self._guard(lambda: self._execute(self.forwarder.handle_timer(now)))

    def _sample_links(self, now: float) -> None:
        """L_cr from the devices' current rate; computed costs through their LinkCost."""
        dynamic_critical = self.config.forwarder.critical_load_bps == float("inf")
        for interface, link in self.links.items():
            rate = link.hardware.devices.rate_bps
            if dynamic_critical:
                self.forwarder.set_critical_load(interface, self.config.critical_fraction * rate)
            cost = self.link_costs.get(interface)
            if cost is None:
                continue
            level = link.hardware.store.status(now).enc_level_bits
            new = cost.update(rate, level, now)
            if new is not None:
                self.counters["cost_changes"] += 1
                log.info("node %s: cost of %s now %d", self.name, interface, new)
                self._emit_routing(self.router.set_cost(interface, new, now))

    # -- inputs ----------------------------------------------------------------------

    def _guard(self, action: Callable, *args: Any) -> Any:
        try:
            return action(*args)
        except Exception:  # noqa: BLE001 - nothing from the wire may reach the nursery
            self.counters["internal_error"] += 1
            log.exception("node %s: internal error (input dropped)", self.name)
            return None

    def _on_link_event(self, interface: str, event: Any) -> None:
        if self._starting:  # some link has no driver yet: hold (see the module docstring)
            if len(self._held) >= self.config.startup_backlog:
                self.counters["drop.startup_backlog"] += 1
            else:
                self._held.append((interface, event))
            return
        self._guard(self._link_event, interface, event)

    def _link_event(self, interface: str, event: Any) -> None:
        now = self.clock()
        if isinstance(event, Delivered):
            self._refresh_routes()
            actions = self.forwarder.handle(event.payload, interface, now)
            if self.admission is not None:
                actions = self._admit(actions, now)
            self._execute(actions)
        elif isinstance(event, LinkUp):
            self.links[interface].up = True
            self.forwarder.set_interface_up(interface, True)
            self._emit_routing(self.router.interface_up(interface, now))
        elif isinstance(event, LinkDown):
            self.links[interface].up = False
            self.forwarder.set_interface_up(interface, False)
            self.counters["link_down"] += 1
            self._emit_routing(self.router.interface_down(interface, now))

    def _emit_routing(self, output: list[tuple[str, bytes]]) -> None:
        now = self.clock()
        for interface, raw in output:
            packet = QKDNLPacket(interface, ALL_SPF_ROUTERS, PROTO_OSPF, raw, ttl=1)
            self._execute(self.forwarder.send_link_local(interface, packet, now))
        self._refresh_routes()
        self._router_wake.set()

    def _refresh_routes(self) -> None:
        version = self.router.content_version
        if version != self._routes_version:
            now = self.clock()
            tables = self.router.tables(now)
            back = reverse_costs(tables, self.router.database(now)) if tables else {}
            self.forwarder.update_routes(tables, back)
            self._routes_version = version

    def _admit(self, actions: list, now: float) -> list:
        """Transit admission (docs/transport-service.md): a guaranteed-rate SYN that its
        outgoing link cannot carry is dropped and its source told with ICMP 3/13;
        other QKDTL packets refresh or release reservations while any are held."""
        for action in actions:
            if not isinstance(action, Send) or not _is_qkdtl(action.data):
                continue
            if _qkdtl_flags(action.data) & _SYN and not self.admission.check_syn(
                    action.data, action.interface, now):
                self.forwarder.drops["admission_refused"] += 1
                refusal = self.admission.refusal(self.address, action.data)
                return [Drop("admission_refused"), *self.forwarder.originate(refusal, now)]
            if self.admission.reservations:
                self.admission.observe(action.data, action.interface, now)
        return actions

    def _execute(self, actions: list) -> list[bool]:
        """Carry out the forwarder's actions; per action, whether it took effect."""
        results = []
        for action in actions:
            if isinstance(action, Send):
                results.append(self._queue(action))
            elif isinstance(action, Deliver):
                self._deliver(action)
                results.append(True)
            else:
                results.append(False)
        return results

    def _queue(self, send: Send) -> bool:
        link = self.links.get(send.interface)
        if link is None or link.driver is None:
            self.counters["drop.link_not_running"] += 1
            return False
        if not link.driver.send_nowait(send.data, priority=send.priority,
                                       channel=send.priority, encrypt=send.encrypt):
            self.counters["drop.queue_full"] += 1
            return False
        return True

    def _deliver(self, deliver: Deliver) -> None:
        packet = deliver.packet
        if packet.protocol == PROTO_OSPF:
            if deliver.interface is None or deliver.interface not in self.links:
                self.counters["drop.ospf_not_from_link"] += 1
                return
            now = self.clock()
            self._emit_routing(self.router.receive(deliver.interface, packet.payload, now))
            return
        if packet.protocol == PROTO_ICMP:
            self._icmp(packet)
        handler = self._handlers.get(packet.protocol)
        if handler is not None:
            handler(packet, deliver.interface)

    def _icmp(self, packet: QKDNLPacket) -> None:
        try:
            message = decode_icmp(packet.payload)
        except DecodeError:
            self.counters["drop.icmp_malformed"] += 1
            return
        self.icmp_received.append((self.clock(), packet.source, message))
        self.counters[f"icmp_in.{type(message).__name__}"] += 1

    # -- observation -----------------------------------------------------------------

    def has_route(self, address: str) -> bool:
        """True if the main routing table holds a route to ``address``."""
        tables = self.router.tables(self.clock())
        return tables is not None and tables.main.lookup(address) is not None

    def drops(self) -> Counter[str]:
        """Forwarder drops and node-level drops, by reason."""
        drops = Counter(self.forwarder.drops)
        for key, value in self.counters.items():
            if key.startswith("drop."):
                drops[key[5:]] += value
        return drops

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot: neighbours, LSDB, tables, links, loads, drops."""
        now = self.clock()
        tables = self.router.tables(now)
        return {
            "name": self.name, "address": self.address, "running": self.running,
            "neighbors": {iface: {"router_id": nbr.router_id, "state": nbr.state.name}
                          for iface, nbr in self.router.neighbors().items()},
            "lsdb_size": sum(len(db) for db in self.router.database(now).values()),
            "routes": [] if tables is None else [
                {"dest": r.dest_id, "mask": r.mask, "cost": r.cost,
                 "next_hop": None if r.next_hop is None else r.next_hop.neighbor,
                 "interface": None if r.next_hop is None else r.next_hop.interface}
                for r in tables.main.rows()],
            "links": {iface: self._link_status(link, now) for iface, link in self.links.items()},
            "counters": dict(self.forwarder.counters), "drops": dict(self.drops()),
            "node_counters": dict(self.counters),
        }

    def _link_status(self, link: NodeLink, now: float) -> dict[str, Any]:
        store = link.hardware.store.status(now)
        endpoint = link.endpoint.status()
        return {
            "peer": link.peer, "up": link.up, "state": endpoint["state"],
            "cost": self.router.interfaces[link.interface].cost,
            "cost_mode": "auto" if link.interface in self.auto_costs else "static",
            "key_rate_bps": link.hardware.devices.rate_bps,
            "enc_level_bits": store.enc_level_bits, "dec_level_bits": store.dec_level_bits,
            "ingest_bps": store.ingest_bps, "enc_consume_bps": store.enc_consume_bps,
            "load_bps": self.forwarder.loads.load(link.interface, now),
            "critical_load_bps": self.forwarder.critical_load(link.interface),
            "queue": endpoint["queued"], "in_flight": endpoint["in_flight"],
        }

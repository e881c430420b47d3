"""An embedded QBB network: every node in one process, links as trio memory channels.

:class:`EmbeddedNetwork` builds one :class:`~qbb.node.QBBNode` per node of a
:class:`~qbb.topology.Topology` (addresses from its address plan), joins each QBB link
by two :class:`Wire` directions (trio memory channels with the link's one-way delay and
loss, cut by ``link_down``), runs the topology's schedule (``link_down``, ``link_up``,
``key_rate``, ``node_stop``, ``node_start``) and a :class:`~qbb.relay.KeyRelay` per node.
Real time or virtual time: everything reads the network clock (``trio.current_time()``
minus the start epoch), so under ``trio.testing.MockClock(autojump_threshold=0)`` a
minute of network life takes a fraction of a second.

Key material: each link end owns a :class:`~qbb.node.LinkHardware` (key store + QKD
devices) that survives node restarts.  The two ends' devices share a *link seed*
``SHA-256("qbb/network/link-seed/v1" | topology name | 0 | a | 0 | b)`` (ends in name
order), so both produce the same key stream (docs/keystore.md).  Every store is an
:class:`AuditedKeyStore`: it records every range ``take`` hands out and every range
``get`` serves; :meth:`EmbeddedNetwork.key_reuse_detected` is True if a store handed out
an overlapping range twice or a receiver used key its peer never took.

:func:`run_network` is the whole run (build, converge, relay keys, demonstration
applications, summary); ``qbb run`` parses its options in :mod:`qbb.run_cli`
(docs/node.md).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import random
import sys
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

import trio

from qbb.console import run_console
from qbb.keydemo import run_app_streams
from qbb.node import LinkHardware, NodeConfig, QBBNode
from qbb.q3p.device import DeviceGroup
from qbb.q3p.keystore import KeyStoreConfig, LinkKeyStore, is_initiator
from qbb.relay import KeyRelay, RelayedKey
from qbb.topology import Topology
from qbb.transport.connection import ConnectionConfig
from qbb.transport.driver import TransportDriver
from qbb.transport.hosting import host_transport

__all__ = ["AuditedKeyStore", "EmbeddedNetwork", "IntervalSet", "Wire", "all_pairs",
           "link_seed", "run_network"]

WIRE_CAPACITY = 4096


def link_seed(topology_name: str, a: str, b: str) -> bytes:
    """The shared seed of the QKD devices of link a-b (either order)."""
    first, second = sorted((a, b))
    return hashlib.sha256(b"\0".join([b"qbb/network/link-seed/v1", topology_name.encode(),
                                      first.encode(), second.encode()])).digest()


class IntervalSet:
    """Disjoint half-open integer intervals, merged when adjacent."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, lo: int, hi: int) -> bool:
        """Insert ``[lo, hi)``; True if it overlapped what was already there."""
        i = bisect.bisect_right(self.ends, lo)  # first interval ending after lo
        overlap = i < len(self.starts) and self.starts[i] < hi
        j = bisect.bisect_left(self.starts, hi + 1)  # intervals starting at or before hi
        if i > 0 and self.ends[i - 1] == lo:
            i -= 1
        if i < j:
            lo, hi = min(lo, self.starts[i]), max(hi, self.ends[j - 1])
        self.starts[i:j], self.ends[i:j] = [lo], [hi]
        return overlap

    def covers(self, lo: int, hi: int) -> bool:
        i = bisect.bisect_right(self.starts, lo) - 1
        return i >= 0 and self.ends[i] >= hi

    def __iter__(self):
        return iter(zip(self.starts, self.ends))


class AuditedKeyStore(LinkKeyStore):
    """A key store that records every range it hands out (reuse detection)."""

    def __init__(self, config: KeyStoreConfig) -> None:
        super().__init__(config)
        self.taken, self.used = IntervalSet(), IntervalSet()
        self.reuse = 0

    def take(self, n: int) -> tuple[int, bytes]:
        offset, key = super().take(n)
        self.reuse += self.taken.add(offset, offset + n)
        return offset, key

    def get(self, offset: int, n: int) -> bytes:
        key = super().get(offset, n)
        self.reuse += self.used.add(offset, offset + n)
        return key


class Wire:
    """One direction of a link: one-way ``delay``, random ``loss``, cut while not ``up``."""

    def __init__(self, delay: float, loss: float, rng: random.Random) -> None:
        self.delay, self.loss, self.rng = delay, loss, rng
        self.up = True
        self.taps: list[Callable[[bytes], None]] = []  # see every datagram sent (captures)
        self.counters: Counter[str] = Counter()
        self._pending: deque[tuple[float, bytes]] = deque()
        self._wake = trio.Event()

    async def run(self, inbound: trio.MemoryReceiveChannel,
                  outbound: trio.MemorySendChannel) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._release, outbound)
            async for datagram in inbound:
                for tap in self.taps:
                    tap(datagram)
                if not self.up or (self.loss and self.rng.random() < self.loss):
                    self.counters["lost"] += 1
                    continue
                self._pending.append((trio.current_time() + self.delay, datagram))
                self._wake.set()

    async def _release(self, outbound: trio.MemorySendChannel) -> None:
        while True:
            while self._pending:
                due, datagram = self._pending[0]
                await trio.sleep_until(due)
                self._pending.popleft()
                if not self.up:
                    self.counters["lost"] += 1
                    continue
                try:
                    outbound.send_nowait(datagram)
                    self.counters["delivered"] += 1
                except trio.WouldBlock:
                    self.counters["full"] += 1
            await self._wake.wait()
            self._wake = trio.Event()


class EmbeddedNetwork:
    """All nodes of ``topology`` in this process (see the module docstring)."""

    def __init__(self, topology: Topology, *, config: NodeConfig = NodeConfig(),
                 seed: int = 0, store_capacity: int = 16 << 20, transport: bool = True,
                 transport_config: ConnectionConfig | None = None,
                 key_api_port: int | None = None) -> None:
        self.topology, self.config = topology, config
        self.plan = topology.address_plan()
        self.epoch: float | None = None
        self.nodes: dict[str, QBBNode] = {}
        self.relays: dict[str, KeyRelay] = {}
        self.transport, self.transport_config = transport, transport_config
        self.transports: dict[str, TransportDriver] = {}
        #: node name -> loopback port of its key API (node i of the topology: base + i)
        self.key_api_ports: dict[str, int] = {} if key_api_port is None else {
            node.name: key_api_port + i if key_api_port else 0  # 0: any free port
            for i, node in enumerate(topology.nodes)}
        self.stopped: set[str] = set()
        self.events: list[dict[str, Any]] = []
        self.hardware: dict[str, dict[str, LinkHardware]] = {n.name: {} for n in topology.nodes}
        self.wires: dict[tuple[str, str], Wire] = {}
        self._ends: dict[str, dict[str, tuple]] = {n.name: {} for n in topology.nodes}
        self._inner: list[tuple[Wire, Any, Any]] = []
        self._scopes: dict[str, trio.CancelScope] = {}
        self._next_ids: dict[str, int] = {}
        self.sent: dict[tuple[str, int], RelayedKey] = {}
        self.keys = Counter()
        rng = random.Random(seed)
        for spec in topology.links:
            self._build_link(spec, store_capacity, rng)

    def _build_link(self, spec, capacity: int, rng: random.Random) -> None:
        seed = link_seed(self.topology.name, spec.a, spec.b)
        address = self.plan.nodes
        for me, peer in ((spec.a, spec.b), (spec.b, spec.a)):
            store = AuditedKeyStore(KeyStoreConfig(
                initiator=is_initiator(address[me].address, address[peer].address),
                key_ratio=spec.key_ratio, capacity=capacity))
            self.hardware[me][peer] = LinkHardware(store, DeviceGroup(seed, spec.key_rates_bps))
            wire = self.wires[(me, peer)] = Wire(spec.delay_s, spec.loss, rng)
            node_send, wire_in = trio.open_memory_channel(WIRE_CAPACITY)
            wire_out, node_receive = trio.open_memory_channel(WIRE_CAPACITY)
            self._inner.append((wire, wire_in, wire_out))
            self._ends[me].setdefault(peer, [None, None])[0] = node_send
            self._ends[peer].setdefault(me, [None, None])[1] = node_receive

    def clock(self) -> float:
        """Seconds since the network started (virtual under a MockClock)."""
        return trio.current_time() - self.epoch

    # -- running -------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Start wires, nodes and the schedule; runs until cancelled."""
        self.epoch = trio.current_time()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for wire, inbound, outbound in self._inner:
                nursery.start_soon(wire.run, inbound, outbound)
            for node in self.topology.nodes:
                await self.start_node(node.name)
            nursery.start_soon(self._run_schedule)
            task_status.started(self)

    def _wires_of(self, name: str) -> dict[str, tuple]:
        return {link.address_of(name): tuple(self._ends[name][link.peer_of(name)])
                for link in self.plan.links_of(name)}

    async def start_node(self, name: str) -> QBBNode:
        """(Re)start node ``name`` with fresh protocol state and its link hardware."""
        node = QBBNode(name, self.topology, self.plan, self.hardware[name],
                       config=self.config, clock=self.clock)
        self.nodes[name] = node
        self.relays[name] = KeyRelay(node, on_key=self._on_key,
                                     first_key_id=self._next_ids.get(name, 0))
        self.stopped.discard(name)
        await self._nursery.start(self._run_node, node)
        return node

    async def _run_node(self, node: QBBNode, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        name = node.name
        with trio.CancelScope() as scope:
            self._scopes[name] = scope
            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(node.run, self._wires_of(name)))
                if self.transport:
                    port = self.key_api_ports.get(name)
                    self.transports[name] = await nursery.start(functools.partial(
                        host_transport, node, self.relays[name], config=self.transport_config,
                        key_api=None if port is None else ("127.0.0.1", port)))
                task_status.started(node)

    def stop_node(self, name: str) -> None:
        """Stop node ``name`` (its protocol state is lost; its key stores are kept)."""
        scope = self._scopes.pop(name, None)
        if scope is not None:
            scope.cancel()
        self._next_ids[name] = self.relays[name].next_key_id
        self.stopped.add(name)

    def set_link(self, a: str, b: str, up: bool) -> None:
        self.wires[(a, b)].up = self.wires[(b, a)].up = up

    def set_key_rate(self, a: str, b: str, rate_bps: float) -> None:
        """Both ends' devices change rate at the same instant (docs/keystore.md §2)."""
        now = self.clock()
        for me, peer in ((a, b), (b, a)):
            devices = self.hardware[me][peer].devices
            for index in range(len(devices.devices)):
                devices.set_rate(index, rate_bps / len(devices.devices), now)

    async def _run_schedule(self) -> None:
        for event in sorted(self.topology.schedule, key=lambda e: e.at_s):
            await trio.sleep_until(self.epoch + event.at_s)
            await self.apply(event)

    async def apply(self, event) -> None:
        if event.action in ("link_down", "link_up"):
            self.set_link(*event.link_ends(), event.action == "link_up")
        elif event.action == "key_rate":
            self.set_key_rate(*event.link_ends(), event.value)
        elif event.action == "node_stop":
            self.stop_node(event.target)
        elif event.action == "node_start" and event.target in self.stopped:
            await self.start_node(event.target)
        self.events.append({"at_s": round(self.clock(), 6), "action": event.action,
                            "target": event.target})

    # -- observation -------------------------------------------------------------------

    def running(self) -> list[QBBNode]:
        return [node for name, node in self.nodes.items() if name not in self.stopped]

    def converged(self) -> bool:
        """Every running node has a route to every running node's address."""
        live = self.running()
        return all(n.has_route(m.address) for n in live for m in live if n is not m)

    async def wait_converged(self, timeout: float, poll: float = 0.05) -> float | None:
        """Network time at which :meth:`converged` first held, or None after ``timeout``."""
        with trio.move_on_after(timeout):
            while not self.converged():
                await trio.sleep(poll)
            return self.clock()
        return None

    # -- key relay ---------------------------------------------------------------------

    def relay_key(self, source: str, destination: str, bits: int = 256) -> RelayedKey | None:
        """Send one session key from node ``source`` to node ``destination``."""
        if source in self.stopped:
            self.keys["not_sent"] += 1
            return None
        key = self.relays[source].send_key(self.plan.nodes[destination].address, bits)
        if key is None:
            self.keys["not_sent"] += 1
            return None
        self.sent[(key.source, key.key_id)] = key
        self.keys["sent"] += 1
        return key

    def _on_key(self, received: RelayedKey) -> None:
        sent = self.sent.get((received.source, received.key_id))
        if sent is None or sent.key != received.key or sent.destination != received.destination:
            self.keys["mismatched"] += 1
            return
        self.keys["delivered"] += 1
        self.keys["delivered_bits"] += received.bits

    def key_reuse_detected(self) -> bool:
        """True if any store reused key, or a receiver used key its peer never took."""
        for me, peers in self.hardware.items():
            for peer, hardware in peers.items():
                store = hardware.store
                sender = self.hardware[peer][me].store
                if store.reuse or any(not sender.taken.covers(lo, hi) for lo, hi in store.used):
                    return True
        return False

    def drops(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for node in self.nodes.values():
            total.update(node.drops())
        return total

    def summary(self, convergence_s: float | None) -> dict[str, Any]:
        counters: Counter[str] = Counter()
        for node in self.nodes.values():
            counters.update(node.forwarder.counters)
        return {
            "mode": "embedded", "topology": self.topology.name,
            "nodes": len(self.topology.nodes), "links": len(self.topology.links),
            "converged": convergence_s is not None, "convergence_s": convergence_s,
            "converged_at_end": self.converged(), "elapsed_s": round(self.clock(), 6),
            "keys_sent": self.keys["sent"], "keys_delivered": self.keys["delivered"],
            "keys_delivered_bits": self.keys["delivered_bits"],
            "keys_mismatched": self.keys["mismatched"], "keys_not_sent": self.keys["not_sent"],
            "drops": dict(sorted(self.drops().items())),
            "key_reuse_detected": self.key_reuse_detected(),
            "forwarded": counters["forwarded"], "icmp_sent": counters["icmp_sent"],
            "alternate_used": counters["alternate_used"],
            "lfa_rejected": counters["lfa_rejected"], "events": list(self.events),
        }


def all_pairs(topology: Topology) -> list[tuple[str, str]]:
    """Every unordered pair of node names, in name order."""
    names = sorted(node.name for node in topology.nodes)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


async def run_network(topology: Topology, duration_s: float, *,
                      on_progress: Callable[[dict], None] | None = None,
                      pairs: Sequence[tuple[str, str]] | None = None, keys_per_pair: int = 1,
                      key_bits: int = 256, relay_interval: float = 1.0,
                      config: NodeConfig = NodeConfig(), seed: int = 0,
                      console: trio.abc.ReceiveStream | None = None,
                      console_write: Callable[[str], None] | None = None,
                      app_pairs: Sequence[tuple[str, str]] = (), app_keys: int = 16,
                      app_key_bits: int = 256,
                      key_api_port: int | None = None) -> dict[str, Any]:
    """Run ``topology`` for ``duration_s`` network seconds and return the summary.

    After convergence, every ``relay_interval`` one key of ``key_bits`` goes from the
    first to the second node of each pair (default :func:`all_pairs`), ``keys_per_pair``
    rounds in all, as long as the duration allows; meanwhile, for each of ``app_pairs``,
    demonstration applications obtain ``app_keys`` keys through the QKDTL transport
    (:mod:`qbb.keydemo`).  ``on_progress`` gets a small dict about once per second.
    Commands read from ``console`` (:mod:`qbb.console`) are applied as they arrive;
    replies go to ``console_write``.  ``key_api_port``: node i serves the key API on
    127.0.0.1:port+i."""
    pairs = list(pairs) if pairs is not None else all_pairs(topology)
    apps: dict[str, Any] = {"app_streams": len(app_pairs), "app_keys": 0, "app_key_bits": 0,
                            "app_keys_identical": None,
                            "app_failures": {"unfinished": len(app_pairs)} if app_pairs else {}}

    async def run_apps(timeout: float) -> None:
        apps.update(await run_app_streams(net, app_pairs, keys=app_keys,
                                          chunk_bits=app_key_bits, timeout=timeout))
    async with trio.open_nursery() as nursery:
        net: EmbeddedNetwork = await nursery.start(
            EmbeddedNetwork(topology, config=config, seed=seed, key_api_port=key_api_port).run)
        if on_progress is not None:
            nursery.start_soon(_progress, net, on_progress)
        if console is not None:
            nursery.start_soon(run_console, net, console, console_write or _print_stderr)
        convergence = await net.wait_converged(timeout=duration_s)
        if convergence is not None and app_pairs:
            nursery.start_soon(run_apps, max(0.1, duration_s - net.clock()))
        if convergence is not None:
            for _ in range(keys_per_pair):
                if net.clock() + relay_interval > duration_s:
                    break
                for a, b in pairs:
                    net.relay_key(a, b, key_bits)
                await trio.sleep(relay_interval)
        await trio.sleep_until(net.epoch + duration_s)
        summary = net.summary(None if convergence is None else round(convergence, 6))
        summary.update(apps)
        nursery.cancel_scope.cancel()
    return summary


async def _progress(net: EmbeddedNetwork, report: Callable[[dict], None]) -> None:
    while True:
        await trio.sleep(1.0)
        report({"t": round(net.clock(), 3), "converged": net.converged(),
                "keys_delivered": net.keys["delivered"], "running": len(net.running())})


def _print_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)

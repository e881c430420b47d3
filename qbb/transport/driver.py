"""trio glue between one :class:`~qbb.node.QBBNode` and its QKDTL service (seed 002 §3.3).

:class:`TransportDriver` runs the sans-IO :class:`~qbb.transport.service.TransportService`
of a node in one trio task, the way :class:`~qbb.node.QBBNode` runs its router:

* the node calls :meth:`TransportDriver.on_packet` (protocol 253) and
  :meth:`~TransportDriver.on_icmp` (protocol 1) synchronously; they only queue the input
  and wake the task, so nothing re-enters the service while it is sending (a packet to the
  node itself, or an ICMP error the node generates, comes back through the same queue).
  Segments for ports the service does not own (the key relay's port 7) go straight to
  ``fallback``;
* the task loop: feed queued inputs, run due timers, refresh the directory's peer set
  from the routing table when it changed, send everything the service has with
  ``node.send_packet(QKDNLPacket(node.address, remote, 253, segment, tos=...))``, wake
  anybody waiting on the service (:meth:`~TransportDriver.wait_until`), then sleep until
  the next input or the earliest timer (at most ``poll`` seconds);
* every input runs under a guard: an unexpected exception is counted
  (``internal_error``) and logged, never raised into the nursery.

Wiring (one line each, for :mod:`qbb.network` / :mod:`qbb.nodeproc`)::

    driver = TransportDriver.attach(node, relay=relay)   # registers protocols 253 and 1
    await nursery.start(driver.run)
    backend = driver.backend                             # a qbb.keyapi.model.KeyBackend

Forwarding-path admission control (transit nodes) uses the same table as the ingress
check: ``driver.admission.check_syn(packet, out_interface, now)`` /
``driver.admission.observe(...)``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import trio

from qbb.errors import DecodeError
from qbb.netlayer.icmp import decode_icmp
from qbb.netlayer.packet import QKDNLPacket
from qbb.routing.table import DestType
from qbb.transport.admission import AdmissionControl
from qbb.transport.connection import ConnectionConfig
from qbb.transport.directory import Directory
from qbb.transport.keybackend import TransportKeyBackend
from qbb.transport.service import TransportService
from qbb.wire import PROTO_ICMP, PROTO_QKDTL

__all__ = ["TransportDriver"]

log = logging.getLogger(__name__)
Handler = Callable[[QKDNLPacket, "str | None"], None]


class TransportDriver:
    """The QKDTL service of ``node`` under trio (module docstring)."""

    def __init__(self, node, *, fallback: Handler | None = None,
                 config: ConnectionConfig = ConnectionConfig(),
                 directory_interval: float = 30.0, directory_lifetime: float = 90.0,
                 admission_fraction: float = 0.5, admission_timeout: float = 120.0,
                 incarnation: int | None = None, poll: float = 1.0,
                 randbytes: Callable[[int], bytes] = secrets.token_bytes,
                 isn: Callable[[], int] | None = None) -> None:
        self.node, self.fallback, self.poll = node, fallback, poll
        self.admission = AdmissionControl(self._key_rate, fraction=admission_fraction,
                                          timeout=admission_timeout)
        self.directory = Directory(node.address, interval=directory_interval,
                                   lifetime=directory_lifetime,
                                   incarnation=time.time_ns() // 1000 if incarnation is None
                                   else incarnation)
        self.service = TransportService(node.address, config=config, directory=self.directory,
                                        admission=self.admission, route=self.route,
                                        randbytes=randbytes, isn=isn)
        self.backend = TransportKeyBackend(self)
        self.key_api = None  # the KeyApiServer serving ``backend``, when one runs
        self.counters: Counter[str] = Counter()
        self.running = False
        self._inbox: deque[tuple[str, Any]] = deque()
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._routes_version: Any = None

    @classmethod
    def attach(cls, node, *, relay=None, icmp: bool = True, **kwargs: Any) -> "TransportDriver":
        """A driver registered on ``node`` for protocol 253 (and 1 unless ``icmp=False``:
        then call :meth:`on_icmp` from the node's own ICMP handler).  ``relay``: the node's
        :class:`~qbb.relay.KeyRelay`, which keeps the ports below 1024 it serves."""
        if relay is not None and "fallback" not in kwargs:
            kwargs["fallback"] = relay._on_packet
        driver = cls(node, **kwargs)
        node.register(PROTO_QKDTL, driver.on_packet)
        node.admission = driver.admission  # transit admission on the forwarding path
        if icmp:
            node.register(PROTO_ICMP, driver.on_icmp)
        return driver

    # -- node callbacks (synchronous) ------------------------------------------------

    def on_packet(self, packet: QKDNLPacket, interface: str | None) -> None:
        if not self.service.owns(packet.payload):
            if self.fallback is not None:
                self.fallback(packet, interface)
            else:
                self.counters["no_fallback"] += 1
            return
        self._inbox.append(("packet", packet))
        self._wake.set()

    def on_icmp(self, packet: QKDNLPacket, interface: str | None) -> None:
        try:
            message = decode_icmp(packet.payload)
        except DecodeError:
            self.counters["icmp_malformed"] += 1
            return
        self._inbox.append(("icmp", message))
        self._wake.set()

    # -- what the service asks of the node -------------------------------------------

    def now(self) -> float:
        return self.node.clock()

    def route(self, address: str) -> str | None:
        """The usable outgoing interface towards ``address`` ("local" for the node)."""
        if address == self.node.address:
            return "local"
        tables = self.node.router.tables(self.now())
        if tables is None:
            return None
        for route in tables.extended.lookup(address):
            hop = route.next_hop
            if hop is not None and self.node.forwarder.is_up(hop.interface):
                return hop.interface
        return None

    def _key_rate(self, interface: str) -> float:
        """Key bit/s for one-time pads *out of* ``interface``: the link's QKD rate times
        this end's share of it for encryption (``key_ratio``, docs/keystore.md)."""
        link = self.node.links.get(interface)
        if link is None:
            return 0.0
        rate = float(link.hardware.devices.rate_bps)
        config = getattr(link.hardware.store, "config", None)
        if config is not None:
            share = config.key_ratio / 1000
            rate *= share if config.initiator else 1 - share
        return rate

    def _peers(self, now: float) -> None:
        version = self.node.router.content_version
        if version == self._routes_version:
            return
        self._routes_version = version
        tables = self.node.router.tables(now)
        rows = tables.main.rows() if tables is not None else []
        self.service.set_peers({r.dest_id: r.area for r in rows
                                if r.dest_type == DestType.ROUTER}, now)

    # -- the task --------------------------------------------------------------------

    def kick(self) -> None:
        """Have the task run soon (after an application command)."""
        self._wake.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started(self)
        try:
            while True:
                self._guard(self._step)
                due = self.service.next_timer()
                wait = self.poll if due is None else min(self.poll, max(0.0, due - self.now()))
                with trio.move_on_after(wait):
                    await self._wake.wait()
                self._wake = trio.Event()
        finally:
            self.running = False

    def _guard(self, action: Callable, *args: Any) -> Any:
        try:
            return action(*args)
        except Exception:  # noqa: BLE001 - nothing from the wire may reach the nursery
            self.counters["internal_error"] += 1
            log.exception("transport %s: internal error (input dropped)", self.node.address)
            return None

    def _step(self) -> None:
        now = self.now()
        self._guard(self._peers, now)
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "packet":
                self._guard(self.service.receive_packet, item, now)
            else:
                self._guard(self.service.receive_icmp, item, now)
        due = self.service.next_timer()
        if due is not None and due <= now:
            self._guard(self.service.handle_timer, now)
        self._flush(now)

    def _flush(self, now: float) -> None:
        for out in self.service.packets_to_send(now):
            packet = QKDNLPacket(self.node.address, out.destination, PROTO_QKDTL, out.payload,
                                 tos=out.tos)
            if self.node.send_packet(packet):
                self.counters["sent"] += 1
            else:
                self.counters["send_failed"] += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until ``predicate()`` holds after a service step."""
        with trio.move_on_after(max(0.0, timeout)):
            while not predicate():
                await self._changed.wait()
            return True
        return predicate()

    def status(self) -> dict[str, Any]:
        return {"running": self.running, "counters": dict(self.counters),
                **self.service.status(self.now())}

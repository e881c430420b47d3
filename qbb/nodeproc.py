"""One QBB node as an OS process: ``python -m qbb.nodeproc ...`` (seed 002 §2.5, Fig. 7).

The emulated mode (shared/DESIGN.md, docs/emulated.md) runs every node of a topology in
its own network namespace; :mod:`qbb.emulated` starts this entry point once per node.  It
runs one :class:`~qbb.node.QBBNode` (the same class as the embedded network) whose links
are driven by :func:`~qbb.q3p.driver.run_udp` on UDP sockets bound to the node's veth
addresses, port :data:`qbb.wire.Q3P_UDP_PORT`, plus a :class:`~qbb.relay.KeyRelay` and the
QKDTL transport (:mod:`qbb.transport.hosting`; with ``--key-api PORT`` the application key
API on this namespace's 127.0.0.1:PORT, docs/keyapi.md).

Key material
    Each link end's :class:`~qbb.node.LinkHardware` is built as the embedded network
    builds it (:class:`~qbb.network.AuditedKeyStore`, devices seeded by
    :func:`~qbb.network.link_seed`) and lives as long as the process, so a ``stop`` /
    ``start`` of the node keeps its key stores.  The clock is ``time.time() - epoch`` with
    the ``--epoch`` every process of the run shares, so both ends of a link produce the
    same key stream (docs/keystore.md).  A key rate change carries the instant ``at``
    (network seconds, in the future) at which both ends apply it.

Control channel (docs/emulated.md §3)
    One JSON object per line on stdin, one per line on stdout.  A request
    ``{"id": N, "op": ...}`` is answered by ``{"reply": N, "ok": bool, ...}``; ops:
    ``status``, ``relay`` (``to`` node name, ``bits``), ``probe`` (ICMP Echo Request to
    ``address`` with ``ttl``), ``key_rate`` (``peer``, ``value`` bit/s, ``at``),
    ``stop``, ``start``, ``exit`` (answered by the final summary, then the process ends;
    so does EOF on stdin).  Unsolicited lines: ``{"event": "ready"}``, ``{"event": "key",
    ...}`` per session key received, ``{"event": "icmp", ...}`` per ICMP message received.
    Keys are reported by SHA-256 digest; their bytes only with ``--reveal-keys`` (used
    to prove that captures never hold them).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import socket
import sys
import time
from typing import Any

import trio

from qbb.console import stream_lines
from qbb.netlayer.icmp import EchoRequest, encode_icmp
from qbb.netlayer.packet import QKDNLPacket
from qbb.memory import tune_malloc
from qbb.network import AuditedKeyStore, link_seed
from qbb.node import LinkHardware, NodeConfig, QBBNode
from qbb.q3p.device import DeviceGroup
from qbb.q3p.driver import run_udp
from qbb.q3p.keystore import KeyStoreConfig, is_initiator
from qbb.q3p.linkproc import big_buffers
from qbb.relay import KeyRelay, RelayedKey
from qbb.topology import Topology, load_topology
from qbb.transport.driver import TransportDriver
from qbb.transport.hosting import host_transport
from qbb.wire import PROTO_ICMP, Q3P_UDP_PORT

__all__ = ["NodeHost", "build_hardware", "build_parser", "main"]

MAX_INTERVALS = 4096  # per store in the final summary (key reuse check by the launcher)


def key_digest(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


def build_hardware(topology: Topology, name: str, capacity: int) -> dict[str, LinkHardware]:
    """This node's link ends: audited key store and QKD devices, as the embedded network."""
    plan = topology.address_plan()
    me = plan.nodes[name].address
    hardware = {}
    for link in plan.links_of(name):
        peer = link.peer_of(name)
        spec = topology.link(name, peer)
        store = AuditedKeyStore(KeyStoreConfig(
            initiator=is_initiator(me, plan.nodes[peer].address), key_ratio=spec.key_ratio,
            capacity=capacity))
        devices = DeviceGroup(link_seed(topology.name, spec.a, spec.b), spec.key_rates_bps)
        hardware[peer] = LinkHardware(store, devices)
    return hardware


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class NodeHost:
    """The node of this process, its sockets, hardware and control channel."""

    def __init__(self, topology: Topology, name: str, underlay: dict[str, tuple[str, str]],
                 *, epoch: float, capacity: int = 16 << 20, reveal_keys: bool = False,
                 config: NodeConfig = NodeConfig(), key_api_port: int | None = None) -> None:
        self.topology, self.name, self.epoch = topology, name, epoch
        self.plan = topology.address_plan()
        self.config, self.reveal = config, reveal_keys
        self.hardware = build_hardware(topology, name, capacity)
        self.underlay = underlay
        self.sockets: dict[str, socket.socket] = {}
        self.node: QBBNode | None = None
        self.relay: KeyRelay | None = None
        self.transport: TransportDriver | None = None
        self.key_api_port = key_api_port
        self.scope: trio.CancelScope | None = None
        self.next_key_id = 0
        self.old_counters: list[QBBNode] = []

    def clock(self) -> float:
        return time.time() - self.epoch

    def open_sockets(self) -> None:
        for peer, (local, _remote) in self.underlay.items():
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            big_buffers(sock, 4 << 20)
            sock.bind((local, Q3P_UDP_PORT))
            sock.setblocking(False)
            self.sockets[peer] = sock

    def _wires(self) -> dict[str, tuple]:
        return {link.address_of(self.name): (self.sockets[link.peer_of(self.name)],
                                             (self.underlay[link.peer_of(self.name)][1],
                                              Q3P_UDP_PORT))
                for link in self.plan.links_of(self.name)}

    def _drain(self) -> None:
        """Datagrams that arrived while the node was stopped belong to no session: drop."""
        for sock in self.sockets.values():
            try:
                while sock.recv(1 << 16):
                    pass
            except (BlockingIOError, OSError):
                pass

    # -- node life -------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        if self.running():
            return
        while self.node is not None and self.node.running:  # a stop still winding down
            await trio.sleep(0.005)  # (a start right after a stop must not be lost)
        if self.node is not None:
            self.old_counters.append(self.node)
        self._drain()
        self.node = QBBNode(self.name, self.topology, self.plan, self.hardware,
                            config=self.config, clock=self.clock)
        self.relay = KeyRelay(self.node, on_key=self._on_key, first_key_id=self.next_key_id)
        self.node.register(PROTO_ICMP, self._on_icmp)
        await nursery.start(self._run_node, self.node)

    async def _run_node(self, node: QBBNode, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self.scope = scope
            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(node.run, self._wires(), runner=run_udp))
                port = self.key_api_port
                self.transport = await nursery.start(functools.partial(
                    host_transport, node, self.relay, icmp=False,
                    key_api=None if port is None else ("127.0.0.1", port)))
                task_status.started(node)

    def stop(self) -> None:
        if self.scope is not None:
            self.scope.cancel()
            self.scope = None
        if self.relay is not None:
            self.next_key_id = self.relay.next_key_id

    def running(self) -> bool:
        return self.scope is not None and self.node is not None

    # -- upper layer events ----------------------------------------------------------

    def _on_key(self, key: RelayedKey) -> None:
        out = {"event": "key", "source": key.source, "destination": key.destination,
               "key_id": key.key_id, "bits": key.bits, "digest": key_digest(key.key),
               "t": round(self.clock(), 6)}
        if self.reveal:
            out["key"] = key.key.hex()
        emit(out)

    def _on_icmp(self, packet: QKDNLPacket, interface: str | None) -> None:
        if self.transport is not None and self.transport.node is self.node:
            self.transport.on_icmp(packet, interface)
        if self.node is None or not self.node.icmp_received:
            return
        _, source, message = self.node.icmp_received[-1]
        emit({"event": "icmp", "from": source, "type": type(message).__name__,
              "code": int(getattr(message, "code", 0)), "t": round(self.clock(), 6)})

    # -- commands --------------------------------------------------------------------

    async def command(self, request: dict[str, Any], nursery: trio.Nursery) -> dict[str, Any]:
        op = request.get("op")
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            return {"ok": False, "error": f"unknown op {op!r}"}
        result = handler(request)
        if op == "start":
            await self.start(nursery)
        return result

    def _op_status(self, request: dict) -> dict:
        running = self.running()
        names = [n.name for n in self.topology.nodes if n.name != self.name]
        reachable = [n for n in names
                     if running and self.node.has_route(self.plan.nodes[n].address)]
        status = self.node.status() if self.node is not None else {}
        status.update(running=running, reachable=reachable, t=round(self.clock(), 6))
        return {"ok": True, "status": status}

    def _op_relay(self, request: dict) -> dict:
        if not self.running():
            return {"ok": False, "error": "node stopped"}
        destination = self.plan.nodes[request["to"]].address
        key = self.relay.send_key(destination, int(request.get("bits", 256)))
        if key is None:
            return {"ok": False, "error": "not sent"}
        out = {"ok": True, "source": key.source, "destination": key.destination,
               "key_id": key.key_id, "bits": key.bits, "digest": key_digest(key.key)}
        if self.reveal:
            out["key"] = key.key.hex()
        return out

    def _op_probe(self, request: dict) -> dict:
        if not self.running():
            return {"ok": False, "error": "node stopped"}
        payload = encode_icmp(EchoRequest(int(request.get("ident", 1)) & 0xFFFF,
                                          int(request.get("seq", 0)) & 0xFFFF, b"qbb-probe"))
        packet = QKDNLPacket(self.node.address, request["address"], PROTO_ICMP, payload,
                             ttl=int(request.get("ttl", 64)))
        return {"ok": bool(self.node.send_packet(packet))}

    def _op_key_rate(self, request: dict) -> dict:
        at, value = float(request["at"]), float(request["value"])
        if at <= self.clock():
            return {"ok": False, "error": f"rate change at {at} is not in the future"}
        devices = self.hardware[request["peer"]].devices
        for index in range(len(devices.devices)):
            devices.set_rate(index, value / len(devices.devices), at)
        return {"ok": True}

    def _op_stop(self, request: dict) -> dict:
        self.stop()
        return {"ok": True}

    def _op_start(self, request: dict) -> dict:
        return {"ok": True}

    def _op_exit(self, request: dict) -> dict:
        return {"ok": True, "summary": self.summary()}

    def summary(self) -> dict[str, Any]:
        """Counters of every incarnation of the node and the key audit of every store."""
        nodes = self.old_counters + ([self.node] if self.node is not None else [])
        forwarded, drops = {}, {}
        for node in nodes:
            for key, value in node.forwarder.counters.items():
                forwarded[key] = forwarded.get(key, 0) + value
            for key, value in node.drops().items():
                drops[key] = drops.get(key, 0) + value
        stores = {peer: {"reuse": hw.store.reuse,
                         "taken": [list(r) for r in hw.store.taken][:MAX_INTERVALS],
                         "used": [list(r) for r in hw.store.used][:MAX_INTERVALS]}
                  for peer, hw in self.hardware.items()}
        return {"name": self.name, "counters": forwarded, "drops": drops, "stores": stores,
                "keys_received": 0 if self.relay is None else len(self.relay.received)}


async def _control(host: NodeHost, nursery: trio.Nursery) -> None:
    """Serve requests from stdin until ``exit`` or EOF."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async for line in stream_lines(stream):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            reply = await host.command(request, nursery)
        except Exception as error:  # noqa: BLE001 - a bad request must not kill the node
            request, reply = {}, {"ok": False, "error": f"{type(error).__name__}: {error}"}
        emit({"reply": request.get("id") if isinstance(request, dict) else None, **reply})
        if isinstance(request, dict) and request.get("op") == "exit":
            return


async def run(args: argparse.Namespace) -> None:
    topology = load_topology(args.topology)
    underlay = {}
    for item in args.link:
        peer, local, remote = item.split(",")
        underlay[peer] = (local, remote)
    host = NodeHost(topology, args.node, underlay, epoch=args.epoch,
                    capacity=args.capacity, reveal_keys=args.reveal_keys,
                    key_api_port=args.key_api)
    host.open_sockets()
    async with trio.open_nursery() as nursery:
        await host.start(nursery)
        emit({"event": "ready", "name": args.node, "address": host.node.address,
              "pid": os.getpid()})
        await _control(host, nursery)
        nursery.cancel_scope.cancel()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qbb.nodeproc",
                                description="Run one QBB node on UDP sockets (emulated mode).")
    p.add_argument("--topology", required=True, help="topology JSON file")
    p.add_argument("--node", required=True, help="this node's name")
    p.add_argument("--epoch", type=float, required=True,
                   help="shared wall-clock origin (seconds since 1970) of the run")
    p.add_argument("--link", action="append", default=[], metavar="PEER,LOCAL,REMOTE",
                   help="a QBB link: peer name, local and peer underlay IPv4 address")
    p.add_argument("--capacity", type=int, default=16 << 20, help="key store capacity, bytes")
    p.add_argument("--key-api", type=int, default=None, metavar="PORT",
                   help="serve the application key API on 127.0.0.1:PORT (this namespace)")
    p.add_argument("--reveal-keys", action="store_true",
                   help="report relayed session keys in clear on stdout (tests only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_malloc()  # no page fault per frame from the key stores' buffers (qbb/memory.py)
    try:
        trio.run(run, args)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

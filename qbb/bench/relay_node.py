"""One QBB node as an OS process over UDP, for ``qbb bench relay`` (seed 002 §2.5, Fig. 7).

``python -m qbb.bench.relay_node --topology FILE --node NAME --link PEER=LOCAL,REMOTE ...``
builds the node exactly as the embedded network does (:class:`qbb.node.QBBNode`: one
:class:`~qbb.q3p.endpoint.Q3PEndpoint` per link, the OSPF-derived router, the forwarder,
a :class:`~qbb.relay.KeyRelay`), but each link's endpoint runs under
:func:`qbb.q3p.driver.run_udp` on a UDP socket bound to ``LOCAL:7355`` and talking to
``REMOTE:7355`` (the veth pair of that QBB link, :mod:`qbb.netns`).

Key stores: every link end is pre-filled with ``--prefill`` bytes of merged key derived from
the link seed (both ends identical, :func:`prefill_store`), so QKD device rates do not limit
the measurement; the devices still run (their output is below the stores' position and is
ignored).  All nodes share ``--epoch`` (wall clock) as their clock origin.

Protocol with the bench (JSON lines on stdout, one command line on stdin):

* ``{"ready": ...}`` once the node has a route to every other node;
* the ingress (``--send N --to NAME``) waits for ``go`` on stdin, relays N session keys of
  ``--bits`` bits, ``--batch`` keys per KEY segment, as fast as its link queue takes
  them, prints ``{"sent": ...}`` and runs on (its link must keep retransmitting) until
  SIGTERM;
* the egress (``--expect N``) prints ``{"received": ...}`` (keys, bits, first-to-last
  delivery span, SHA-256 over the keys in arrival order) after N keys, ``--idle`` seconds
  without a key, or ``--timeout``, and exits;
* every other node, and the ingress, prints ``{"stopped": ...}`` (counters, drops) on
  SIGTERM and exits.

``--window`` sets the Q3P window of every link (default 256 here; 64 in :class:`QBBNode`).

Every report carries ``cpu_s``: user and system CPU seconds, page faults and context
switches of the process since it became ready.  The keys are hashed (SHA-256, for the
``identical`` check) only after the measurement: the ingress reports its digest with
``stopped``, the egress computes it after its CPU time was read.

``--malloc tuned`` (the default) keeps freed heap memory in the process (:func:`qbb.memory.tune_malloc`);
``--malloc default`` leaves glibc's settings.  ``--profile FILE`` writes cProfile
statistics of the whole run (pstats format).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import functools
import hashlib
import json
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Mapping

import trio

from qbb.memory import tune_malloc
from qbb.network import link_seed
from qbb.node import LinkHardware, NodeLink, QBBNode
from qbb.q3p.endpoint import Q3PEndpoint
from qbb.q3p.device import DeviceGroup
from qbb.q3p.driver import run_udp
from qbb.q3p.keystore import KeyStoreConfig, LinkKeyStore, is_initiator
from qbb.q3p.linkproc import big_buffers
from qbb.relay import KeyRelay, RelayedKey
from qbb.topology import Topology, load_topology
from qbb.wire import Q3P_UDP_PORT

__all__ = ["Egress", "UdpNode", "build_hardware", "main", "prefill_store", "receive",
           "send_keys"]

PREFILL_SEED = b"qbb/bench/relay/prefill"
SEND_BATCH = 32  # segments queued per turn of the ingress loop


def prefill_store(store: LinkKeyStore, topology: Topology, a: str, b: str, nbytes: int) -> None:
    """Ingest ``nbytes`` of merged key that both ends of link a-b derive identically."""
    if nbytes:
        seed = PREFILL_SEED + link_seed(topology.name, a, b)
        store.ingest(DeviceGroup(seed, [8.0 * nbytes]).advance(1))


def build_hardware(topology: Topology, name: str, prefill: int) -> dict[str, LinkHardware]:
    """Key store (pre-filled) and devices of each of ``name``'s link ends, by peer."""
    plan = topology.address_plan()
    hardware = {}
    for spec in topology.links_of(name):
        peer = spec.peer_of(name)
        store = LinkKeyStore(KeyStoreConfig(
            initiator=is_initiator(plan.nodes[name].address, plan.nodes[peer].address),
            key_ratio=spec.key_ratio, capacity=prefill + (4 << 20)))
        prefill_store(store, topology, spec.a, spec.b, prefill)
        devices = DeviceGroup(link_seed(topology.name, spec.a, spec.b), spec.key_rates_bps)
        hardware[peer] = LinkHardware(store, devices)
    return hardware


class UdpNode(QBBNode):
    """A :class:`QBBNode` whose links run over UDP sockets instead of memory channels."""

    window = 64

    def _make_link(self, link, peer, peer_address, spec, hardware, topology) -> NodeLink:
        made = super()._make_link(link, peer, peer_address, spec, hardware, topology)
        config = dataclasses.replace(made.endpoint.config, window=self.window)
        made.endpoint = Q3PEndpoint(config, hardware.store, hardware.devices)
        return made

    async def run_udp(self, sockets: Mapping[str, tuple[socket.socket, tuple[str, int]]],
                      *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run every link over ``sockets[interface] = (bound socket, peer address)``."""
        async with trio.open_nursery() as nursery:
            for interface, link in self.links.items():
                sock, peer = sockets[interface]
                link.driver = await nursery.start(functools.partial(
                    run_udp, link.endpoint, sock, peer, clock=self.clock,
                    events=functools.partial(self._on_link_event, interface),
                    key_interval=self.config.key_interval))
            nursery.start_soon(self._router_loop)
            self.running = True
            task_status.started(self)
            await trio.sleep_forever()


class Egress:
    """Counts the keys that reach this node and when (``on_key`` of its relay).

    The first ``batch`` keys arrive in the first segment, all at the start of the span:
    their bits are not counted in ``bits_in_span``."""

    def __init__(self, expect: int, batch: int = 1) -> None:
        self.expect, self.batch, self.count, self.bits = expect, batch, 0, 0
        self.first = self.last = None
        self.first_bits = 0
        self.keys: list[bytes] = []  # hashed after the run: SHA-256 is not part of relaying
        self.done = trio.Event()

    def on_key(self, key: RelayedKey) -> None:
        self.last = time.perf_counter()
        if self.first is None:
            self.first = self.last
        if self.count < self.batch:
            self.first_bits += key.bits
        self.count += 1
        self.bits += key.bits
        self.keys.append(key.key)
        if self.count >= self.expect:
            self.done.set()

    def report(self) -> dict:
        span = self.last - self.first if self.count > 1 else 0.0
        return {"keys": self.count, "bits": self.bits, "span_s": span,
                "bits_in_span": self.bits - self.first_bits, "digest": digest(self.keys)}


def digest(keys: list[bytes]) -> str:
    """SHA-256 over ``keys`` in order (computed once the measurement is over)."""
    sha = hashlib.sha256()
    for key in keys:
        sha.update(key)
    return sha.hexdigest()


async def send_keys(relay: KeyRelay, destination: str, count: int, bits: int,
                    batch: int = 1, drawn: list[bytes] | None = None) -> dict:
    """Relay ``count`` keys, ``batch`` per segment, as fast as the link queue accepts them;
    the keys are appended to ``drawn`` (hash them with :func:`digest` once the run is over,
    so that hashing does not hold up the links)."""
    drawn = [] if drawn is None else drawn
    sent, failed, segments = 0, 0, 0
    start = time.perf_counter()
    while sent < count:
        for _ in range(SEND_BATCH):
            if sent >= count:
                break
            keys = relay.send_keys(destination, bits, min(batch, count - sent))
            if keys is None:
                failed += 1
                await trio.sleep(0.001)
                break
            drawn.extend(key.key for key in keys)
            sent += len(keys)
            segments += 1
        await trio.sleep(0)
    seconds = time.perf_counter() - start
    return {"keys": sent, "segments": segments, "bits": sent * bits, "refused": failed,
            "seconds": seconds}


def _print(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


async def _wait_routes(node: QBBNode, addresses: list[str]) -> None:
    while not all(node.has_route(a) for a in addresses):
        await trio.sleep(0.05)


async def _read_go() -> None:
    stream = trio.lowlevel.FdStream(os.dup(0))
    buffer = b""
    while b"go" not in buffer:
        chunk = await stream.receive_some(64)
        if not chunk:
            raise SystemExit("stdin closed before 'go'")
        buffer += chunk


_CPU_MARK = [0.0, 0.0, 0, 0]  # user s, system s, page faults, context switches at ready


def _usage() -> list:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return [usage.ru_utime, usage.ru_stime, usage.ru_minflt + usage.ru_majflt,
            usage.ru_nvcsw + usage.ru_nivcsw]


def mark_cpu() -> None:
    """Start counting this process's CPU time (user and system) from now."""
    _CPU_MARK[:] = _usage()


def cpu_since_mark() -> dict:
    """CPU seconds, page faults and context switches since :func:`mark_cpu`."""
    now = _usage()
    return {"user": round(now[0] - _CPU_MARK[0], 3), "system": round(now[1] - _CPU_MARK[1], 3),
            "page_faults": now[2] - _CPU_MARK[2], "switches": now[3] - _CPU_MARK[3]}


def node_report(node: QBBNode) -> dict:
    links = {link.peer: {"driver": dict(link.driver.counters) if link.driver else {},
                         "endpoint": dict(link.endpoint.counters)}
             for link in node.links.values()}
    return {"node": node.name, "forwarder": dict(node.forwarder.counters),
            "drops": dict(node.drops()), "node_counters": dict(node.counters), "links": links,
            "cpu_s": cpu_since_mark()}


async def run(args: argparse.Namespace) -> None:
    topology = load_topology(args.topology)
    UdpNode.window = args.window
    plan = topology.address_plan()
    epoch = args.epoch
    node = UdpNode(args.node, topology, plan, build_hardware(topology, args.node, args.prefill),
                   clock=lambda: time.time() - epoch)
    relay = KeyRelay(node)
    egress = Egress(args.expect, args.batch) if args.expect else None
    if egress is not None:
        relay.on_key = egress.on_key
    sockets = _sockets(node, plan, args.link)
    others = [plan.nodes[n.name].address for n in topology.nodes if n.name != args.node]
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run_udp, sockets)
            with trio.move_on_after(args.timeout) as scope:
                await _wait_routes(node, others)
                _print({"ready": {"node": args.node, "t": node.clock()}})
                mark_cpu()
                if egress is not None:
                    await receive(egress, args.idle)
                    report = node_report(node)  # its CPU time first: hashing is not relaying
                    _print({"received": {**egress.report(), **report}})
                else:
                    drawn: list[bytes] = []
                    if args.send:
                        await _read_go()
                        _print({"sent": await send_keys(relay, plan.nodes[args.to].address,
                                                        args.send, args.bits, args.batch,
                                                        drawn)})
                    async for _ in signals:
                        break
                    report = node_report(node)
                    _print({"stopped": {**report, "digest": digest(drawn)} if args.send
                            else report})
            if scope.cancelled_caught:
                _print({"timeout": {**(egress.report() if egress else {}),
                                    **node_report(node)}})
            nursery.cancel_scope.cancel()


async def receive(egress: Egress, idle: float) -> None:
    while not egress.done.is_set():
        seen = egress.count
        with trio.move_on_after(idle):
            await egress.done.wait()
        if egress.count == seen and egress.first is not None:
            return  # keys stopped coming: some were lost


def _sockets(node: QBBNode, plan, links: list[str]) -> dict:
    underlay = {}
    for item in links:
        peer, _, pair = item.partition("=")
        local, _, remote = pair.partition(",")
        underlay[peer] = (local, remote)
    sockets = {}
    for interface, link in node.links.items():
        local, remote = underlay[link.peer]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        big_buffers(sock, 16 << 20)
        sock.bind((local, Q3P_UDP_PORT))
        sockets[interface] = (sock, (remote, Q3P_UDP_PORT))
    return sockets


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qbb.bench.relay_node",
                                description="Run one QBB node over UDP for the relay bench.")
    p.add_argument("--topology", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--link", action="append", default=[], metavar="PEER=LOCAL,REMOTE",
                   help="underlay addresses of the link to PEER (repeat per link)")
    p.add_argument("--epoch", type=float, required=True, help="shared wall-clock origin")
    p.add_argument("--prefill", type=int, default=0, help="bytes of merged key per link end")
    p.add_argument("--send", type=int, default=0, help="keys to relay (ingress)")
    p.add_argument("--to", help="egress node name")
    p.add_argument("--bits", type=int, default=65535, help="bits per session key")
    p.add_argument("--batch", type=int, default=1, help="keys per KEY segment")
    p.add_argument("--expect", type=int, default=0, help="keys to wait for (egress)")
    p.add_argument("--idle", type=float, default=3.0, help="egress gives up after this idle")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--window", type=int, default=256, help="Q3P window, frames")
    p.add_argument("--profile", help="write cProfile statistics to this file")
    p.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                   help="glibc malloc: keep freed memory (tuned) or the defaults")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.malloc == "tuned":
        tune_malloc()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            trio.run(run, args)
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
    else:
        trio.run(run, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

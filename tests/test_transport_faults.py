"""QKDTL connections through faults in an embedded network (qbb/network.py, MockClock):
lossy wires, forwarder drops, a link cut with reroute, per-packet load balancing, node
restarts.  Whatever happens, the two applications of a stream hold identical keys by
index, no key is handed out twice or to another application, and a stream that cannot go
on ends with PEER_GONE or TIMEOUT at the surviving end."""

from __future__ import annotations

from collections import defaultdict

import pytest
import trio
import trio.testing

from qbb.keyapi.model import ApiError, KeyChunk, Qos, Status
from qbb.netlayer.forwarding import ForwarderConfig, OverloadPolicy
from qbb.network import EmbeddedNetwork
from qbb.node import NodeConfig
from qbb.topology import LinkSpec, NodeSpec, Topology
from qbb.transport.connection import ConnectionConfig

QOS = Qos(key_chunk_size=256, timeout_s=10.0)
CONFIG = ConnectionConfig(buffer_bits=1 << 15, idle_timeout=20.0)


@pytest.fixture
def clock():
    return trio.testing.MockClock(autojump_threshold=0)


def ring(loss: float = 0.0) -> Topology:
    names = "ABCDE"
    return Topology("ring", tuple(NodeSpec(x, 1) for x in names),
                    tuple(LinkSpec(names[i], names[(i + 1) % 5], loss=loss) for i in range(5)))


async def started(nursery, topology: Topology, **kwargs) -> EmbeddedNetwork:
    net = await nursery.start(EmbeddedNetwork(topology, transport_config=CONFIG, **kwargs).run)
    assert await net.wait_converged(timeout=30) is not None
    return net


async def register(net: EmbeddedNetwork, node: str, name: str) -> None:
    net.transports[node].backend.register(name)
    with trio.fail_after(10):
        while any(d.directory.resolve(name) is None for d in net.transports.values()):
            await trio.sleep(0.05)


async def connect(net: EmbeddedNetwork, client: str, server: str, name: str) -> str:
    accepted: list[str] = []
    async with trio.open_nursery() as nursery:
        async def accept() -> None:
            accepted.append(await net.transports[server].backend.accept(name, 20))
        nursery.start_soon(accept)
        ksid = await net.transports[client].backend.open_connect(name, QOS)
    assert accepted == [ksid]  # the server application got exactly its own stream
    return ksid


async def take(net: EmbeddedNetwork, node: str, ksid: str, n: int, into: list[KeyChunk],
               ended: dict | None = None) -> None:
    """Up to ``n`` keys; a stream that ends records its status in ``ended``."""
    while len(into) < n:
        try:
            into += await net.transports[node].backend.get_keys(ksid, n - len(into), 60)
        except ApiError as error:
            if ended is None:
                raise
            ended[node, ksid] = error.status
            return


def check_streams(got: dict, streams: list[tuple[str, str, str]]) -> None:
    """Identical keys by index at both ends; no key in two places."""
    every = []
    for client, server, ksid in streams:
        a, b = got[client, ksid], got[server, ksid]
        common = min(len(a), len(b))
        assert a[:common] == b[:common] and common > 0
        assert [k.index for k in a] == list(range(len(a)))
        assert [k.index for k in b] == list(range(len(b)))
        assert all(k.ksid == ksid for k in a + b)
        every += [k.key for k in (a if len(a) >= len(b) else b)]
    assert len(set(every)) == len(every)


def retransmissions(net: EmbeddedNetwork) -> int:
    return sum(s.connection.status()["retransmits"] for d in net.transports.values()
               for s in d.service.streams.values())


async def test_lossy_links_and_forwarder_drops_keep_every_stream_identical(clock):
    drop = NodeConfig(forwarder=ForwarderConfig(critical_load_bps=800e3,
                                                overload=OverloadPolicy.DROP))
    async with trio.open_nursery() as nursery:
        net = await started(nursery, ring(loss=0.03), config=drop)
        for node, name in (("C", "app-c"), ("D", "app-d")):
            await register(net, node, name)
        a = net.nodes["A"]
        for peer in "BE":  # both of A's links: over the critical load -> drop + quench
            a.forwarder.set_critical_load(net.plan.link("A", peer).address_of("A"), 40e3)
        plan = [("A", "C", "app-c")] * 3 + [("B", "D", "app-d")] * 2 + [("E", "C", "app-c")]
        streams = [(c, s, await connect(net, c, s, n)) for c, s, n in plan]
        got: dict = defaultdict(list)
        with trio.fail_after(300):
            async with trio.open_nursery() as inner:
                for client, server, ksid in streams:
                    inner.start_soon(take, net, client, ksid, 1500, got[client, ksid])
                    inner.start_soon(take, net, server, ksid, 1500, got[server, ksid])
        check_streams(got, streams)
        assert all(len(got[c, k]) == 1500 for c, _, k in streams)
        assert sum(w.counters["lost"] for w in net.wires.values()) > 0
        assert a.forwarder.drops["overloaded"] > 0  # real QKDTL losses at the source node
        assert net.transports["A"].service.counters["source_quench"] > 0
        assert retransmissions(net) > 0
        assert not net.key_reuse_detected()
        nursery.cancel_scope.cancel()


async def test_load_balanced_streams_over_two_paths_and_a_link_cut(clock):
    fixed = NodeConfig(forwarder=ForwarderConfig(critical_load_bps=800e3))
    async with trio.open_nursery() as nursery:
        net = await started(nursery, ring(), config=fixed)
        await register(net, "C", "app")
        a = net.nodes["A"]
        via_b, via_e = (net.plan.link("A", p).address_of("A") for p in "BE")
        a.forwarder.set_critical_load(via_b, 300e3)  # A -> C spreads over A-B-C and A-E-D-C
        before = dict(a.forwarder.sent_by_interface)
        streams = [("A", "C", await connect(net, "A", "C", "app")) for _ in range(4)]
        got: dict = defaultdict(list)
        with trio.fail_after(300):
            async with trio.open_nursery() as inner:
                for client, server, ksid in streams:
                    inner.start_soon(take, net, client, ksid, 3000, got[client, ksid])
                    inner.start_soon(take, net, server, ksid, 3000, got[server, ksid])
                while len(got["C", streams[0][2]]) < 1500:
                    await trio.sleep(0.01)
                net.set_link("B", "C", False)  # mid-stream: everything via E and D
        check_streams(got, streams)
        assert all(len(got[c, k]) == 3000 for c, _, k in streams)
        used = {i: a.forwarder.sent_by_interface[i] - before.get(i, 0) for i in (via_b, via_e)}
        assert min(used.values()) > 50, used  # both paths carried the streams
        responders = [net.transports["C"].service.streams[k].connection for _, _, k in streams]
        assert sum(c.recv.stats["out_of_order"] for c in responders) > 0  # it reordered
        assert not net.key_reuse_detected()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("restart", ["C", "A", "B"])
async def test_node_restart_mid_stream_never_gives_different_keys(clock, restart):
    """C: the responder's node, A: the initiator's, B: a transit node (the path reroutes)."""
    async with trio.open_nursery() as nursery:
        net = await started(nursery, ring())
        await register(net, "C", "app")
        streams = [("A", "C", await connect(net, "A", "C", "app")) for _ in range(2)]
        got: dict = defaultdict(list)
        ended: dict = {}
        survivor = {"C": "A", "A": "C"}.get(restart)
        with trio.fail_after(300):
            async with trio.open_nursery() as inner:
                for client, server, ksid in streams:
                    for node in (client, server):
                        if node != restart:
                            inner.start_soon(take, net, node, ksid, 2000, got[node, ksid],
                                             ended)
                        else:  # its application goes down with it: stop taking at the stop
                            inner.start_soon(take, net, node, ksid, 300, got[node, ksid])
                watched = "C" if survivor is None else restart
                while any(len(got[watched, k]) < 300 for _, _, k in streams):
                    await trio.sleep(0.01)
                net.stop_node(restart)
                await trio.sleep(5)
                await net.start_node(restart)
        if survivor is None:  # a transit node: the streams rerouted and went on
            assert all(len(got[n, k]) == 2000 for c, s, k in streams for n in (c, s))
            assert not ended
        else:
            assert sorted(ended) == sorted((survivor, k) for _, _, k in streams)
            assert set(ended.values()) <= {Status.PEER_GONE, Status.TIMEOUT}
        check_streams(got, streams)
        assert not net.key_reuse_detected()
        nursery.cancel_scope.cancel()

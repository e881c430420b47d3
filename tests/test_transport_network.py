"""QKDTL end to end in an embedded network (qbb/network.py) under trio's MockClock: a
TransportDriver on every node, applications using its KeyBackend."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import trio
import trio.testing

from qbb.keyapi.model import ApiError, KeyChunk, Qos, Status
from qbb.network import EmbeddedNetwork
from qbb.topology import load_topology
from qbb.transport.connection import ConnectionConfig
from qbb.transport.driver import TransportDriver

TOPOLOGIES = Path(__file__).resolve().parent.parent / "topologies"
QOS = Qos(key_chunk_size=256, timeout_s=10.0)
CONFIG = ConnectionConfig(buffer_bits=1 << 15)  # 128 keys of 256 bits buffered per end


@pytest.fixture
def clock():
    return trio.testing.MockClock(autojump_threshold=0)


async def started(nursery, name: str) -> tuple[EmbeddedNetwork, dict[str, TransportDriver]]:
    net = await nursery.start(EmbeddedNetwork(load_topology(TOPOLOGIES / name),
                                              transport_config=CONFIG).run)
    assert await net.wait_converged(timeout=20) is not None
    return net, net.transports


async def registered(drivers, node: str, name: str) -> int:
    port = drivers[node].backend.register(name)
    with trio.fail_after(5):
        while any(d.directory.resolve(name) is None for d in drivers.values()):
            await trio.sleep(0.05)
    return port


async def pair(drivers, client: str, server: str, name: str, qos: Qos = QOS):
    """Connect ``client`` to ``name`` (at ``server``); both ends' KSIDs."""
    async with trio.open_nursery() as nursery:
        accepted = []

        async def accept():
            accepted.append(await drivers[server].backend.accept(name, 10))
        nursery.start_soon(accept)
        ksid = await drivers[client].backend.open_connect(name, qos)
    assert accepted == [ksid]
    return ksid


async def take(driver: TransportDriver, ksid: str, n: int, into: list[KeyChunk]) -> None:
    for _ in range(n):
        into.append(await driver.backend.get_key(ksid, 30))


async def both_take(drivers, client: str, server: str, ksid: str, n: int):
    got_c, got_s = [], []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, drivers[client], ksid, n, got_c)
        nursery.start_soon(take, drivers[server], ksid, n, got_s)
    return got_c, got_s


async def test_two_hop_connection_gives_identical_keys_never_seen_on_a_wire(clock):
    async with trio.open_nursery() as nursery:
        net, drivers = await started(nursery, "line3.json")
        seen: list[bytes] = []
        for wire in net.wires.values():
            wire.taps.append(seen.append)
        assert await registered(drivers, "C", "mail") == 1024
        ksid = await pair(drivers, "A", "C", "mail")
        with trio.fail_after(60):
            client, server = await both_take(drivers, "A", "C", ksid, 100)
        assert client == server and [k.index for k in client] == list(range(100))
        assert all(k.ksid == ksid and k.bits == 256 and len(k.key) == 32 for k in client)
        assert len({k.key for k in client}) == 100
        assert not any(k.key in datagram for k in client[:10] for datagram in seen)
        assert net.nodes["B"].forwarder.counters["forwarded"] > 0
        assert not net.key_reuse_detected()
        assert net.relay_key("A", "C") is not None  # the key relay keeps its port 7
        await trio.sleep(1)
        assert net.keys["delivered"] == 1 and drivers["C"].counters["internal_error"] == 0
        await drivers["A"].backend.close(ksid)
        with trio.fail_after(10):
            while not drivers["C"].service.streams[ksid].ended:
                await trio.sleep(0.1)
        leftover = []  # released before the close: still handed out, then PEER_GONE
        with pytest.raises(ApiError) as error:
            while True:
                leftover.append(await drivers["C"].backend.get_key(ksid, 1))
        assert error.value.status is Status.PEER_GONE
        assert [k.index for k in leftover] == list(range(100, 100 + len(leftover)))
        with pytest.raises(ApiError) as error:
            await drivers["A"].backend.get_key(ksid, 1)
        assert error.value.status is Status.UNKNOWN_KSID
        nursery.cancel_scope.cancel()


async def test_many_concurrent_connections_never_mix_or_repeat_keys(clock):
    async with trio.open_nursery() as nursery:
        net, drivers = await started(nursery, "ring5.json")
        await registered(drivers, "C", "app-c")
        await registered(drivers, "D", "app-d")
        plan = [("A", "C", "app-c")] * 8 + [("B", "D", "app-d")] * 2 + [("E", "C", "app-c")] * 2
        streams = []
        for client, server, name in plan:
            streams.append((client, server, await pair(drivers, client, server, name)))
        got: dict[tuple[str, str], list[KeyChunk]] = defaultdict(list)
        with trio.fail_after(120):
            async with trio.open_nursery() as inner:
                for client, server, ksid in streams:
                    inner.start_soon(take, drivers[client], ksid, 25, got[client, ksid])
                    inner.start_soon(take, drivers[server], ksid, 25, got[server, ksid])
        every = []
        for client, server, ksid in streams:
            assert got[client, ksid] == got[server, ksid]
            assert [k.index for k in got[client, ksid]] == list(range(25))
            every += [k.key for k in got[client, ksid]]
        assert len(streams) == 12 and len({s[2] for s in streams}) == 12
        assert len(set(every)) == len(every) == 12 * 25
        assert drivers["A"].counters["internal_error"] == 0
        nursery.cancel_scope.cancel()


async def test_unknown_application_and_no_route(clock):
    async with trio.open_nursery() as nursery:
        net, drivers = await started(nursery, "line3.json")
        await registered(drivers, "C", "mail")
        backend = drivers["A"].backend
        for destination in ("nobody", "nobody@" + net.nodes["C"].address):
            with pytest.raises(ApiError) as error:
                await backend.open_connect(destination, QOS)
            assert error.value.status is Status.UNKNOWN_APPLICATION, destination
        with pytest.raises(ApiError) as error:
            await backend.open_connect("mail@1.9.0.1", QOS)
        assert error.value.status is Status.NO_QKD_CONNECTION
        net.set_link("B", "C", False)
        with trio.fail_after(30):
            while net.nodes["A"].has_route(net.nodes["C"].address):
                await trio.sleep(0.5)
        assert drivers["A"].directory.resolve("mail") is not None  # still registered
        with pytest.raises(ApiError) as error:
            await backend.open_connect("mail", QOS)
        assert error.value.status is Status.NO_QKD_CONNECTION
        with pytest.raises(ApiError) as error:
            await backend.get_key("no-such-ksid", 0)
        assert error.value.status is Status.UNKNOWN_KSID
        nursery.cancel_scope.cancel()


async def test_link_failure_on_the_path_reroutes_and_keys_stay_identical(clock):
    async with trio.open_nursery() as nursery:
        net, drivers = await started(nursery, "ring5.json")
        await registered(drivers, "C", "app")
        ksids = [await pair(drivers, "A", "C", "app") for _ in range(3)]
        got: dict[tuple[str, str], list[KeyChunk]] = defaultdict(list)
        with trio.fail_after(200):
            async with trio.open_nursery() as inner:
                for ksid in ksids:  # 400 keys each: far more than the 128 buffered
                    inner.start_soon(take, drivers["A"], ksid, 400, got["A", ksid])
                    inner.start_soon(take, drivers["C"], ksid, 400, got["C", ksid])
                while len(got["C", ksids[0]]) < 150:
                    await trio.sleep(0.001)
                assert net.nodes["B"].forwarder.counters["forwarded"] > 0
                net.set_link("B", "C", False)  # mid-stream: A-B-C becomes A-E-D-C
                cut_at = {k: len(got["C", k]) for k in ksids}
        for ksid in ksids:
            assert got["A", ksid] == got["C", ksid]
            assert [k.index for k in got["A", ksid]] == list(range(400))
            assert cut_at[ksid] < 400 - 128  # keys made after the cut were delivered too
        assert net.nodes["D"].forwarder.counters["forwarded"] > 10  # the other way round
        stats = [drivers["A"].service.streams[k].connection.status() for k in ksids]
        assert sum(s["retransmits"] for s in stats) > 0
        assert not net.key_reuse_detected()
        nursery.cancel_scope.cancel()


def transit_admission(node, driver) -> None:
    """The node's forwarding path checks forwarded SYNs against the driver's table."""
    assert node.admission is driver.admission


async def test_guaranteed_rate_beyond_capacity_is_refused_with_qos_not_met(clock):
    async with trio.open_nursery() as nursery:
        net, drivers = await started(nursery, "line3.json")
        await registered(drivers, "C", "vpn")
        transit_admission(net.nodes["B"], drivers["B"])
        backend = drivers["A"].backend
        rate = Qos(service="guaranteed", rate_bps=200_000, burst_bits=4096, timeout_s=10)
        first = await pair(drivers, "A", "C", "vpn", rate)
        # 1 Mbit/s links, half of it for pads in each direction: 250 kbit/s reservable
        assert drivers["A"].admission.capacity(net.plan.link("A", "B").address_of("A")) \
            == 250_000
        assert drivers["B"].admission.reserved_bps(
            net.plan.link("B", "C").address_of("B"), net.clock()) == 200_000
        with pytest.raises(ApiError) as error:  # refused at the ingress (A's first link)
            await backend.open_connect("vpn", rate)
        assert error.value.status is Status.QOS_NOT_MET
        assert drivers["A"].service.counters["icmp_unreachable.13"] == 0
        net.set_key_rate("B", "C", 400_000)  # B-C can now reserve 100 kbit/s only
        await backend.close(first)
        await trio.sleep(5)
        with pytest.raises(ApiError) as error:  # A admits, B refuses: ICMP 3/13
            await backend.open_connect("vpn", Qos(service="guaranteed", rate_bps=150_000,
                                                  burst_bits=4096, timeout_s=10))
        assert error.value.status is Status.QOS_NOT_MET
        assert drivers["A"].service.counters["icmp_unreachable.13"] == 1
        assert net.nodes["B"].forwarder.drops["admission_refused"] == 1
        assert drivers["A"].admission.reservations == {}  # the ingress let go of it
        small = Qos(service="guaranteed", rate_bps=80_000, burst_bits=4096, timeout_s=10)
        ksid = await pair(drivers, "A", "C", "vpn", small)
        client, server = await both_take(drivers, "A", "C", ksid, 10)
        assert client == server
        nursery.cancel_scope.cancel()

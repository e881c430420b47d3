"""Embedded QBB networks (qbb/network.py) in virtual time: convergence, key relay, ICMP,
load balancing, faults."""

from __future__ import annotations

import argparse
import io
import ipaddress
import json

import pytest
import trio
import trio.testing

from qbb.netlayer.icmp import DestinationUnreachable, TimeExceeded, UnreachableCode
from qbb.netlayer.packet import QKDNLPacket
from qbb.network import EmbeddedNetwork, IntervalSet, link_seed, run_network
from qbb.run_cli import add_arguments, run_from_cli
from qbb.topology import LinkSpec, NodeSpec, ScheduledEvent, Topology, dump_topology
from qbb.wire import PROTO_QKDTL


@pytest.fixture
def clock():
    return trio.testing.MockClock(autojump_threshold=0)


def ring(n: int = 5, schedule=()) -> Topology:
    names = [chr(ord("A") + i) for i in range(n)]
    return Topology("ring", tuple(NodeSpec(x, 1) for x in names),
                    tuple(LinkSpec(names[i], names[(i + 1) % n]) for i in range(n)),
                    schedule=tuple(schedule))


def line(n: int = 5) -> Topology:
    names = [chr(ord("A") + i) for i in range(n)]
    return Topology("line", tuple(NodeSpec(x, 1) for x in names),
                    tuple(LinkSpec(a, b) for a, b in zip(names, names[1:])))


async def started(nursery, topology: Topology, **kwargs) -> EmbeddedNetwork:
    net = await nursery.start(EmbeddedNetwork(topology, **kwargs).run)
    assert await net.wait_converged(timeout=20) is not None
    return net


def ttl_expiries(net: EmbeddedNetwork) -> int:
    return sum(node.forwarder.drops["ttl_expired"] for node in net.nodes.values())


async def test_five_node_ring_converges_and_relays_keys(clock):
    summary = await run_network(ring(), 10.0, keys_per_pair=2)
    assert summary["mode"] == "embedded" and summary["nodes"] == 5 and summary["links"] == 5
    assert summary["converged"] and 0 < summary["convergence_s"] < 6
    assert summary["keys_sent"] == 20 and summary["keys_delivered"] == 20
    assert summary["keys_delivered_bits"] == 20 * 256 and summary["keys_mismatched"] == 0
    assert summary["key_reuse_detected"] is False
    assert summary["drops"] == {}
    json.dumps(summary)


async def test_relayed_key_is_identical_at_both_ends_and_never_on_a_wire(clock):
    async with trio.open_nursery() as nursery:
        net = await started(nursery, line(), transport=False)  # exact per-hop counts
        seen: list[bytes] = []
        for wire in net.wires.values():
            wire.taps.append(seen.append)
        keys = [net.relay_key("A", "E", 512) for _ in range(3)]
        await trio.sleep(2)
        received = {k.key_id: k for k in net.relays["E"].received}
        for key in keys:
            assert received[key.key_id].key == key.key and len(key.key) == 64
            assert received[key.key_id].source == net.plan.nodes["A"].address
            assert not any(key.key in datagram for datagram in seen)
        assert net.keys["delivered"] == 3 and not net.key_reuse_detected()
        hops = [n.forwarder.counters["forwarded"] for n in map(net.nodes.get, "BCD")]
        assert hops == [3, 3, 3]
        nursery.cancel_scope.cancel()


async def test_ttl_expiry_and_unreachable_destinations_report_icmp(clock):
    async with trio.open_nursery() as nursery:
        net = await started(nursery, line())
        a, e = net.nodes["A"], net.nodes["E"]
        addr = {name: node.address for name, node in net.nodes.items()}
        assert a.send_packet(QKDNLPacket(a.address, e.address, PROTO_QKDTL, b"x" * 8, ttl=2))
        assert not a.send_packet(QKDNLPacket(a.address, "1.9.0.1", PROTO_QKDTL, b"x"))
        block = net.plan.nodes["E"].block  # E's /30: .1 is E, .2 is nobody
        other = str(ipaddress.IPv4Address(block) + 2)
        assert other != e.address
        assert a.send_packet(QKDNLPacket(a.address, other, PROTO_QKDTL, b"x"))
        assert a.send_packet(QKDNLPacket(a.address, e.address, 200, b"x"))
        await trio.sleep(1)
        got = [(source, message) for _, source, message in a.icmp_received]
        assert (addr["C"], TimeExceeded) in [(s, type(m)) for s, m in got]
        codes = {(s, m.code) for s, m in got if isinstance(m, DestinationUnreachable)}
        assert (a.address, UnreachableCode.NET_UNREACHABLE) in codes
        assert (addr["E"], UnreachableCode.HOST_UNREACHABLE) in codes
        assert (addr["E"], UnreachableCode.PROTOCOL_UNREACHABLE) in codes
        assert net.nodes["C"].forwarder.drops["ttl_expired"] == 1
        nursery.cancel_scope.cancel()


async def test_load_balancing_splits_traffic_without_loops(clock):
    async with trio.open_nursery() as nursery:
        net = await started(nursery, ring())
        a = net.nodes["A"]
        via_b = net.plan.link("A", "B").address_of("A")
        via_e = net.plan.link("A", "E").address_of("A")
        a.forwarder.set_critical_load(via_b, 20_000.0)  # L_cr of the cheapest link to C
        before = dict(a.forwarder.sent_by_interface)
        for _ in range(300):  # 100 keys/s, ~60 kbit/s towards C
            net.relay_key("A", "C", 256)
            await trio.sleep(0.01)
        await trio.sleep(2)
        used = {i: a.forwarder.sent_by_interface[i] - before.get(i, 0) for i in (via_b, via_e)}
        assert used[via_b] > 30 and used[via_e] > 30, used
        assert a.forwarder.counters["alternate_used"] > 30  # routing packets use via_e too
        assert net.keys["delivered"] == 300 and net.keys["mismatched"] == 0
        assert ttl_expiries(net) == 0
        assert not net.key_reuse_detected()
        nursery.cancel_scope.cancel()


async def test_link_failure_reroutes_and_recovers(clock):
    async with trio.open_nursery() as nursery:
        net = await started(nursery, ring())
        a = net.nodes["A"]
        b_address = net.nodes["B"].address
        net.set_link("A", "B", False)
        await trio.sleep(8)  # dead interval 4 s, then re-routing
        route = a.router.tables(net.clock()).main.lookup(b_address)
        assert route.next_hop.interface == net.plan.link("A", "E").address_of("A")
        key = net.relay_key("A", "B")
        await trio.sleep(1)
        assert net.relays["B"].received[-1].key == key.key
        net.set_link("A", "B", True)
        await trio.sleep(6)
        route = a.router.tables(net.clock()).main.lookup(b_address)
        assert route.next_hop.interface == net.plan.link("A", "B").address_of("A")
        assert ttl_expiries(net) == 0 and not net.key_reuse_detected()
        nursery.cancel_scope.cancel()


async def test_schedule_node_restart_and_key_rate(clock):
    schedule = (ScheduledEvent(3, "node_stop", "C"), ScheduledEvent(4, "key_rate", "A-B", 2e6),
                ScheduledEvent(10, "node_start", "C"))
    summary = await run_network(ring(schedule=schedule), 20.0, keys_per_pair=1)
    assert [e["action"] for e in summary["events"]] == ["node_stop", "key_rate", "node_start"]
    assert summary["converged_at_end"] and summary["key_reuse_detected"] is False


def test_run_from_cli_prints_one_json_summary(tmp_path):
    path = tmp_path / "ring.json"
    path.write_text(dump_topology(ring(4)))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(path), "--duration", "6", "--virtual-time", "--json",
                              "--relay", "2", "--pairs", "A:C,B:D"])
    out = io.StringIO()
    assert run_from_cli(args, out) == 0
    summary = json.loads(out.getvalue())
    assert summary["keys_delivered"] == 4 and summary["converged"] is True


def test_link_seed_is_symmetric_and_distinct():
    assert link_seed("t", "A", "B") == link_seed("t", "B", "A")
    assert link_seed("t", "A", "B") != link_seed("u", "A", "B") != link_seed("t", "A", "C")


def test_interval_set_detects_overlap_and_merges():
    s = IntervalSet()
    assert not s.add(0, 10) and not s.add(10, 20) and not s.add(30, 40)
    assert list(s) == [(0, 20), (30, 40)]
    assert s.add(15, 31) and list(s) == [(0, 40)]
    assert s.covers(5, 40) and not s.covers(5, 41) and not s.add(41, 42)

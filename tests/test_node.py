"""One QBB node (qbb/node.py) inside small embedded networks, in virtual time."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from hypothesis import given, strategies as st

from qbb.errors import DecodeError
from qbb.netlayer.icmp import EchoReply, EchoRequest, encode_icmp
from qbb.netlayer.packet import QKDNLPacket, decode_packet
from qbb.network import EmbeddedNetwork
from qbb.node import ALL_SPF_ROUTERS, NodeConfig, build_router
from qbb.q3p.events import Delivered
from qbb.q3p.packet import Command, decode_frame
from qbb.relay import RELAY_PORT, KeyRelay, random_key
from qbb.topology import LinkSpec, NodeSpec, Topology
from qbb.transport.packet import decode_segment
from qbb.wire import PROTO_ICMP, PROTO_OSPF, PROTO_QKDTL


@pytest.fixture
def clock():
    return trio.testing.MockClock(autojump_threshold=0)


def triangle() -> Topology:
    return Topology("tri", (NodeSpec("A", 1), NodeSpec("B", 1), NodeSpec("C", 1)),
                    (LinkSpec("A", "B", cost_ab=3, cost_ba=5), LinkSpec("B", "C"),
                     LinkSpec("A", "C", key_rates_bps=(2e5, 3e5))))


async def started(nursery, topology: Topology | None = None) -> EmbeddedNetwork:
    return await started_net(nursery, EmbeddedNetwork(topology or triangle()))


async def started_net(nursery, net: EmbeddedNetwork) -> EmbeddedNetwork:
    await nursery.start(net.run)
    assert await net.wait_converged(timeout=20) is not None
    return net


def test_router_interfaces_follow_the_topology():
    topology = triangle()
    plan = topology.address_plan()
    router = build_router("A", topology, plan)
    costs = {a: i.cost for a, i in router.interfaces.items()}
    assert costs == {plan.link("A", "B").address_of("A"): 3,
                     plan.link("A", "C").address_of("A"): topology.link("A", "C").cost_from("A")}
    assert all(i.config.hello_interval == 1 and i.config.router_dead_interval == 4
               for i in router.interfaces.values())


async def test_status_snapshot(clock):
    async with trio.open_nursery() as nursery:
        net = await started(nursery)
        status = net.nodes["A"].status()
        json.dumps(status)
        assert status["address"] == net.plan.nodes["A"].address and status["running"]
        assert {n["state"] for n in status["neighbors"].values()} == {"FULL"}
        assert status["lsdb_size"] == 3
        links = {v["peer"]: v for v in status["links"].values()}
        assert links["C"]["key_rate_bps"] == 5e5 and links["C"]["up"]
        assert links["C"]["critical_load_bps"] == pytest.approx(0.8 * 5e5)
        assert links["B"]["enc_level_bits"] > 0
        assert {r["dest"] for r in status["routes"]} >= {net.nodes[x].address for x in "BC"}
        nursery.cancel_scope.cancel()


async def test_routing_packets_and_relay_frames_on_the_wire(clock):
    frames = []
    async with trio.open_nursery() as nursery:
        net = EmbeddedNetwork(triangle(), transport=False)  # only routing and relay frames
        net.wires[("A", "B")].taps.append(frames.append)
        net = await started_net(nursery, net)
        key = net.relay_key("A", "B", 128)
        await trio.sleep(1)
        assert net.relays["B"].received[-1].key == key.key
        nursery.cancel_scope.cancel()
    a_if = net.plan.link("A", "B").address_of("A")
    routing, relay = [], []
    for raw in frames:
        frame = decode_frame(raw)
        if frame.command != Command.DATA:
            continue
        if frame.encrypted:
            relay.append(frame)
            continue
        packet = decode_packet(frame.payload)
        routing.append(packet)
        assert frame.priority == 6 and frame.channel == 6
    assert routing and all(p.protocol == PROTO_OSPF and p.ttl == 1 and p.source == a_if
                           and p.destination == ALL_SPF_ROUTERS for p in routing)
    assert len(relay) == 1 and relay[0].priority == 2 and relay[0].tag is not None
    with pytest.raises(DecodeError):  # the one-time pad hides even the QKDNL header
        segment_of(decode_packet(relay[0].payload))


def segment_of(packet: QKDNLPacket):
    return decode_segment(packet.payload)


async def test_listen_channel_and_echo(clock):
    async with trio.open_nursery() as nursery:
        net = await started(nursery)
        a, c = net.nodes["A"], net.nodes["C"]
        inbox = c.listen(200)
        assert a.send_packet(QKDNLPacket(a.address, c.address, 200, b"hello"))
        with trio.fail_after(2):
            packet, interface = await inbox.receive()
        assert packet.payload == b"hello" and interface in c.links
        ping = encode_icmp(EchoRequest(1, 9, b"data"))
        assert a.send_packet(QKDNLPacket(a.address, c.address, PROTO_ICMP, ping))
        await trio.sleep(1)
        assert (c.address, EchoReply(1, 9, b"data")) in [(s, m) for _, s, m in a.icmp_received]
        nursery.cancel_scope.cancel()


async def test_nothing_from_the_wire_or_a_handler_escapes(clock):
    async with trio.open_nursery() as nursery:
        net = await started(nursery)
        a, c = net.nodes["A"], net.nodes["C"]
        b_to_c = net._ends["B"]["C"][0]
        for junk in (b"", b"\x00" * 30, bytes(range(256)) * 3):
            b_to_c.send_nowait(junk)
        interface = next(iter(c.links))
        c._on_link_event(interface, Delivered(0, b"not a packet"))
        c._on_link_event(interface, "an unknown event")

        def broken(packet, interface):
            raise RuntimeError("handler bug")
        c.register(201, broken)
        assert a.send_packet(QKDNLPacket(a.address, c.address, 201, b"x"))
        await trio.sleep(1)
        assert c.counters["internal_error"] == 1
        assert c.forwarder.drops["malformed"] == 1
        link = c.links[net.plan.link("B", "C").address_of("C")]
        assert link.endpoint.counters["malformed"] >= 3
        key = net.relay_key("A", "C")
        await trio.sleep(1)
        assert net.relays["C"].received[-1].key == key.key and net.converged()
        nursery.cancel_scope.cancel()


async def test_stop_cancels_the_node_cleanly(clock):
    async with trio.open_nursery() as nursery:
        net = await started(nursery)
        net.stop_node("B")
        await trio.sleep(0.1)
        assert not net.nodes["B"].running and [n.name for n in net.running()] == ["A", "C"]
        await trio.sleep(6)
        assert net.converged()  # A and C reach each other directly
        nursery.cancel_scope.cancel()


def test_random_key_padding_and_relay_rejects_bad_lengths():
    key = random_key(13, lambda n: b"\xff" * n)
    assert key == b"\xff\xf8"
    assert RELAY_PORT == 7

    class Stub:
        address = "1.1.0.5"

        def register(self, protocol, handler):
            assert protocol == PROTO_QKDTL

        def send_packet(self, packet):
            return False
    relay = KeyRelay(Stub())
    with pytest.raises(ValueError):
        relay.send_key("1.1.0.9", 0)
    assert relay.send_key("1.1.0.9", 8) is None and relay.counters["send_failed"] == 1


class _StubNode:
    address = "1.1.0.5"

    def __init__(self):
        self.handlers = {}

    def register(self, protocol, handler):
        self.handlers[protocol] = handler

    def send_packet(self, packet):
        self.handlers[packet.protocol](packet, None)  # loop back
        return True


def test_relay_round_trip_through_a_loopback_stub():
    node = _StubNode()
    relay = KeyRelay(node, first_key_id=41)
    sent = relay.send_key(node.address, 100)
    assert sent.key_id == 41 and relay.next_key_id == 42
    assert relay.received == [sent] and "key=" not in repr(sent)


@given(st.binary(max_size=120))
def test_relay_ignores_any_payload(payload):
    node = _StubNode()
    relay = KeyRelay(node)
    node.handlers[PROTO_QKDTL](QKDNLPacket("1.1.0.9", node.address, PROTO_QKDTL, payload), None)
    assert sum(relay.counters.values()) == 1


def test_node_config_defaults():
    config = NodeConfig()
    assert config.critical_fraction == 0.8 and config.forwarder.priorities[PROTO_OSPF] == 6

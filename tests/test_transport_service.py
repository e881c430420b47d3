"""The node-level QKDTL service (qbb/transport/service.py), sans-IO: several services joined
by an instantaneous (or lossy, or marking) virtual network, time advanced by hand."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbb.keyapi.model import ApiError, Qos, Status
from qbb.netlayer.icmp import (DestinationUnreachable, SourceQuench, UnreachableCode,
                               quote_original)
from qbb.netlayer.packet import QKDNLPacket, encode_packet
from qbb.transport.admission import AdmissionControl
from qbb.transport.connection import ConnectionConfig
from qbb.transport.directory import Directory
from qbb.transport.fsm import State
from qbb.transport.packet import Segment, SegmentFlags, decode_segment, encode_segment
from qbb.transport.service import (NAME_PORT, RstReason, Stream, TransportService)
from qbb.wire import PROTO_QKDTL

A, B, C = "1.1.0.1", "1.1.0.5", "1.1.0.9"
CONFIG = ConnectionConfig(buffer_bits=1 << 15)
QOS = Qos(key_chunk_size=256, timeout_s=5.0)


class Net:
    """Services at ``addresses``; ``run`` delivers packets (after ``hook``) and fires timers."""

    def __init__(self, addresses=(A, B, C), *, capacity: float = 100_000.0) -> None:
        self.now, self.cut, self.sent = 0.0, set(), []
        self.hook: Callable[[QKDNLPacket], QKDNLPacket | None] = lambda packet: packet
        self.rng = random.Random(7)
        isn = itertools.count(1000, 7919)
        self.s = {a: TransportService(
            a, config=CONFIG, directory=Directory(a, incarnation=1),
            admission=AdmissionControl(lambda _: capacity),
            route=lambda dst, a=a: None if (a, dst) in self.cut or dst not in self.s else "if0",
            randbytes=self.rng.randbytes, isn=lambda: next(isn)) for a in addresses}
        for service in self.s.values():
            service.set_peers(self.s, self.now)
        self.run(0.1)

    def pump(self) -> None:
        for _ in range(200):
            batch = [(src, out) for src, svc in self.s.items() for out in svc.packets_to_send(self.now)]
            if not batch:
                return
            for src, out in batch:
                packet = QKDNLPacket(src, out.destination, PROTO_QKDTL, out.payload, tos=out.tos)
                self.sent.append(packet)
                packet = self.hook(packet)
                if packet is not None and (src, out.destination) not in self.cut:
                    self.s[out.destination].receive_packet(packet, self.now)

    def run(self, seconds: float, step: float = 0.05) -> None:
        end = self.now + seconds
        while True:
            self.pump()
            for svc in self.s.values():
                due = svc.next_timer()
                if due is not None and due <= self.now:
                    svc.handle_timer(self.now)
            self.pump()
            if self.now >= end:
                return
            self.now = min(end, self.now + step)

    def connect(self, src: str, dest: str, qos: Qos = QOS) -> Stream:
        stream = self.s[src].connect(dest, qos, self.now)
        self.run(0.5)
        return stream


def take(stream: Stream, n: int) -> list[tuple[int, bytes]]:
    return [(k.key_id, k.key) for k in stream.connection.take_keys(n)]


def accepted(net: Net, address: str, name: str) -> Stream:
    stream = net.s[address].accept_next(name)
    assert stream is not None and stream.established
    return stream


def test_ports_registration_and_ownership():
    svc = TransportService(A)
    assert svc.register("mail", 0.0) == 1024 and svc.register("vpn", 0.0) == 1025
    assert svc.register("db", 0.0, port=4000) == 4000
    with pytest.raises(ApiError) as error:
        svc.register("mail", 0.0)
    assert error.value.status is Status.NAME_IN_USE
    for bad in ({"name": "x", "port": 80}, {"name": "y", "port": 4000},
                {"name": "", "port": None}, {"name": "a@b", "port": None}):
        with pytest.raises(ApiError) as error:
            svc.register(bad["name"], 0.0, port=bad["port"])
        assert error.value.status is Status.BAD_REQUEST
    svc.unregister("mail", 0.0)
    assert svc.register("other", 0.0) == 1024
    with pytest.raises(ApiError) as error:
        svc.unregister("mail", 0.0)
    assert error.value.status is Status.UNKNOWN_APPLICATION
    segment = lambda port: encode_segment(Segment(1, port))  # noqa: E731
    assert not svc.owns(segment(7)) and not svc.owns(segment(1023))
    assert svc.owns(segment(8)) and svc.owns(segment(NAME_PORT)) and svc.owns(segment(1024))
    assert svc.owns(segment(65535)) and svc.owns(b"\x00")
    assert not svc.receive_packet(QKDNLPacket(B, A, PROTO_QKDTL, segment(7)), 0.0)


def test_registration_spreads_and_connection_delivers_identical_keys():
    net = Net()
    net.s[C].register("mail", net.now)
    net.run(0.2)
    assert net.s[A].resolve("mail") == (C, 1024, "mail")
    client = net.connect(A, "mail")
    server = accepted(net, C, "mail")
    assert client.established and client.ksid == server.ksid
    assert net.s[A].streams[client.ksid] is client and net.s[C].streams[server.ksid] is server
    assert client.key[0] in range(49152, 65536) and server.key == (1024, A, client.key[0])
    net.run(1.0)
    got_c = take(client, 20)
    got_s = take(server, 20)
    assert len(got_c) == 20 and got_c == got_s
    assert [i for i, _ in got_c] == list(range(20))


def test_many_connections_between_the_same_pair_stay_apart():
    net = Net()
    net.s[B].register("mail", net.now)
    net.s[C].register("mail2", net.now)
    net.run(0.2)
    clients = [net.s[A].connect("mail", QOS, net.now) for _ in range(8)]
    clients += [net.s[C].connect("mail", QOS, net.now) for _ in range(2)]
    net.run(1.0)
    servers = {s.ksid: s for s in iter(lambda: net.s[B].accept_next("mail"), None)}
    assert len(servers) == 10 and {c.ksid for c in clients} == set(servers)
    assert len({c.key for c in clients}) == 10
    seen: set[bytes] = set()
    for _ in range(3):
        for client in clients:
            mine, theirs = take(client, 5), take(servers[client.ksid], 5)
            assert len(mine) == 5 and mine == theirs
            keys = {key for _, key in mine}
            assert not keys & seen
            seen |= keys
        net.run(0.5)
    assert len(seen) == 150


def test_connect_failures_are_statuses():
    net = Net()
    net.s[B].register("here", net.now)
    net.run(0.2)
    cases = [("nobody", QOS, Status.UNKNOWN_APPLICATION),
             ("x@" + A, QOS, Status.NO_QKD_CONNECTION),
             ("here", Qos(key_chunk_size=0), Status.BAD_REQUEST),
             ("here", Qos(service="guaranteed", rate_bps=0), Status.BAD_REQUEST),
             ("here", Qos(service="platinum"), Status.BAD_REQUEST)]
    net.cut.add((A, B))
    cases.append(("here", QOS, Status.NO_QKD_CONNECTION))
    for destination, qos, status in cases:
        with pytest.raises(ApiError) as error:
            net.s[A].connect(destination, qos, net.now)
        assert error.value.status is status, destination
    assert net.s[A].connections == {}


def test_syn_for_an_unknown_application_gets_rst_reason_1():
    net = Net()
    net.s[B].register("real", net.now)
    net.run(0.2)
    stream = net.connect(A, "ghost@" + B)  # not in the directory: connect-by-name port 9
    assert stream.ended and stream.failure is Status.UNKNOWN_APPLICATION
    rst = [decode_segment(p.payload) for p in net.sent if p.source == B and p.destination == A
           and decode_segment(p.payload).flags & SegmentFlags.RST]
    assert rst[-1].payload == bytes([RstReason.UNKNOWN_APPLICATION])
    assert rst[-1].flags == SegmentFlags.RST | SegmentFlags.ACK
    assert net.s[B].drops["unknown_application"] == 1
    by_name = net.connect(A, "real@" + B)  # known at B: straight to its port
    assert by_name.established and by_name.key[2] == 1024
    net.s[B].unregister("real", net.now)
    net.s[B].register("late", net.now)  # not yet announced: port 9 finds it by name
    direct = net.s[A].connect("late@" + B, QOS, net.now)
    assert direct.key[2] == NAME_PORT
    net.run(0.5)
    assert direct.established and net.s[B].accept_next("late").ksid == direct.ksid


def test_segments_without_connection_get_rst_and_rst_gets_nothing():
    net = Net()
    stray = Segment(50000, 2000, 77, 99, SegmentFlags.ACK | SegmentFlags.KEY, 4, b"\x01" * 7)
    before = len(net.sent)
    net.s[B].receive_packet(QKDNLPacket(A, B, PROTO_QKDTL, encode_segment(stray)), net.now)
    out = net.s[B].packets_to_send(net.now)
    assert len(out) == 1 and out[0].destination == A
    rst = decode_segment(out[0].payload)
    assert (rst.src_port, rst.dst_port, rst.seq, rst.flags) == (2000, 50000, 99, SegmentFlags.RST)
    assert rst.payload == bytes([RstReason.NO_CONNECTION])
    reset = Segment(50000, 2000, 1, 0, SegmentFlags.RST)
    net.s[B].receive_packet(QKDNLPacket(A, B, PROTO_QKDTL, encode_segment(reset)), net.now)
    assert net.s[B].packets_to_send(net.now) == [] and len(net.sent) == before
    assert net.s[B].drops["no_connection"] == 1 and net.s[B].drops["rst_no_connection"] == 1


def _accounted(svc: TransportService) -> int:
    d = svc.directory.counters
    return (sum(svc.drops.values()) + svc.counters["accepted_syn"] + d["updated"]
            + d["refreshed"] + d["stale"] + d["withdrawn"])


@settings(max_examples=100)
@given(st.binary(max_size=80), st.integers(0, 255), st.sampled_from([8, NAME_PORT, 1024, 50000]))
def test_any_bytes_are_dropped_or_handled_never_raised(payload, tos, port):
    svc = TransportService(A, config=CONFIG, route=lambda _: "if0")
    svc.register("app", 0.0)
    aimed = payload[:2] + port.to_bytes(2, "big") + payload[4:]
    for data in (payload, aimed, encode_segment(Segment(5, port, 1, 2, SegmentFlags(0),
                                                        0, payload))):
        before = _accounted(svc)
        if svc.receive_packet(QKDNLPacket(B, A, PROTO_QKDTL, data, tos=tos), 0.0):
            assert _accounted(svc) > before  # every input is counted: handled or dropped
        svc.packets_to_send(0.0)


def first_packet(net: Net, src: str, flag: SegmentFlags) -> bytes:
    for packet in net.sent:
        if packet.source == src and decode_segment(packet.payload).flags & flag:
            return encode_packet(packet)
    raise AssertionError("no such packet")


@pytest.mark.parametrize("code, status", [
    (UnreachableCode.ADMINISTRATIVELY_PROHIBITED, Status.QOS_NOT_MET),
    (UnreachableCode.NET_UNREACHABLE, Status.NO_QKD_CONNECTION)])
def test_icmp_unreachable_during_setup_fails_the_connect(code, status):
    net = Net()
    net.s[B].register("app", net.now)
    net.run(0.2)
    net.hook = lambda packet: None  # the SYN is lost on the way, a transit node reports it
    stream = net.s[A].connect("app", QOS, net.now)
    net.run(0.1)
    syn = first_packet(net, A, SegmentFlags.SYN)
    net.s[A].receive_icmp(DestinationUnreachable(code, quote_original(syn)), net.now)
    net.run(0.1)
    assert stream.ended and stream.failure is status
    assert net.s[A].connections == {}


def test_source_quench_and_ce_marks_reach_the_connection():
    net = Net()
    net.s[B].register("app", net.now)
    net.run(0.2)
    client = net.connect(A, "app")
    server = accepted(net, B, "app")
    key_packet = first_packet(net, A, SegmentFlags.KEY)
    net.s[A].receive_icmp(SourceQuench(quote_original(key_packet)), net.now)
    assert client.connection.counters["source_quench"] == 1
    assert net.s[A].counters["source_quench"] == 1
    other = SourceQuench(quote_original(key_packet[:20] + b"\x00\x01\x00\x02" + key_packet[24:]))
    net.s[A].receive_icmp(other, net.now)
    assert net.s[A].drops["icmp_no_connection"] == 1
    marked = lambda p: QKDNLPacket(p.source, p.destination, p.protocol, p.payload,  # noqa: E731
                                   tos=p.tos | 3)
    net.hook = marked
    take(server, 1000)
    take(client, 1000)
    net.run(1.0)
    assert all(p.tos & 3 == 2 for p in net.sent[-20:] if p.source == A)  # ECT(0) on the way out
    assert client.connection.counters["ece"] >= 1


def test_guaranteed_rate_is_admitted_on_the_first_link_and_released_at_the_end():
    net = Net(capacity=20_000.0)  # 10 000 bit/s may be reserved per link
    net.s[B].register("app", net.now)
    net.run(0.2)
    fits = Qos(service="guaranteed", rate_bps=6000, burst_bits=512, timeout_s=5.0)
    first = net.connect(A, "app", fits)
    assert first.established and net.s[A].admission.reserved_bps("if0", net.now) == 6000
    with pytest.raises(ApiError) as error:
        net.s[A].connect("app", fits, net.now)
    assert error.value.status is Status.QOS_NOT_MET
    net.s[A].close(first, net.now)
    net.run(5.0)
    assert first.connection.state is State.CLOSED and net.s[A].connections == {}
    assert net.s[A].admission.reserved_bps("if0", net.now) == 0
    assert net.connect(A, "app", fits).established


def test_unanswered_syn_times_out_and_unregister_resets_unaccepted_connections():
    net = Net()
    net.s[B].register("app", net.now)
    net.run(0.2)
    net.hook = lambda packet: None
    lost = net.s[A].connect("app", Qos(timeout_s=3.0), net.now)
    net.run(4.0)
    assert lost.ended and lost.failure is Status.TIMEOUT
    net.hook = lambda packet: packet
    pending = net.connect(A, "app")
    assert pending.established
    net.s[B].unregister("app", net.now)
    net.run(0.5)
    assert pending.ended and pending.failure is Status.PEER_GONE
    assert net.s[B].accept_queues == {}

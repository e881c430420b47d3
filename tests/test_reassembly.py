"""QKDNL fragment reassembly (qbb/netlayer/reassembly.py), in the forwarder and end to end."""

from __future__ import annotations

import dataclasses
import random

import pytest
import trio
from hypothesis import given, settings, strategies as st

from qbb.errors import ConfigError
from qbb.netlayer.forwarding import Deliver, Forwarder
from qbb.netlayer.icmp import TimeExceeded, TimeExceededCode
from qbb.netlayer.packet import QKDNLPacket, decode_header, decode_packet, encode_packet
from qbb.netlayer.reassembly import ReassemblyConfig, Reassembler, fragment_packet
from qbb.network import EmbeddedNetwork
from qbb.topology import LinkSpec, NodeSpec, Topology
from qbb.wire import PROTO_QKDTL

SRC, DST = "1.1.0.5", "1.1.0.9"
ids = st.integers(0, 0xFFFF)


def packet(payload: bytes, ident: int = 7, **fields) -> QKDNLPacket:
    return QKDNLPacket(SRC, DST, PROTO_QKDTL, payload, identification=ident, **fields)


def feed(reassembler: Reassembler, fragments, now: float = 0.0) -> list[QKDNLPacket]:
    """Fragments through their wire form (header checked as a node would); whole packets."""
    out = []
    for fragment in fragments:
        data = encode_packet(fragment)
        header, offset = decode_header(data)
        whole = reassembler.add(header, data[offset:], now)
        if whole is not None:
            out.append(whole)
    return out


@st.composite
def fragmented(draw, max_len: int = 3000):
    """(original, fragments in a random order with duplicates of a strict subset)."""
    size = draw(st.integers(8, 512))
    payload = draw(st.binary(min_size=size + 1, max_size=max(size + 1, max_len)))
    original = packet(payload, draw(ids), ttl=draw(st.integers(1, 255)),
                      options=draw(st.sampled_from([b"", b"\x01\x01\x01\x00"])))
    pieces = fragment_packet(original, size)
    rng = random.Random(draw(st.integers(0, 2**32)))
    dups = rng.sample(pieces, rng.randrange(len(pieces)))  # strict subset
    stream = pieces + dups
    rng.shuffle(stream)
    return original, pieces, stream


@settings(max_examples=100)
@given(fragmented())
def test_any_order_with_duplicates_gives_back_the_packet(case):
    original, pieces, stream = case
    assert len(pieces) >= 2 and all(p.more_fragments for p in pieces[:-1])
    assert b"".join(p.payload for p in pieces) == original.payload
    reassembler = Reassembler()
    assert feed(reassembler, stream) == [original]
    assert reassembler.counters["reassembled"] == 1
    assert not {k for k in reassembler.drops
                if k not in ("reassembly_duplicate",)}, reassembler.drops
    assert reassembler.buffered_bytes >= 0 and reassembler.pending <= 1


@settings(max_examples=50)
@given(fragmented(1200), st.data())
def test_a_missing_fragment_times_out(case, data):
    original, pieces, _ = case
    missing = data.draw(st.integers(0, len(pieces) - 1))
    reassembler = Reassembler(ReassemblyConfig(timeout=15.0))
    assert feed(reassembler, [p for i, p in enumerate(pieces) if i != missing], 1.0) == []
    assert reassembler.next_timer() == 16.0 and reassembler.handle_timer(15.9) == []
    expired = reassembler.handle_timer(16.0)
    assert reassembler.drops["reassembly_timeout"] == 1 and reassembler.pending == 0
    assert reassembler.buffered_bytes == 0
    if missing == 0:
        assert expired == []
    else:  # the first fragment arrived: header and 8 bytes to quote in Time Exceeded
        assert len(expired) == 1 and expired[0].header.fragment_offset == 0
        assert decode_packet(expired[0].quote).payload == original.payload[:8]
    assert feed(reassembler, [pieces[missing]], 17.0) == []  # too late: a new, lone group


@settings(max_examples=100)
@given(fragmented(1500), st.data())
def test_overlapping_fragments_abandon_the_datagram(case, data):
    original, pieces, _ = case
    victim = data.draw(st.integers(0, len(pieces) - 1))
    piece = pieces[victim]
    shift = data.draw(st.integers(1, 3))  # 8..24 bytes earlier or later: overlaps a neighbour
    offset = max(0, piece.fragment_offset + data.draw(st.sampled_from([-shift, shift])))
    if offset == piece.fragment_offset:
        offset += 1
    length = 8 * max(1, len(piece.payload) // 8)
    inverted = bytes(b ^ 0xFF for b in original.payload[8 * offset:8 * offset + length])
    rogue = dataclasses.replace(piece, fragment_offset=offset, more_fragments=True,
                                payload=inverted.ljust(length, b"\0"))  # never a duplicate
    stream = pieces[:]
    stream.insert(data.draw(st.integers(1, len(stream) - 1)), rogue)  # before completion
    reassembler = Reassembler()
    assert feed(reassembler, stream) == []
    drops = reassembler.drops
    assert drops["reassembly_overlap"] + drops["reassembly_inconsistent"] == 1, drops
    assert reassembler.buffered_bytes == 0 and reassembler.pending == 1
    reassembler.handle_timer(100.0)
    assert reassembler.pending == 0 and drops["reassembly_timeout"] == 0


def test_after_an_overlap_the_rest_of_the_datagram_is_discarded():
    pieces = fragment_packet(packet(bytes(range(64))), 16)
    rogue = dataclasses.replace(pieces[1], fragment_offset=1)  # [8, 24) overlaps [0, 16)
    reassembler = Reassembler()
    assert feed(reassembler, [pieces[0], rogue, *pieces[1:]]) == []
    assert reassembler.drops["reassembly_overlap"] == 1
    assert reassembler.drops["reassembly_poisoned"] == len(pieces) - 1
    assert reassembler.handle_timer(15.0) == [] and reassembler.pending == 0
    assert feed(reassembler, pieces, 16.0) == [packet(bytes(range(64)))]  # a new datagram


def test_faulty_fragments_are_counted():
    reassembler = Reassembler()
    assert feed(reassembler, [packet(b"x" * 12, more_fragments=True)]) == []
    assert feed(reassembler, [packet(b"", more_fragments=True, fragment_offset=3)]) == []
    assert reassembler.drops["reassembly_bad_length"] == 2 and reassembler.pending == 0
    big = packet(b"y" * 64, 2, fragment_offset=0x1FFF)  # 65528 + 64 > 65515
    assert feed(reassembler, [big]) == [] and reassembler.drops["reassembly_too_big"] == 1
    ends = [packet(b"a" * 16, 3, fragment_offset=2), packet(b"b" * 8, 3, fragment_offset=4)]
    assert feed(reassembler, ends) == [] and reassembler.drops["reassembly_inconsistent"] == 1
    tail = [packet(b"", 4, fragment_offset=4), packet(b"", 4, fragment_offset=4),
            packet(b"c" * 32, 4, more_fragments=True)]
    assert feed(reassembler, tail) == [packet(b"c" * 32, 4)]
    assert reassembler.drops["reassembly_duplicate"] == 1


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 40), st.integers(1, 64)),
                max_size=60),
       st.integers(1, 8), st.integers(64, 2048))
def test_memory_stays_bounded(items, max_datagrams, max_bytes):
    reassembler = Reassembler(ReassemblyConfig(max_datagrams=max_datagrams,
                                               max_bytes=max_bytes))
    for now, (ident, offset, words) in enumerate(items):
        evicted = reassembler.drops["reassembly_evicted"]
        crowded = reassembler.pending == max_datagrams and 8 * words <= max_bytes \
            and (SRC, DST, PROTO_QKDTL, ident) not in reassembler._groups
        feed(reassembler, [packet(bytes(8 * words), ident, more_fragments=True,
                                  fragment_offset=offset)], float(now) / 10)
        assert reassembler.pending <= max_datagrams
        assert 0 <= reassembler.buffered_bytes <= max_bytes
        assert reassembler.buffered_bytes == sum(g.size for g in reassembler._groups.values())
        if crowded:  # a new datagram pushes out the oldest one
            assert reassembler.drops["reassembly_evicted"] > evicted


def test_fragment_packet():
    original = packet(bytes(range(100)))
    pieces = fragment_packet(original, 30)  # rounded down to 24
    assert [len(p.payload) for p in pieces] == [24, 24, 24, 24, 4]
    assert [p.fragment_offset for p in pieces] == [0, 3, 6, 9, 12]
    assert fragment_packet(original, 200) == [original]
    with pytest.raises(ConfigError):
        fragment_packet(dataclasses.replace(original, dont_fragment=True), 30)


def test_forwarder_delivers_reassembled_and_reports_timeouts():
    forwarder = Forwarder(DST)
    forwarder.protocols.add(PROTO_QKDTL)
    pieces = fragment_packet(packet(bytes(200), 9), 64)
    actions = [forwarder.handle(encode_packet(p), "1.1.0.13", 1.0) for p in pieces]
    assert actions[:-1] == [[]] * (len(pieces) - 1)
    (deliver,) = actions[-1]
    assert isinstance(deliver, Deliver) and deliver.packet == packet(bytes(200), 9)
    assert forwarder.counters["delivered"] == 1
    forwarder.handle(encode_packet(pieces[0]), "1.1.0.13", 2.0)
    assert forwarder.next_timer() == 17.0
    # Time Exceeded towards the source; no routes here, so it ends as a counted no_route
    assert forwarder.handle_timer(16.9) == [] and forwarder.next_timer() == 17.0
    forwarder.handle_timer(17.0)
    assert forwarder.drops["reassembly_timeout"] == 1 and forwarder.next_timer() is None
    assert forwarder.counters["icmp_sent.reassembly_timeout"] == 1
    assert forwarder.drops["no_route"] == 1


def line3() -> Topology:
    return Topology("line3", tuple(NodeSpec(x, 1) for x in "ABC"),
                    (LinkSpec("A", "B", mtu=256), LinkSpec("B", "C", mtu=256)))


async def test_fragments_cross_a_network_and_are_reassembled_at_the_destination(autojump_clock):
    received = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            net = await nursery.start(EmbeddedNetwork(line3()).run)
            assert await net.wait_converged(timeout=20) is not None
            a, c = net.nodes["A"], net.nodes["C"]
            c.register(200, lambda p, interface: received.append(p))
            whole = QKDNLPacket(a.address, c.address, 200, bytes(range(256)) * 4,
                                identification=42)
            pieces = fragment_packet(whole, 160)
            for piece in reversed(pieces):
                assert a.send_packet(piece)
            await trio.sleep(1)
            assert len(received) == 1 and received[0].payload == whole.payload
            assert net.nodes["B"].forwarder.counters["forwarded"] >= len(pieces)
            assert a.send_packet(pieces[0])  # the rest never comes: Time Exceeded code 1
            await trio.sleep(17)
            errors = [m for _, source, m in a.icmp_received if isinstance(m, TimeExceeded)]
            assert [e.code for e in errors] == [TimeExceededCode.REASSEMBLY_TIME_EXCEEDED]
            assert c.drops()["reassembly_timeout"] == 1
            nursery.cancel_scope.cancel()


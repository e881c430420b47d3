"""Q3P drivers (trio over memory channels and UDP), the trio-free loopback pair and the
fault injector, tested with a small stand-in endpoint that implements the fixed
``Q3PEndpoint`` interface (handshake, go-back-N ARQ, keepalive, dead interval)."""

from __future__ import annotations

import socket
import struct
import zlib
from collections import Counter

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from qbb.q3p.driver import LinkDriver, LoopbackPair, memory_wire, run_memory, run_udp
from qbb.q3p.events import Delivered, LinkDown, LinkUp
from qbb.q3p.faults import FaultInjector, flip_bit


class StandInEndpoint:
    """Just enough of the endpoint interface to exercise the drivers.

    Frame: kind (1 byte) | body | CRC-32 of kind+body.  Kinds: H handshake, h handshake
    reply, D data (u32 seq, u8 channel, payload), A ack (u32 next expected), K keepalive.
    """

    def __init__(self, node_id: str, peer_id: str, *, window: int = 16, rto: float = 0.05,
                 queue_limit: int = 10_000, keepalive: float = 0.5, dead: float = 2.0,
                 raise_on: bytes | None = None) -> None:
        self.node_id, self.peer_id = node_id, peer_id
        self.window, self.rto, self.queue_limit = window, rto, queue_limit
        self.keepalive, self.dead, self.raise_on = keepalive, dead, raise_on
        self.state = "down"
        self.counters: Counter[str] = Counter()
        self.key_calls = 0
        self._queue: list[tuple[int, int, bytes]] = []  # (seq, channel, payload), unacked
        self._next_seq = self._acked = self._sent_upto = 0
        self._expected = 0
        self._reorder: dict[int, tuple[int, bytes]] = {}
        self._out: list[bytes] = []
        self._events: list = []
        self._rto_at = self._hello_at = self._keep_at = self._heard = None

    # -- helpers
    def _frame(self, kind: bytes, body: bytes = b"") -> None:
        data = kind + body
        self._out.append(data + struct.pack("!I", zlib.crc32(data)))

    def start(self, now: float) -> None:
        self.state = "handshaking"
        self._frame(b"H")
        self._hello_at = now + 0.2
        self._heard = now

    def _up(self, now: float) -> None:
        if self.state != "up":
            self.state = "up"
            self._events.append(LinkUp(self.peer_id))
        self._hello_at = None
        self._keep_at = now + self.keepalive

    def receive_datagram(self, data: bytes, now: float) -> None:
        if self.raise_on is not None and data.startswith(self.raise_on):
            raise RuntimeError("stand-in asked to fail")
        if len(data) < 5 or zlib.crc32(data[:-4]) != struct.unpack("!I", data[-4:])[0]:
            self.counters["bad_crc"] += 1
            return
        kind, body = data[:1], data[1:-4]
        self._heard = now
        if kind == b"H":
            self._frame(b"h")
            self._up(now)
        elif kind == b"h":
            self._up(now)
        elif kind == b"D" and self.state == "up":
            self._on_data(body)
        elif kind == b"A" and self.state == "up":
            self._on_ack(struct.unpack("!I", body)[0], now)

    def _on_data(self, body: bytes) -> None:
        seq, channel = struct.unpack("!IB", body[:5])
        if seq >= self._expected:
            self._reorder[seq] = (channel, body[5:])
        else:
            self.counters["duplicate"] += 1
        while self._expected in self._reorder:
            channel, payload = self._reorder.pop(self._expected)
            self._events.append(Delivered(channel, payload))
            self._expected += 1
        self._frame(b"A", struct.pack("!I", self._expected))

    def _on_ack(self, upto: int, now: float) -> None:
        if upto > self._acked:
            self._queue = [item for item in self._queue if item[0] >= upto]
            self._acked = upto
            self._sent_upto = max(self._sent_upto, upto)
            self._rto_at = now + self.rto if self._queue else None

    def send(self, payload: bytes, now: float, *, priority: int = 0, channel: int = 0,
             encrypt: bool = False) -> bool:
        if len(self._queue) >= self.queue_limit:
            return False
        self._queue.append((self._next_seq, channel, payload))
        self._next_seq += 1
        return True

    def datagrams_to_send(self, now: float) -> list[bytes]:
        if self.state == "up":
            for seq, channel, payload in self._queue:
                if seq >= self._acked + self.window:
                    break
                if seq >= self._sent_upto:
                    self._frame(b"D", struct.pack("!IB", seq, channel) + payload)
                    self._sent_upto = seq + 1
                    self._rto_at = self._rto_at or now + self.rto
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        times = [self._rto_at, self._hello_at, self._keep_at,
                 None if self._heard is None or self.state == "down" else self._heard + self.dead]
        return min((t for t in times if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        if self._heard is not None and self.state != "down" and now >= self._heard + self.dead:
            self.state = "down"
            self._events.append(LinkDown(self.peer_id, "dead interval"))
            self._rto_at = self._keep_at = None
            self.start(now)
            return
        if self._rto_at is not None and now >= self._rto_at:
            self._sent_upto = self._acked  # go back N
            self._rto_at = now + self.rto
        if self._hello_at is not None and now >= self._hello_at:
            self._frame(b"H")
            self._hello_at = now + 0.2
        if self._keep_at is not None and now >= self._keep_at:
            self._frame(b"K")
            self._keep_at = now + self.keepalive

    def events(self) -> list:
        out, self._events = self._events, []
        return out

    def advance_keys(self, now: float) -> None:
        self.key_calls += 1


def _pair(**kw) -> tuple[StandInEndpoint, StandInEndpoint]:
    return StandInEndpoint("192.0.2.1", "192.0.2.2", **kw), \
        StandInEndpoint("192.0.2.2", "192.0.2.1", **kw)


def _messages(n: int, channel: int = 0) -> list[bytes]:
    return [struct.pack("!HI", channel, i) + bytes([i % 251]) * (i % 97) for i in range(n)]


# -- fault injector ---------------------------------------------------------------------

def test_faults_passthrough_without_faults():
    injector = FaultInjector()
    data = [b"a", b"b", b"c"]
    assert injector.outgoing(data, 0.0) == data
    assert injector.counters["offered"] == 3 and injector.next_release() is None


def test_faults_are_reproducible_from_the_seed():
    def run(seed):
        injector = FaultInjector(loss=0.2, duplicate=0.2, reorder=0.2, corrupt=0.2, seed=seed)
        out = [injector.outgoing([i.to_bytes(2, "big") * 4], i * 0.001) for i in range(300)]
        return out + [injector.flush()], dict(injector.counters)
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_faults_rates_roughly_match():
    injector = FaultInjector(loss=0.1, duplicate=0.05, corrupt=0.02, seed=1)
    n = 20_000
    out = injector.outgoing([b"x" * 32] * n, 0.0)
    assert 0.08 < injector.counters["lost"] / n < 0.12
    assert 0.035 < injector.counters["duplicated"] / n < 0.065
    assert 0.01 < injector.counters["corrupted"] / n < 0.03
    assert len(out) == n - injector.counters["lost"] + injector.counters["duplicated"]


def test_reordered_datagram_leaves_after_a_younger_one_or_on_time():
    injector = FaultInjector(reorder=1.0, seed=0)
    assert injector.outgoing([b"1"], 0.0) == []
    assert injector.next_release() == pytest.approx(0.01)
    assert injector.release(0.005) == []
    injector.reorder = 0.0
    assert injector.outgoing([b"2"], 0.006) == [b"2", b"1"]
    injector.reorder = 1.0
    assert injector.outgoing([b"3"], 0.02) == []
    assert injector.release(0.03) == [b"3"]
    assert injector.counters["reordered"] == 2 and injector.counters["released"] == 2


@given(st.binary(min_size=1, max_size=64), st.data())
@settings(max_examples=50)
def test_flip_bit_flips_exactly_one_bit(data, draw):
    bit = draw.draw(st.integers(0, 8 * len(data) - 1))
    flipped = flip_bit(data, bit)
    diff = int.from_bytes(data, "big") ^ int.from_bytes(flipped, "big")
    assert bin(diff).count("1") == 1 and flip_bit(flipped, bit) == data


@pytest.mark.parametrize("bad", [{"loss": -0.1}, {"duplicate": 1.5}, {"reorder": True},
                                 {"hold": 0}])
def test_faults_reject_bad_settings(bad):
    with pytest.raises(ValueError):
        FaultInjector(**bad)


# -- trio-free loopback pair ------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loopback_pair_exactly_once_in_order_under_faults(seed):
    a, b = _pair()
    faults = tuple(FaultInjector(loss=0.1, duplicate=0.1, reorder=0.2, corrupt=0.05,
                                 seed=seed + side) for side in (0, 1))
    pair = LoopbackPair(a, b, faults=faults, latency=0.002)
    pair.start()
    sent = _messages(300)
    for message in sent:
        assert a.send(message, pair.now)

    def done():
        return sum(isinstance(e, Delivered) for e in pair.events[1]) >= len(sent)

    assert pair.run_until(60.0, done)
    got = [e.payload for e in pair.events[1] if isinstance(e, Delivered)]
    assert got == sent
    assert any(isinstance(e, LinkUp) for e in pair.events[0])
    assert b.counters["bad_crc"] > 0 and a.key_calls > 0


def test_loopback_pair_runs_timers_without_traffic():
    a, b = _pair()
    pair = LoopbackPair(a, b)
    pair.start()
    assert not pair.run_until(10.0)
    assert pair.now == 10.0 and a.state == b.state == "up"
    assert pair.delivered[0] > 10  # keepalives kept flowing


# -- trio drivers -----------------------------------------------------------------------

async def _collect(receive, count, kind=Delivered):
    got = []
    async for event in receive:
        if isinstance(event, kind):
            got.append(event)
            if len(got) >= count:
                return got
    return got


async def test_memory_driver_virtual_time_under_faults(autojump_clock):
    a, b = _pair()
    wire_a, wire_b = memory_wire()
    events_send, events_recv = trio.open_memory_channel(10_000)
    sent = _messages(200, channel=3)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            driver_a = await nursery.start(
                lambda task_status: run_memory(a, *wire_a, task_status=task_status,
                                               faults=FaultInjector(loss=0.1, reorder=0.1,
                                                                    duplicate=0.1, seed=5)))
            await nursery.start(lambda task_status: run_memory(
                b, *wire_b, events=events_send, task_status=task_status))
            for message in sent:
                await driver_a.send(message, channel=3)
            got = await _collect(events_recv, len(sent))
            assert [e.payload for e in got] == sent and {e.channel for e in got} == {3}
            assert driver_a.faults.counters["lost"] > 0
            nursery.cancel_scope.cancel()
    assert a.key_calls > 1 and driver_a.counters["wire_out"] > len(sent)


async def test_memory_driver_link_down_after_peer_vanishes(autojump_clock):
    a, b = _pair(dead=1.0)
    wire_a, wire_b = memory_wire()
    events = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_memory(
                a, *wire_a, events=events.append, task_status=task_status))
            peer_scope = trio.CancelScope()

            async def peer():
                with peer_scope:
                    await run_memory(b, *wire_b)
            nursery.start_soon(peer)
            await trio.sleep(0.5)
            assert events == [LinkUp("192.0.2.2")]
            peer_scope.cancel()
            await trio.sleep(3.0)
            assert LinkDown("192.0.2.2", "dead interval") in events
            nursery.cancel_scope.cancel()


async def test_send_waits_for_room_when_the_queue_is_full(autojump_clock):
    a, b = _pair(queue_limit=4, window=4)
    wire_a, wire_b = memory_wire()
    events_send, events_recv = trio.open_memory_channel(1000)
    sent = _messages(40)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            driver = await nursery.start(lambda task_status: run_memory(
                a, *wire_a, task_status=task_status))
            await nursery.start(lambda task_status: run_memory(
                b, *wire_b, events=events_send, task_status=task_status))
            refused = sum(not driver.send_nowait(m) for m in sent[:8])
            assert refused == 4
            for message in sent[4:]:
                await driver.send(message)
            got = await _collect(events_recv, len(sent))
            assert [e.payload for e in got] == sent
            nursery.cancel_scope.cancel()


async def test_endpoint_exception_and_closed_wire_do_not_escape(autojump_clock):
    a, b = _pair(raise_on=b"K", dead=5.0)  # every keepalive makes a.receive_datagram raise
    wire_a, wire_b = memory_wire()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            driver = await nursery.start(lambda task_status: run_memory(
                a, *wire_a, task_status=task_status))
            driver_b = await nursery.start(lambda task_status: run_memory(
                b, *wire_b, task_status=task_status))
            await trio.sleep(2.0)
            assert driver.counters["endpoint_error"] >= 2 and a.state == "up"
            await wire_a[1].aclose()  # a's receive side closes: a keeps running its timers
            await wire_b[0].aclose()
            await trio.sleep(1.0)
            assert driver.counters["wire_eof"] == 1 and driver_b.counters["wire_closed"] >= 1
            nursery.cancel_scope.cancel()


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_udp_driver_delivers_over_loopback_and_drops_foreign_sources():
    a, b = _pair()
    sock_a, sock_b, stranger = _udp_socket(), _udp_socket(), _udp_socket()
    events_send, events_recv = trio.open_memory_channel(10_000)
    sent = _messages(300)
    with sock_a, sock_b, stranger, trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            driver_a = await nursery.start(lambda task_status: run_udp(
                a, sock_a, sock_b.getsockname(), task_status=task_status,
                faults=FaultInjector(loss=0.05, seed=3)))
            driver_b = await nursery.start(lambda task_status: run_udp(
                b, sock_b, sock_a.getsockname(), events=events_send, task_status=task_status))
            stranger.sendto(b"H\x00\x00\x00\x00", sock_b.getsockname())
            for message in sent:
                await driver_a.send(message)
            got = await _collect(events_recv, len(sent))
            assert [e.payload for e in got] == sent
            assert driver_b.counters["foreign_source"] == 1
            nursery.cancel_scope.cancel()


async def test_udp_driver_survives_an_unreachable_peer():
    a = StandInEndpoint("192.0.2.1", "192.0.2.2")
    sock, gone = _udp_socket(), _udp_socket()
    peer = gone.getsockname()
    gone.close()
    sock.connect(peer)  # connected: ICMP port unreachable surfaces as ECONNREFUSED
    with sock, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            driver = await nursery.start(lambda task_status: run_udp(
                a, sock, task_status=task_status))
            await trio.sleep(1.0)
            errors = sum(v for k, v in driver.counters.items() if "ECONNREFUSED" in k)
            assert errors >= 1 and a.state == "handshaking"
            nursery.cancel_scope.cancel()


def test_link_driver_defaults():
    driver = LinkDriver(StandInEndpoint("192.0.2.1", "192.0.2.2"))
    assert driver.faults is None and not driver.counters


def standin_factory(config, store, devices):
    """``linkproc --endpoint tests.test_q3p_driver:standin_factory`` (plumbing tests)."""
    return StandInEndpoint(config.node_id, config.peer_id, keepalive=config.keepalive,
                           dead=config.dead_interval)

"""Timeout recovery of the Q3P ARQ: probe first, spurious timeouts (``qbb.q3p.rto``)."""

from __future__ import annotations

import os
from collections import deque

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from qbb.q3p.arq import FLOOR_HALF_LIFE, RttEstimator, SendWindow
from qbb.q3p.config import LinkConfig
from qbb.q3p.driver import LinkDriver
from qbb.q3p.endpoint import Q3PEndpoint
from qbb.q3p.events import Delivered
from qbb.q3p.keystore import KeyStoreConfig, LinkKeyStore
from qbb.q3p.packet import Ack
from qbb.q3p.rto import SPURIOUS_GAIN


def window(frames: int = 10) -> SendWindow:
    tx = SendWindow(64, RttEstimator(0.2, 0.05, 5.0), probe_rto=True)
    for i in range(frames):
        tx.register(f"f{i}", 0.0)
    return tx


def timeout(tx: SendWindow, now: float) -> None:
    """Let the timer run out at ``now`` and resend the probe."""
    assert tx.expire(now) == 1
    [probe] = tx.lost()
    tx.retransmitted(probe, now)


def test_timeout_resends_only_the_oldest_frame() -> None:
    tx = window()
    assert tx.next_deadline() == pytest.approx(0.2)
    assert tx.expire(0.19) == 0
    assert tx.expire(0.2) == 1 and [e.number for e in tx.lost()] == [0]
    assert tx.rtt.backoffs == 1 and tx.recovery.probe == 0 and tx.recovery.boundary == 10


def test_timer_restarts_when_the_cumulative_ack_advances() -> None:
    tx = window()
    tx.on_ack(Ack(3, 64), 0.15)
    # frames 3..9 were sent at 0.0, but the queue moved at 0.15: no timeout before 0.15 + RTO
    assert tx.next_deadline() == pytest.approx(0.15 + tx.rtt.rto)
    assert tx.expire(0.2) == 0


def test_spurious_timeout_is_detected_and_raises_the_floor() -> None:
    tx = window()
    timeout(tx, 0.2)
    # the peer wakes up: its first ACK covers the original probe and frame 1, not frame 9
    result = tx.on_ack(Ack(2, 64), 0.32)
    assert result.spurious and not result.go_back and not tx.lost()
    assert tx.recovery is None and tx.rtt.backoffs == 0
    assert tx.rtt.floor == pytest.approx(SPURIOUS_GAIN * 0.32)
    assert tx.rtt.rto >= SPURIOUS_GAIN * 0.32
    tx.on_ack(Ack(10, 64), 0.33)
    assert not tx.inflight and not tx.lost()  # nothing else was resent


def test_probe_acknowledged_before_it_was_resent_is_spurious() -> None:
    tx = window()
    assert tx.expire(0.2) == 1
    result = tx.on_ack(Ack(10, 64), 0.21)
    assert result.spurious and not tx.lost() and not tx.inflight


def test_probe_alone_coming_back_means_the_rest_was_lost_too() -> None:
    tx = window()
    timeout(tx, 0.2)
    result = tx.on_ack(Ack(1, 64), 0.25)  # only the probe: frames 1..9 never arrived
    assert not result.spurious and result.go_back == 9
    assert [e.number for e in tx.lost()] == list(range(1, 10))
    assert tx.rtt.floor == tx.rtt.rto_min


def test_a_hole_means_a_real_loss() -> None:
    tx = window()
    timeout(tx, 0.2)
    # frames 1..3 arrived, the probe (0) did not: SACK shows the hole
    assert not tx.on_ack(Ack.from_received(0, 64, [1, 2, 3]), 0.21).spurious
    result = tx.on_ack(Ack(4, 64), 0.25)  # the retransmission filled it
    assert not result.spurious and not result.go_back and tx.recovery is None
    assert tx.rtt.floor == tx.rtt.rto_min


def test_batch_covering_the_whole_episode_is_not_judged_spurious() -> None:
    tx = window()
    timeout(tx, 0.2)
    result = tx.on_ack(Ack(10, 64), 0.3)  # originals and retransmission in one batch
    assert not result.spurious and not result.go_back and not tx.inflight


def test_floor_decays_with_its_half_life() -> None:
    rtt = RttEstimator(0.2, 0.05, 5.0)
    rtt.raise_floor(0.45, now=100.0)
    assert rtt.floor_at_time(100.0) == pytest.approx(0.45)
    assert rtt.floor_at_time(100.0 + FLOOR_HALF_LIFE) == pytest.approx(0.05 + 0.2)
    rtt.sample(0.001, now=100.0 + 3 * FLOOR_HALF_LIFE)
    assert rtt.rto == pytest.approx(0.05 + 0.4 / 8)
    rtt.raise_floor(99.0, now=0.0)
    assert rtt.rto == rtt.rto_max == 5.0


def test_classic_policy_is_unchanged() -> None:
    tx = SendWindow(64, RttEstimator(0.2, 0.05, 5.0))
    for i in range(5):
        tx.register(i, 0.0)
    assert tx.expire(0.2) == 5 and len(tx.lost()) == 5


# -- two endpoints, the receiver descheduled for longer than the RTO ----------------------

PAYLOAD = 1500


def make_pair(probe: bool, seed: int = 1) -> tuple[Q3PEndpoint, Q3PEndpoint]:
    stream = os.urandom(1 << 16) * 64  # 4 MiB of identical key at both ends
    ends = []
    for me, peer, initiator in (("192.0.2.1", "192.0.2.2", True),
                                ("192.0.2.2", "192.0.2.1", False)):
        store = LinkKeyStore(KeyStoreConfig(initiator=initiator, key_ratio=900,
                                            capacity=8 << 20))
        store.ingest(stream)
        config = LinkConfig(me, peer, 1, mtu=2000, window=32, rto_probe=probe)
        ends.append(Q3PEndpoint(config, store, nonce=seed + initiator))
    return ends[0], ends[1]


def simulate(probe: bool, stalls: list[tuple[float, float]], frames: int = 400,
             drain: int = 4, latency: float = 0.001) -> tuple[Q3PEndpoint, Q3PEndpoint, list]:
    """A sends ``frames`` messages; B processes nothing during ``stalls`` and afterwards
    works through its backlog ``drain`` datagrams per millisecond (a FIFO wire)."""
    a, b = make_pair(probe)
    to_b: deque = deque()
    to_a: deque = deque()
    got, sent, now = [], 0, 0.0
    a.start(now), b.start(now)
    while now < 5.0 and len(got) < frames:
        now = round(now + 0.001, 6)
        stalled = any(lo <= now < hi for lo, hi in stalls)
        while sent < frames and a.state == "up" and len(to_b) < 64 and \
                a.send(sent.to_bytes(4, "big") * (PAYLOAD // 4), now, encrypt=True):
            sent += 1
        for end, inbox, outbox, limit in ((a, to_a, to_b, 10**6), (b, to_b, to_a, drain)):
            if end is b and stalled:
                continue
            for _ in range(limit):
                if not inbox or inbox[0][0] > now:
                    break
                end.receive_datagram(inbox.popleft()[1], now)
            timer = end.next_timer()
            if timer is not None and now >= timer:
                end.handle_timer(now)
            outbox.extend((now + latency, d) for d in end.datagrams_to_send(now))
            events = end.events()
            if end is b:
                got += [int.from_bytes(e.payload[:4], "big") for e in events
                        if isinstance(e, Delivered)]
    return a, b, got


def test_a_stall_costs_the_probe_not_a_window() -> None:
    stall = [(0.1, 0.4)]  # 300 ms: the 50 ms RTO runs out three times (back-off)
    a, b, got = simulate(True, stall, frames=1000)
    classic_a, classic_b, classic_got = simulate(False, stall, frames=1000)
    assert got == classic_got == list(range(1000))  # exactly once, in order, both policies
    assert classic_a.counters["retransmit"] >= 20  # the whole window, sealed again
    assert a.counters["rto"] == a.counters["retransmit"] == 3  # the same probe frame
    assert a.counters["rto.spurious"] == 1 and b.counters["duplicate"] == 3
    assert a.status()["rto_floor"] >= SPURIOUS_GAIN * 0.3 * 0.9


def test_after_a_spurious_timeout_the_same_stall_is_waited_out() -> None:
    once, _, _ = simulate(True, [(0.1, 0.4)], frames=2000)
    twice, _, got = simulate(True, [(0.1, 0.4), (0.6, 0.9)], frames=2000)
    assert got == list(range(2000))
    assert twice.counters["rto"] == once.counters["rto"] == 3  # nothing for the second


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 1.5), st.floats(0.01, 0.4)), max_size=3),
       st.integers(1, 8), st.booleans())
def test_any_stalls_deliver_everything_exactly_once(stalls, drain, probe) -> None:
    windows = [(start, start + length) for start, length in stalls]
    a, b, got = simulate(probe, windows, frames=150, drain=drain)
    assert got == list(range(150))


# -- the driver reads what has arrived before it lets a timer fire -----------------------

class Recorder:
    """A fake endpoint whose timer is due at once; records the order of the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self, now): pass
    def send(self, payload, now, **options): return True
    def datagrams_to_send(self, now): return []
    def events(self): return []
    def advance_keys(self, now): pass

    def next_timer(self):
        return 0.0 if "timer" not in self.calls else None

    def receive_datagram(self, data, now):
        self.calls.append(f"rx:{data.decode()}")

    def handle_timer(self, now):
        self.calls.append("timer")


async def test_driver_drains_the_wire_before_a_due_timer() -> None:
    endpoint = Recorder()
    send, receive = trio.open_memory_channel(8)
    out_send, _out_receive = trio.open_memory_channel(8)
    driver = LinkDriver(endpoint, key_interval=None)
    driver._transmit = lambda datagram: True
    driver._drain = lambda: driver._memory_drain(receive)
    for text in ("ack1", "ack2"):
        send.send_nowait(text.encode())
    with trio.fail_after(5):
        await driver._step()
    assert endpoint.calls == ["rx:ack1", "rx:ack2", "timer"]
    assert driver.counters["drained_before_timer"] == 1

"""ARQ, RTT estimation, send queue and reassembly of Q3P (``qbb.q3p.arq``, ``fragment``)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qbb.errors import ConfigError
from qbb.q3p.arq import ReceiveWindow, RttEstimator, SendWindow, serial_diff
from qbb.q3p.config import LinkConfig
from qbb.q3p.fragment import Reassembler, SendQueue
from qbb.q3p.packet import Ack


def window(size: int = 8) -> SendWindow:
    return SendWindow(size, RttEstimator(0.2, 0.05, 5.0))


@given(a=st.integers(0, 2**32 - 1), d=st.integers(-(2**31), 2**31 - 1))
def test_serial_diff(a: int, d: int) -> None:
    assert serial_diff((a + d) % 2**32, a) == d


def test_rtt_estimator_follows_rfc6298() -> None:
    rtt = RttEstimator(1.0, 0.05, 5.0)
    assert rtt.rto == 1.0 and rtt.srtt is None
    rtt.sample(0.1)
    assert rtt.srtt == 0.1 and rtt.rttvar == 0.05 and rtt.rto == pytest.approx(0.3)
    rtt.sample(0.1)
    assert rtt.srtt == pytest.approx(0.1) and rtt.rttvar == pytest.approx(0.0375)
    rtt.backoff()
    rtt.backoff()
    assert rtt.rto == pytest.approx(4 * 0.25)
    rtt.reset_backoff()
    assert rtt.rto == pytest.approx(0.25)
    for _ in range(10):
        rtt.backoff()
    assert rtt.rto == 5.0
    tiny = RttEstimator(0.2, 0.05, 5.0)
    tiny.sample(0.0)
    assert tiny.rto == 0.05


def test_window_limits_and_cumulative_ack() -> None:
    tx = window(4)
    numbers = [tx.register(f"f{i}", 0.0) for i in range(4)]
    assert numbers == [0, 1, 2, 3] and not tx.can_send()
    result = tx.on_ack(Ack(2, 4), 0.1)
    assert [e.item for e in result.acked] == ["f0", "f1"] and tx.una == 2 and tx.can_send()
    assert tx.rtt.srtt == pytest.approx(0.1)
    tx.on_ack(Ack(2, 1), 0.2)
    assert tx.peer_window == 1 and not tx.can_send()  # flow control by the receiver
    assert not tx.on_ack(Ack(9, 4), 0.2).valid  # acknowledges frames never sent
    assert tx.on_ack(Ack(1, 4), 0.2).valid  # stale: ignored for the cumulative part


def test_sack_fast_retransmit_and_rto() -> None:
    tx = window(16)
    for i in range(8):
        tx.register(i, 0.0)
    result = tx.on_ack(Ack.from_received(0, 16, [1, 2, 3]), 0.05)
    assert result.newly_lost == 1 and [e.number for e in tx.lost()] == [0]
    tx.retransmitted(tx.inflight[0], 0.06)
    assert tx.inflight[0].transmissions == 2 and not tx.lost()
    # a second fast retransmit of the same frame waits for the RTO
    assert tx.on_ack(Ack.from_received(0, 16, [1, 2, 3, 4]), 0.07).newly_lost == 0
    deadline = tx.next_deadline()
    assert deadline == pytest.approx(0.0 + tx.rtt.rto)  # frames 5..7, sent at 0.0
    rto = tx.rtt.rto
    assert tx.expire(deadline) == 3 and tx.rtt.rto == pytest.approx(2 * rto)
    assert [e.number for e in tx.lost()] == [5, 6, 7]
    acked = tx.on_ack(Ack(8, 16), 0.5)
    assert len(acked.acked) == 4 and not tx.inflight  # 0 and 5..7; 1..4 were sacked
    assert tx.rtt.backoffs == 0


def test_karn_no_sample_from_retransmissions() -> None:
    tx = window()
    tx.register("a", 0.0)
    tx.retransmitted(tx.inflight[0], 1.0)
    tx.on_ack(Ack(1, 8), 1.01)
    assert tx.rtt.srtt is None


def test_wraparound() -> None:
    tx = window(4)
    tx.una = tx.nxt = 2**32 - 2
    numbers = [tx.register(i, 0.0) for i in range(4)]
    assert numbers == [2**32 - 2, 2**32 - 1, 0, 1]
    tx.on_ack(Ack(1, 4), 0.1)
    assert list(tx.inflight) == [1]
    rx = ReceiveWindow(4)
    rx.nxt = 2**32 - 1
    assert rx.classify(0) == "new" and rx.classify(2**32 - 2) == "duplicate"
    rx.hold(0, "b")
    rx.hold(2**32 - 1, "a")
    assert list(rx.release()) == ["a", "b"] and rx.nxt == 1


@given(st.data())
def test_receive_window_releases_in_order_once(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 60))
    arrivals = data.draw(st.lists(st.integers(0, n - 1), max_size=4 * n))
    arrivals += list(range(n))  # everything arrives at least once eventually
    rx = ReceiveWindow(16)
    released: list[int] = []
    for number in arrivals:
        kind = rx.classify(number)
        if kind == "new":
            rx.hold(number, number)
            released += rx.release()
        elif kind == "outside":
            assert number - rx.nxt >= 16
    # the pass over range(n) may stop at the window: finish like a retransmission round
    for _ in range(n):
        for number in range(n):
            if rx.classify(number) == "new":
                rx.hold(number, number)
                released += rx.release()
    assert released == list(range(n))
    ack = rx.ack(16)
    assert ack.cumulative == n and ack.sack == b""


def test_send_queue_priorities_and_fifo_per_channel() -> None:
    queue = SendQueue(10, 1 << 20)
    assert queue.push(0, 1, b"low-a", False)
    assert queue.push(1, 5, b"high", False)
    assert queue.push(0, 7, b"low-b-urgent", False)  # lifts channel 0 to 7
    order = []
    while (fragment := queue.peek(100)) is not None:
        queue.commit(fragment)
        order.append(fragment.payload)
    assert order == [b"low-a", b"low-b-urgent", b"high"]
    assert len(queue) == 0 and queue.bytes == 0


def test_send_queue_fragments_and_interleaves_channels() -> None:
    queue = SendQueue(10, 1 << 20)
    queue.push(0, 0, bytes(range(250)), False)
    first = queue.peek(100)
    queue.commit(first)
    assert first.more and len(first.payload) == 100
    queue.push(1, 3, b"urgent", False)
    second = queue.peek(100)
    assert second.payload == b"urgent" and not second.more  # pre-empts the big message
    queue.commit(second)
    rest = [queue.peek(100), None]
    queue.commit(rest[0])
    rest[1] = queue.peek(100)
    queue.commit(rest[1])
    assert [len(f.payload) for f in rest] == [100, 50] and rest[0].more and not rest[1].more
    assert queue.peek(100) is None


def test_send_queue_backpressure_and_requeue() -> None:
    queue = SendQueue(2, 100)
    assert queue.push(0, 0, b"a" * 60, False)
    assert not queue.push(0, 0, b"b" * 60, False)  # bytes
    assert queue.push(0, 0, b"c", False)
    assert not queue.push(0, 0, b"d", False)  # messages
    fragment = queue.peek(40)
    queue.commit(fragment)
    assert queue.partial() == [fragment.message]
    queue.requeue([fragment.message, fragment.message])
    again = queue.peek(100)
    assert again.payload == b"a" * 60 and not again.more and len(queue) == 2


def test_empty_message_is_one_frame() -> None:
    queue = SendQueue(2, 100)
    queue.push(3, 0, b"", True)
    fragment = queue.peek(10)
    assert fragment.payload == b"" and not fragment.more and fragment.message.encrypt


@given(sizes=st.lists(st.integers(0, 700), min_size=1, max_size=12), room=st.integers(1, 300),
       seed=st.integers(0, 1000))
def test_fragment_and_reassemble(sizes: list[int], room: int, seed: int) -> None:
    rng = random.Random(seed)
    queue = SendQueue(100, 1 << 20)
    sent = {}
    for i, size in enumerate(sizes):
        channel = rng.randrange(3)
        payload = bytes([i]) * size
        queue.push(channel, rng.randrange(8), payload, False)
        sent.setdefault(channel, []).append(payload)
    reassembler = Reassembler(1 << 20)
    got: dict[int, list[bytes]] = {}
    while (fragment := queue.peek(room)) is not None:
        queue.commit(fragment)
        message = reassembler.add(fragment.message.channel, fragment.payload, fragment.more)
        if message is not None:
            got.setdefault(fragment.message.channel, []).append(message)
    assert got == sent


def test_reassembly_limit() -> None:
    reassembler = Reassembler(10)
    assert reassembler.add(0, b"x" * 8, True) is None
    assert reassembler.add(0, b"x" * 8, True) is None  # over the limit: discarding
    assert reassembler.add(0, b"x", False) is False
    assert reassembler.add(0, b"ok", False) == b"ok"
    assert reassembler.add(1, b"y" * 11, False) is False


def test_link_config_validation() -> None:
    config = LinkConfig("192.0.2.1", "192.0.2.2", 1)
    assert config.max_payload == 1400 - 44
    bad = [dict(node_id="x"), dict(peer_id="192.0.2.1"), dict(mtu=20), dict(mtu=70000),
           dict(window=0), dict(rto_initial=10.0), dict(keepalive=5.0), dict(ack_delay=0),
           dict(authenticate_all=1), dict(link_id=-1), dict(rto_min=float("nan"))]
    for change in bad:
        args = dict(node_id="192.0.2.1", peer_id="192.0.2.2", link_id=1) | change
        with pytest.raises(ConfigError):
            LinkConfig(**args)

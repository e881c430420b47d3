"""QKDTL congestion control (qbb/transport/congestion.py): AIMD reactions, and convergence
to a fair share of a bottleneck in a virtual-time simulation (tests/transport_sim.py)."""

from __future__ import annotations

import math

import pytest

from qbb.transport.bucket import TokenBucket
from qbb.transport.congestion import CongestionControl
from qbb.transport.conn_send import SendHalf
from qbb.transport.connection import ConnectionConfig, State
from qbb.transport.packet import ConnectRequest, SegmentFlags, ServiceClass
from qbb.transport.rtt import RttEstimator, seq_add, seq_diff
from transport_sim import Pair, jain, simulate_flows

# --- the window alone ----------------------------------------------------------------


def test_slow_start_doubles_then_avoidance_adds_one_per_window():
    cc = CongestionControl(initial_cwnd=2)
    for _ in range(3):  # three round trips, every segment acknowledged
        cc.on_ack(cc.window, cwnd_limited=True)
    assert cc.cwnd == 16
    cc.on_fast_retransmit(flight=16, now=0.0)
    assert cc.cwnd == cc.ssthresh == 8 and not cc.slow_start
    cc.on_ack(8, cwnd_limited=True)  # one window: +1
    assert cc.cwnd == pytest.approx(9.0, abs=0.1)


def test_slow_start_stops_at_ssthresh():
    cc = CongestionControl(initial_cwnd=2)
    cc.ssthresh = 5
    cc.on_ack(10, cwnd_limited=True)  # 3 in slow start up to 5, then 7 at 1/cwnd each
    assert cc.cwnd == pytest.approx(5 + 7 / 5)


def test_no_growth_when_the_window_was_not_used():
    cc = CongestionControl(initial_cwnd=4)
    cc.on_ack(4, cwnd_limited=False)
    assert cc.cwnd == 4


def test_rto_resets_to_one_segment():
    cc = CongestionControl(initial_cwnd=10)
    cc.on_rto(flight=10, now=1.0)
    assert cc.cwnd == 1 and cc.ssthresh == 5 and cc.window == 1
    assert cc.reductions["rto"] == 1


@pytest.mark.parametrize("kind", ["ece", "source_quench"])
def test_signals_halve_at_most_once_per_round_trip(kind):
    cc = CongestionControl(initial_cwnd=2)
    cc.cwnd = 20.0
    assert cc.on_signal(kind, now=1.0, rtt=0.1)
    assert cc.cwnd == 10 and cc.ssthresh == 10
    assert not cc.on_signal(kind, now=1.05, rtt=0.1)  # same round trip
    assert cc.cwnd == 10
    assert cc.on_signal(kind, now=1.2, rtt=0.1)
    assert cc.cwnd == 5 and cc.reductions[kind] == 2
    for step in range(10):
        cc.on_signal(kind, now=2.0 + step, rtt=0.1)
    assert cc.cwnd == 1 and cc.ssthresh == 2  # floors


def test_a_loss_reduction_suppresses_an_ece_in_the_same_round_trip():
    cc = CongestionControl(initial_cwnd=2)
    cc.cwnd = 16.0
    cc.on_fast_retransmit(flight=16, now=1.0)
    assert not cc.on_signal("ece", now=1.01, rtt=0.1) and cc.cwnd == 8
    with pytest.raises(ValueError):
        cc.on_signal("loss", now=5.0, rtt=0.1)


# --- RTT, sequence arithmetic, bucket ---------------------------------------------------

def test_rtt_estimator_follows_rfc_6298():
    rtt = RttEstimator(rto_initial=1.0, rto_min=0.2, rto_max=60.0)
    assert rtt.rto == 1.0 and rtt.round_trip(0.5) == 0.5
    rtt.sample(0.1)
    assert rtt.srtt == 0.1 and rtt.rttvar == 0.05 and rtt.rto == pytest.approx(0.3)
    rtt.sample(0.3)
    assert rtt.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.2)
    assert rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.3)
    base = rtt.rto
    rtt.backoff()
    rtt.backoff()
    assert rtt.rto == pytest.approx(4 * base)
    for _ in range(20):
        rtt.backoff()
    assert rtt.rto == 60.0
    rtt.reset_backoff()
    assert rtt.rto == pytest.approx(base)
    rtt.sample(0.0)
    assert rtt.rto >= 0.2


def test_karn_no_rtt_sample_from_segments_acked_after_a_retransmission():
    send = SendHalf(iss=100, config=CONFIG)
    for _ in range(3):
        send.push(SegmentFlags.KEY, b"k" * 10, 10, ((0, 8, b"k"),))
    send.drain(0.0)
    send.on_rto(1.0)  # the first segment is lost: sent again at 1.0
    send.drain(1.0)
    send.on_new_ack(130, 1.1)  # one cumulative ACK for all three
    assert send.rtt.srtt is None  # 1.1 s would be the hole's delay, not a round trip
    send.push(SegmentFlags.KEY, b"k" * 10, 10, ((3, 8, b"k"),))
    send.drain(2.0)
    send.on_new_ack(140, 2.05)
    assert send.rtt.srtt == pytest.approx(0.05)


def test_sequence_arithmetic_wraps():
    assert seq_add(0xFFFF_FFFF, 2) == 1
    assert seq_diff(1, 0xFFFF_FFFF) == 2 and seq_diff(0xFFFF_FFFF, 1) == -2
    assert seq_diff(0x8000_0000, 0) == -(1 << 31)


def test_token_bucket():
    bucket = TokenBucket(rate=1000, burst=500, now=0.0)
    assert bucket.available(0.0) == 500
    bucket.consume(500, 0.0)
    assert bucket.available(0.25) == 250 and bucket.time_until(500, 0.25) == 0.25
    assert bucket.available(10.0) == 500  # capped at the burst
    assert bucket.time_until(501, 10.0) == math.inf
    unlimited = TokenBucket(rate=0, burst=0, now=0.0)
    assert unlimited.unlimited and unlimited.available(1.0) == math.inf
    assert unlimited.time_until(10**9, 0.0) == 0.0
    with pytest.raises(ValueError):
        TokenBucket(rate=-1, burst=0, now=0.0)


# --- a connection's window reacts to marks, quench and timeouts --------------------------

CONFIG = ConnectionConfig(key_bits=256, keys_per_segment=4, buffer_bits=1 << 22)


def grown_pair() -> Pair:
    pair = Pair(config=CONFIG, delay=0.05)
    pair.start()
    pair.run(0.6)  # slow start for a few round trips
    assert pair.a.send.cc.cwnd >= 16
    return pair


def test_ce_mark_is_echoed_and_halves_the_window_once_with_cwr():
    pair = grown_pair()
    a, b = pair.a, pair.b
    start = len(pair.sent)
    pair.mark_next = 3  # three marks within one window: one congestion episode
    pair.run(pair.now + 0.3)
    sent = pair.sent[start:]
    echoes = [s for src, s in sent if src == "b" and s.flags & SegmentFlags.ECE]
    cwrs = [s for src, s in sent if src == "a" and s.flags & SegmentFlags.CWR]
    assert echoes and len(cwrs) == 1 and cwrs[0].flags & SegmentFlags.KEY
    assert a.send.cc.reductions["ece"] == 1 and a.counters["ece"] == len(echoes)
    assert a.send.cc.ssthresh < math.inf and not a.send.cc.slow_start
    assert not b.recv.ece_echo  # CWR seen: the echo stopped
    last_echo = max(i for i, (src, s) in enumerate(sent) if s.flags & SegmentFlags.ECE)
    first_cwr = next(i for i, (src, s) in enumerate(sent) if s.flags & SegmentFlags.CWR)
    assert last_echo < first_cwr + 2 * a.send.cc.window + 2  # no echo long after the CWR


def test_source_quench_halves_once_per_round_trip():
    pair = grown_pair()
    a = pair.a
    cwnd = a.send.cc.cwnd
    a.congestion_signal(pair.now, "source_quench")
    a.congestion_signal(pair.now + 0.001, "source_quench")
    assert a.send.cc.cwnd == pytest.approx(cwnd / 2)
    assert a.counters["source_quench"] == 2 and a.send.cc.reductions["source_quench"] == 1
    a.congestion_signal(pair.now + 1.0, "source_quench")
    assert a.send.cc.cwnd == pytest.approx(cwnd / 4)


def test_responder_ignores_congestion_signals():
    pair = grown_pair()
    pair.b.congestion_signal(pair.now, "source_quench")
    assert pair.b.counters["source_quench"] == 1 and pair.b.state is State.ESTABLISHED


def test_timeout_drops_the_window_to_one_and_recovers():
    pair = grown_pair()
    pair.loss = 1.0
    pair.run(pair.now + 1.5)
    assert pair.a.send.cc.cwnd == 1 and pair.a.send.stats["rto_expirations"] >= 1
    pair.loss = 0.0
    pair.run(pair.now + 4.0)
    assert pair.a.state is State.ESTABLISHED and pair.a.send.cc.cwnd > 4
    assert pair.taken["a"] == pair.taken["b"][:len(pair.taken["a"])]


def test_three_duplicate_acks_fast_retransmit_and_halve():
    pair = Pair(config=CONFIG, delay=0.05, loss=0.02, seed=5)
    pair.start()
    pair.run(10.0)
    stats = pair.a.send.stats
    assert stats["fast_retransmits"] >= 1
    assert pair.a.send.cc.reductions["fast_retransmit"] == stats["fast_retransmits"]
    assert stats["fast_retransmits"] > stats["rto_expirations"]  # loss mostly repaired fast


def test_token_bucket_limits_even_an_open_window():
    request = ConnectRequest(ServiceClass.GUARANTEED_RATE, 256 * 100, 256 * 4, "app")
    pair = Pair(config=CONFIG, request=request)
    pair.start()
    pair.run(10.0)
    assert 900 <= len(pair.taken["b"]) <= 1004 + 4


# --- fairness: competing flows through one bottleneck -----------------------------------

def test_jain_index():
    assert jain([1.0, 1.0, 1.0]) == 1.0
    assert jain([1.0, 0.0]) == 0.5


@pytest.mark.parametrize("flows,mark", [(2, None), (3, None), (4, None), (2, 6)],
                         ids=["2-drop-tail", "3-drop-tail", "4-drop-tail", "2-ce-marking"])
def test_flows_converge_to_a_fair_share(flows, mark):
    result = simulate_flows(flows, capacity=100.0, buffer=15, delay=0.02, duration=60.0,
                            stagger=2.0, mark_threshold=mark)
    assert result["jain"] > 0.9
    assert result["utilisation"] > 0.7
    assert result["states"] == ["ESTABLISHED"] * flows
    if mark is None:
        assert result["drops"] > 0
    else:
        assert result["marks"] > 0 and result["drops"] == 0

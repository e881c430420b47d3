"""Loss detection under reordering and delay spikes (qbb/transport/recovery.py): D-SACK,
undo, adaptive duplicate-ACK threshold, F-RTO, and real loss still repaired."""

from __future__ import annotations

import math

import pytest

from qbb.errors import DecodeError, EncodeError
from qbb.transport.connection import Closed, ConnectionConfig
from qbb.transport.fastcodec import decode_segment_fast, encode_segment_fast
from qbb.transport.packet import SegmentFlags, decode_segment, encode_segment
from qbb.transport.recovery import MAX_DUPTHRESH, Recovery, decode_dsack, encode_dsack
from transport_sim import Pair, deliver

CONFIG = ConnectionConfig(key_bits=256, keys_per_segment=4, buffer_bits=1 << 16,
                          idle_timeout=1e6)
#: 200 segments/s through one queue, then every second KEY segment 50 ms slower: each
#: late segment is overtaken by about five others (a per-packet load balancer's doing).
TWO_PATHS = {"delay": 0.01, "capacity": 200.0, "paths": (0.0, 0.05), "seed": 3}


def reductions(pair: Pair) -> int:
    return sum(pair.a.send.cc.reductions.values())


def assert_same_keys(pair: Pair) -> None:
    a, b = pair.taken["a"], pair.taken["b"]
    assert a and a == b[:len(a)]
    assert [k.key_id for k in b] == list(range(len(b)))


# --- the D-SACK block ---------------------------------------------------------------------

def test_a_duplicate_key_segment_is_reported_in_a_dsack_block():
    pair = Pair(config=CONFIG)
    pair.start()
    pair.run(1.0)
    key = next(s for src, s in reversed(pair.sent) if src == "a" and s.flags & SegmentFlags.KEY)
    pair.b.segments_to_send(pair.now)
    deliver(pair.b, key, pair.now)  # again: it is behind nxt now
    acks = pair.b.segments_to_send(pair.now)
    block = encode_dsack(key.seq, (key.seq + len(key.payload)) & 0xFFFFFFFF)
    assert [a.payload for a in acks] == [block]
    assert acks[0].flags == SegmentFlags.ACK and pair.b.recv.stats["duplicates"] == 1
    data = encode_segment_fast(acks[0])  # an ACK's payload is opaque to the codec
    assert data == encode_segment(acks[0]) and decode_segment(data) == acks[0]
    assert decode_segment_fast(data) == acks[0] and decode_dsack(acks[0].payload) == (
        key.seq, (key.seq + len(key.payload)) & 0xFFFFFFFF)
    for bad in (b"", bytes(7), bytes(9)):
        with pytest.raises(DecodeError):
            decode_dsack(bad)
    with pytest.raises(EncodeError):
        encode_dsack(-1, 1 << 32)
    before = pair.a.counters["dsack_received"]
    pair.a.receive_segment(acks[0], pair.now)  # not a duplicate ACK for fast retransmit
    assert pair.a.counters["dsack_received"] == before + 1 and pair.a.send.dupacks == 0


# --- reordering ---------------------------------------------------------------------------

def test_reordering_only_channel_adapts_then_never_reduces_the_window():
    pair = Pair(config=CONFIG, **TWO_PATHS)
    pair.start()
    pair.run(10.0)
    learned, sent, keys = reductions(pair), pair.a.send.stats["retransmits"], len(pair.taken["b"])
    cwnd = pair.a.send.cc.cwnd
    assert pair.a.send.recovery.dupthresh > CONFIG.dupack_threshold  # adapted
    assert pair.a.send.cc.undone == learned  # every reduction so far was taken back
    pair.run(40.0)
    assert reductions(pair) == learned and pair.a.send.stats["retransmits"] == sent
    assert pair.a.send.cc.cwnd >= cwnd
    assert pair.b.recv.stats["out_of_order"] > 1000  # it kept reordering all along
    rate = (len(pair.taken["b"]) - keys) / 30.0
    assert rate > 0.95 * 200 * 4  # the queue's capacity: 200 segments of 4 keys per second
    assert_same_keys(pair)


def test_real_loss_on_a_reordering_channel_is_still_repaired():
    pair = Pair(config=CONFIG, loss=0.01, **TWO_PATHS)
    pair.start()
    pair.run(30.0)
    pair.loss = 0.0
    pair.a.close(pair.now)  # what is in flight is still delivered, then both ends close
    pair.run(40.0)
    send = pair.a.send
    assert pair.events["a"][-1] == pair.events["b"][-1] == Closed("closed")
    assert send.stats["keys_acked"] == send.stats["keys_generated"] > 10_000
    assert send.stats["retransmits"] > 2 * pair.b.recv.stats["duplicates"]  # mostly needed
    assert send.cc.reductions["fast_retransmit"] > send.cc.undone  # loss still cuts cwnd
    assert_same_keys(pair)


# --- delay spikes: F-RTO --------------------------------------------------------------------

def test_a_delay_spike_timeout_is_found_spurious_and_undone():
    pair = Pair(config=CONFIG, delay=0.01, capacity=200.0, spike=(3.0, 4.0), seed=3)
    pair.start()
    pair.run(2.9)
    cwnd = pair.a.send.cc.cwnd
    pair.run(6.0)
    send = pair.a.send
    assert send.stats["rto_expirations"] >= 1 and send.recovery.stats["spurious_timeouts"] >= 1
    assert send.cc.undone >= 1 and send.cc.cwnd >= cwnd
    assert send.stats["retransmits"] <= 2 and pair.b.recv.stats["duplicates"] <= 2
    assert_same_keys(pair)


def test_a_real_outage_is_not_undone():
    pair = Pair(config=CONFIG, delay=0.01, capacity=200.0, outage=(3.0, 4.0), seed=3)
    pair.start()
    pair.run(12.0)
    send = pair.a.send
    assert send.stats["rto_expirations"] >= 1 and send.cc.undone == 0
    assert send.recovery.stats["spurious_timeouts"] == 0
    assert send.stats["keys_acked"] > 0 and pair.a.state.value == "ESTABLISHED"
    assert_same_keys(pair)


# --- the rules, one by one ------------------------------------------------------------------

def test_threshold_adapts_to_measured_reordering_within_bounds():
    rec = Recovery(3)
    assert rec.threshold(100) == 3
    rec.begin("fast_retransmit", 20.0, math.inf, False, 1.0)
    rec.retransmitted(1000, 0.9, 1.0)
    rec.new_ack(7)  # seven duplicate ACKs came before the hole was filled
    assert rec.dsack(1000) and rec.undo_due()
    assert rec.dupthresh == 8 and rec.threshold(100) == 8
    assert rec.threshold(5) == 4 and rec.threshold(2) == 3  # never above the flight - 1
    episode = rec.undo()
    assert (episode.prior_cwnd, episode.prior_ssthresh) == (20.0, math.inf)
    rec.begin("fast_retransmit", 20.0, 10.0, False, 2.0)
    rec.retransmitted(5000, 1.9, 2.0)
    rec.new_ack(10_000)
    rec.dsack(5000)
    assert rec.dupthresh == MAX_DUPTHRESH


def test_late_dsack_for_an_older_episode_teaches_without_undoing():
    rec = Recovery(3)
    rec.begin("fast_retransmit", 10.0, math.inf, False, 1.0)
    rec.retransmitted(100, 0.9, 1.0)
    rec.new_ack(5)
    rec.acked(100, 1.0, 0.9, 1.4, min_rtt=0.02, srtt=0.2)  # the original, 0.3 s late
    rec.begin("rto", 5.0, 5.0, False, 2.0)  # a newer episode
    rec.retransmitted(900, 1.5, 2.0)
    assert not rec.dsack(100)  # not the open episode: no undo from it
    assert rec.dupthresh == 6 and not rec.undo_due()
    assert rec.reo_wnd(0.2, 0.02, cap=1.0) == pytest.approx(0.3)  # and the lateness
    assert rec.reo_wnd(0.2, 0.02, cap=0.25) == 0.25  # at most the RTO


def test_ack_too_soon_after_a_retransmission_marks_it_spurious():
    rec = Recovery(3)
    rec.begin("fast_retransmit", 10.0, math.inf, False, 1.0)
    rec.retransmitted(100, 0.9, 1.0)
    rec.acked(100, 1.0, 0.9, 1.004, min_rtt=0.02, srtt=0.03)  # 4 ms after: the original
    assert rec.undo_due()
    rec = Recovery(3)
    rec.begin("fast_retransmit", 10.0, math.inf, False, 1.0)
    rec.retransmitted(100, 0.9, 1.0)
    rec.acked(100, 1.0, 0.9, 1.03, min_rtt=0.02, srtt=0.03)  # a round trip: no evidence
    assert not rec.undo_due() and not rec.stop_retransmitting()


@pytest.mark.parametrize("kind,expected", [("rto", 1.5), ("fast_retransmit", 1.0 + 0.2 + 0.01)])
def test_next_hole_after_a_timeout_goes_at_once_after_a_fast_retransmit_when_overdue(
        kind, expected):
    rec = Recovery(3)
    rec.begin(kind, 10.0, math.inf, False, 1.0)
    assert rec.hole_due(1.0, 1.5, srtt=0.2, min_rtt=0.04, cap=0.5) == pytest.approx(expected)


def test_reordering_window_halves_after_many_episodes_of_real_loss():
    rec = Recovery(3)
    assert rec.reo_wnd(0.2, 0.04, cap=0.5) == pytest.approx(0.01)  # min_rtt / 4
    rec.begin("fast_retransmit", 10.0, math.inf, False, 1.0)
    rec.retransmitted(1, 0.5, 1.0)
    rec.acked(1, 1.0, 0.5, 1.1, min_rtt=0.04, srtt=0.2)  # 0.4 s later than SRTT
    rec.dsack(1)
    assert rec.reo_wnd(0.2, 0.04, cap=1.0) == pytest.approx(0.4)
    for seq in range(100, 115):  # never reported spurious: they were lost
        rec.begin("fast_retransmit", 10.0, math.inf, False, 2.0)
        rec.retransmitted(seq, 1.9, 2.0)
    assert rec.reo_wnd(0.2, 0.04, cap=1.0) == pytest.approx(0.4)
    rec.begin("fast_retransmit", 10.0, math.inf, False, 3.0)  # the sixteenth in a row
    assert rec.reo_wnd(0.2, 0.04, cap=1.0) == pytest.approx(0.2)


def test_frto_holds_after_the_first_partial_ack_and_a_duplicate_confirms_loss():
    rec = Recovery(3)
    rec.begin("rto", 10.0, math.inf, False, 5.0)
    rec.retransmitted(100, 4.0, 5.0)
    assert rec.window(1) == 1
    assert not rec.partial_ack(in_flight=8)  # step 2b: hold, new data instead
    assert rec.window(1) == 10  # two new segments beyond the eight in flight
    assert rec.duplicate_ack(1, 8, 200, now=6.0, reo_wnd=0.05) == 6.05  # step 3a, unless
    assert rec.duplicate_ack(2, 8, 200, now=6.01, reo_wnd=0.05) == 6.05  # an ACK advances
    assert rec.hole_timer()  # nothing advanced in time: the hole is lost, resend it
    assert rec.window(1) == 1 and not rec.undo_due()

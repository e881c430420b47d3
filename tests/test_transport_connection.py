"""QKDTL connections (qbb/transport/connection.py): handshake, key synchronisation,
reliability under faults, close, reset, timeouts, windows and buffers, the token bucket."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from qbb.errors import ConfigError, DecodeError, EncodeError, QbbError
from qbb.transport.conn_recv import unpack_keys
from qbb.transport.conn_send import draw_keys, pack_keys
from qbb.transport.connection import (Closed, Connection, ConnectionConfig, Endpoint,
                                      Established, KeysAvailable, Reset, Role, State,
                                      derive_ksid)
from qbb.transport.packet import (ConnectRequest, KeyDelivery, Segment, SegmentFlags,
                                  ServiceClass, decode_key_deliveries, decode_segment,
                                  encode_key_deliveries, encode_segment)
from qbb.transport.fastcodec import decode_segment_fast, encode_segment_fast
from strategies_transport import mutations, segments
from transport_sim import A_END, B_END, Pair, deliver

SMALL = ConnectionConfig(key_bits=64, keys_per_segment=3, buffer_bits=8 * 4096,
                         rto_initial=0.2, rto_min=0.05, rto_max=2.0, syn_retries=30,
                         data_retries=30, connect_timeout=1000.0, idle_timeout=1000.0,
                         time_wait=1.0)


RATED = ConnectRequest(ServiceClass.BEST_EFFORT, 32_000, 4096, "app")  # 500 keys/s


def make_pair(**kwargs) -> Pair:
    """A pair on the SMALL config with a rate-limited request (keeps the tests quick)."""
    kwargs.setdefault("config", SMALL)
    kwargs.setdefault("request", RATED)
    return Pair(**kwargs)


def key_ids(keys):
    return [k.key_id for k in keys]


def assert_synchronised(pair: Pair) -> None:
    a, b = pair.taken["a"], pair.taken["b"]
    n = min(len(a), len(b))
    assert a[:n] == b[:n]
    assert key_ids(a) == list(range(len(a))) and key_ids(b) == list(range(len(b)))


# --- codec helpers ------------------------------------------------------------------------

@st.composite
def key_lists(draw):
    bits = draw(st.integers(1, 600))
    count = draw(st.integers(1, 6))
    first = draw(st.integers(0, 2**32 - count))
    return draw_keys(first, count, bits, lambda n: draw(st.binary(min_size=n, max_size=n)))


@given(key_lists())
@settings(max_examples=60)
def test_fast_key_payload_matches_codec(keys):
    payload = pack_keys(keys)
    assert payload == encode_key_deliveries(keys)
    assert list(unpack_keys(payload)) == list(decode_key_deliveries(payload)) == keys


@given(key_lists(), st.data())
@settings(max_examples=60)
def test_fast_unpack_agrees_with_codec_on_damaged_payloads(keys, data):
    payload = bytearray(pack_keys(keys))
    cut = data.draw(st.integers(0, len(payload)))
    if data.draw(st.booleans()):
        payload[data.draw(st.integers(0, len(payload) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    payload = bytes(payload[:cut] if data.draw(st.booleans()) else payload)
    try:
        expected = decode_key_deliveries(payload)
    except DecodeError:
        with pytest.raises(DecodeError):
            unpack_keys(payload)
    else:
        assert unpack_keys(payload) == expected


@given(segments())
@settings(max_examples=80)
def test_fast_segment_codec_matches_codec(segment):
    data = encode_segment(segment)
    assert encode_segment_fast(segment) == data
    assert decode_segment_fast(data) == decode_segment(data) == segment


def _outcome(function, argument):
    try:
        return function(argument)
    except (DecodeError, EncodeError) as error:
        return type(error), str(error)


@given(st.one_of(mutations(st.builds(encode_segment, segments())), st.binary(max_size=40)))
@settings(max_examples=80)
def test_fast_segment_decoder_agrees_on_damaged_bytes(data):
    assert _outcome(decode_segment_fast, data) == _outcome(decode_segment, data)


@pytest.mark.parametrize("segment", [
    Segment(70000, 1), Segment(1, 2, seq=-1), Segment(1, 2, flags=SegmentFlags(0x20)),
    Segment(1, 2, flags=SegmentFlags.KEY | SegmentFlags.SYN), Segment(1, 2, payload="x"),
    Segment(1, 2, payload=bytes(70000))])
def test_fast_segment_encoder_raises_the_codec_errors(segment):
    assert _outcome(encode_segment_fast, segment) == _outcome(encode_segment, segment)
    assert _outcome(encode_segment_fast, segment)[0] is EncodeError


def test_draw_keys_zeroes_padding_and_numbers_keys():
    keys = draw_keys(5, 3, 13, lambda n: b"\xff" * n)
    assert key_ids(keys) == [5, 6, 7]
    assert all(k.key == b"\xff\xf8" and k.key_bits == 13 for k in keys)
    assert "key=" not in repr(keys[0])


def test_config_is_validated():
    with pytest.raises(ConfigError):
        ConnectionConfig(key_bits=0)
    with pytest.raises(ConfigError):
        ConnectionConfig(buffer_bits=100)
    with pytest.raises(ConfigError):
        ConnectionConfig(rto_min=2.0, rto_initial=1.0)
    assert ConnectionConfig(key_bits=256, mss=1400).segment_keys == 1400 // 38
    assert ConnectionConfig(key_bits=0xFFFF).segment_keys == 1  # one key over the MSS
    assert ConnectionConfig(key_bits=256, keys_per_segment=4).segment_keys == 4


# --- handshake, synchronisation, ksid -------------------------------------------------

def test_keys_flow_identically_to_both_applications():
    pair = make_pair(isn_a=0xFFFF_FF00, isn_b=0xFFFF_FFF0)  # both wrap quickly
    pair.start()
    pair.run(3.0)
    assert pair.a.state is pair.b.state is State.ESTABLISHED
    assert pair.b.request == pair.request
    assert len(pair.taken["a"]) > 1000
    assert_synchronised(pair)
    assert pair.events["a"][0] == Established() == pair.events["b"][0]
    assert sum(e.count for e in pair.events["b"] if isinstance(e, KeysAvailable)) \
        == len(pair.taken["b"])
    assert pair.a.ksid == pair.b.ksid
    status = json.loads(json.dumps(pair.a.status()))
    assert status["state"] == "ESTABLISHED" and status["keys_acked"] == len(pair.taken["a"])
    assert status["ksid"] == pair.a.ksid and status["keys_taken"] == len(pair.taken["a"])


def test_ksid_derivation():
    a, b, isn = Endpoint("1.1.0.1", 40000), Endpoint("1.2.0.1", 5000), 0x01020304
    material = (b"qbb/ksid/v1" + b"\x071.1.0.1" + (40000).to_bytes(2, "big")
                + b"\x071.2.0.1" + (5000).to_bytes(2, "big") + bytes([1, 2, 3, 4]))
    expected = str(uuid.UUID(bytes=hashlib.sha256(material).digest()[:16], version=4))
    assert derive_ksid(a, b, isn) == expected
    assert derive_ksid(a, b, isn + 1) != expected
    conn = Connection(a, b, Role.INITIATOR, SMALL, isn=isn)
    assert conn.ksid == expected


def test_lost_syn_is_retried():
    pair = make_pair()
    pair.a.open(0.0)
    assert [s.flags for s in pair.a.segments_to_send(0.0)] == [SegmentFlags.SYN]  # lost
    pair.run(0.1)
    assert pair.a.state is State.SYN_SENT
    pair.run(2.0)
    assert pair.a.state is State.ESTABLISHED and pair.a.send.stats["retransmits"] == 1
    assert pair.a.send.rtt.srtt is not None  # the SYN+ACK sampled the RTT (Karn: not the SYN)


def test_syn_retries_exhausted_resets_with_timeout():
    config = ConnectionConfig(rto_initial=1.0, syn_retries=3, connect_timeout=1000.0)
    conn = Connection(A_END, B_END, Role.INITIATOR, config, isn=1)
    conn.open(0.0)
    sent, now = len(conn.segments_to_send(0.0)), 0.0
    while conn.state is not State.CLOSED:
        now = conn.next_timer()
        conn.handle_timer(now)
        sent += len(conn.segments_to_send(now))
    assert sent == 4  # the SYN and three retries, at 0, 1, 3, 7 s; reset at 15 s
    assert now == pytest.approx(15.0)
    assert conn.events() == [Reset("timeout")]
    assert conn.next_timer() is None


def test_connect_timeout():
    conn = Connection(A_END, B_END, Role.INITIATOR, ConnectionConfig(connect_timeout=5.0))
    conn.open(0.0)
    now = 0.0
    while conn.state is not State.CLOSED:
        now = conn.next_timer()
        conn.handle_timer(now)
        conn.segments_to_send(now)
    assert now == pytest.approx(5.0) and conn.events() == [Reset("timeout")]


def test_rejected_syn_resets_the_initiator():
    pair = make_pair()
    pair.a.open(0.0)
    syn = pair.a.segments_to_send(0.0)[0]
    deliver(pair.b, syn, 0.01)
    assert pair.b.state is State.SYN_RECEIVED and pair.b.request.application == "app"
    pair.b.reject(0.01, b"\x01")
    (rst,) = pair.b.segments_to_send(0.01)  # the SYN+ACK was withdrawn
    assert rst.flags & SegmentFlags.RST and pair.b.events() == [Reset("rejected")]
    pair.a.receive_segment(decode_segment(encode_segment(rst)), 0.02)
    assert pair.a.state is State.CLOSED
    assert pair.a.events() == [Reset("refused")] and pair.a.reset_payload == b"\x01"


def test_rst_with_wrong_ack_is_ignored_while_connecting():
    conn = Connection(A_END, B_END, Role.INITIATOR, SMALL, isn=100)
    conn.open(0.0)
    conn.segments_to_send(0.0)
    conn.receive_segment(Segment(B_END.port, A_END.port, 0, 5, SegmentFlags.RST
                                 | SegmentFlags.ACK), 0.01)
    assert conn.state is State.SYN_SENT


def test_abort_resets_the_peer_and_keys_stay_consistent():
    pair = make_pair()
    pair.start()
    pair.run(1.0)
    pair.a.abort(pair.now, "application gone")
    pair.flush()
    pair.run(2.0)
    assert pair.a.state is pair.b.state is State.CLOSED
    assert pair.events["a"][-1] == Reset("application gone")
    assert pair.events["b"][-1] == Reset("reset by peer")
    assert_synchronised(pair)
    assert pair.a.next_timer() is None and pair.b.next_timer() is None


def test_rst_outside_the_window_is_ignored():
    pair = make_pair()
    pair.start()
    pair.run(0.5)
    bogus = Segment(A_END.port, B_END.port, (pair.b.recv.nxt - 10) & 0xFFFFFFFF, 0,
                    SegmentFlags.RST)
    pair.b.receive_segment(bogus, pair.now)
    assert pair.b.state is State.ESTABLISHED


@pytest.mark.parametrize("closer", ["a", "b"])
def test_graceful_close_from_either_end(closer):
    pair = make_pair(loss=0.05, seed=3)
    pair.start()
    pair.run(1.0)
    getattr(pair, closer).close(pair.now)
    pair.flush()
    pair.run(30.0)
    assert pair.a.state is pair.b.state is State.CLOSED
    assert pair.events["a"][-1] == Closed("closed") == pair.events["b"][-1]
    assert len(pair.taken["a"]) == len(pair.taken["b"]) > 0  # every sent key arrived
    assert_synchronised(pair)


def test_simultaneous_close():
    pair = make_pair()
    pair.start()
    pair.run(1.0)
    pair.a.close(pair.now)
    pair.b.close(pair.now)
    assert pair.a.state is pair.b.state is State.FIN_WAIT_1
    pair.flush()
    seen = set()
    while pair.step(10.0):
        seen |= {pair.a.state, pair.b.state}
    assert State.CLOSING in seen and State.TIME_WAIT in seen
    assert pair.a.state is pair.b.state is State.CLOSED
    assert pair.events["a"][-1] == Closed("closed") == pair.events["b"][-1]
    assert_synchronised(pair)


def test_close_before_established():
    conn = Connection(A_END, B_END, Role.INITIATOR, SMALL)
    conn.open(0.0)
    conn.close(0.0)
    assert conn.state is State.CLOSED and conn.events() == [Closed("closed before established")]


def test_idle_timeout_when_the_path_dies():
    config = ConnectionConfig(key_bits=64, idle_timeout=60.0, buffer_bits=8 * 4096)
    pair = Pair(config=config, take_a=False, take_b=False)  # buffers fill, then quiet
    pair.start()
    pair.run(5.0)
    assert pair.a.send.key_segments == 0 and pair.a.state is State.ESTABLISHED
    pair.run(200.0)  # keepalives keep a healthy, stalled connection up
    assert pair.a.state is pair.b.state is State.ESTABLISHED
    assert pair.a.counters["probes"] > 0
    pair.loss = 1.0  # the path dies
    cut = pair.now
    pair.run(cut + 200.0)
    assert pair.events["a"][-1] == Reset("idle timeout") == pair.events["b"][-1]
    assert pair.a.state is pair.b.state is State.CLOSED


def test_data_retries_exhausted():
    pair = make_pair(config=ConnectionConfig(key_bits=64, data_retries=3, rto_max=2.0,
                                             buffer_bits=8 * 4096))
    pair.start()
    pair.run(0.5)
    pair.loss = 1.0
    pair.run(100.0)
    assert pair.events["a"][-1] == Reset("timeout")
    assert pair.a.send.stats["rto_expirations"] == 4


# --- windows, buffers, bucket ---------------------------------------------------------

def test_peer_window_zero_stops_generation_and_reopens():
    pair = make_pair(take_b=False)
    pair.start()
    pair.run(5.0)
    generated = pair.a.send.stats["keys_generated"]
    assert pair.b.keys_available() * 64 <= SMALL.buffer_bits
    assert pair.b.recv.window_field() * 1024 < SMALL.wire_per_key + 1024
    pair.run(50.0)
    assert pair.a.send.stats["keys_generated"] == generated  # stopped
    assert len(pair.taken["a"]) == generated  # everything sent was acked and taken
    pair.taken["b"].extend(pair.b.take_keys(10**6))
    pair.flush()
    pair.run(52.0)
    assert pair.a.send.stats["keys_generated"] > generated
    assert_synchronised(pair)


def test_lost_window_update_is_recovered_by_a_persist_probe():
    pair = make_pair(take_b=False)
    pair.start()
    pair.run(5.0)
    generated = pair.a.send.stats["keys_generated"]
    pair.loss = 1.0
    pair.taken["b"].extend(pair.b.take_keys(200))
    pair.flush()  # the window update is lost
    pair.loss = 0.0
    pair.run(60.0)
    assert pair.a.send.stats["window_probes"] >= 1
    assert pair.a.send.stats["keys_generated"] > generated


def test_buffer_bits_bounds_both_ends_when_nobody_consumes():
    pair = make_pair(take_a=False, take_b=False)
    pair.start()
    pair.run(10.0)
    a, b = pair.a, pair.b
    assert a.keys_available() * 64 + a.send.key_bits_in_flight <= SMALL.buffer_bits
    assert b.keys_available() * 64 <= SMALL.buffer_bits
    # filled to within one window unit (the window is advertised in whole KiB)
    assert a.keys_available() * 8 >= SMALL.buffer_bits // 8 - 1024 - SMALL.wire_per_key
    generated = a.send.stats["keys_generated"]
    pair.run(20.0)
    assert a.send.stats["keys_generated"] == generated
    pair.taken["a"].extend(a.take_keys(10**6))
    pair.taken["b"].extend(b.take_keys(10**6))
    assert_synchronised(pair)


@pytest.mark.parametrize("rate,burst", [(10_000, 2048), (3000, 0)])
def test_token_bucket_bounds_generation(rate, burst):
    request = ConnectRequest(ServiceClass.BEST_EFFORT, rate, burst, "app")
    pair = make_pair(request=request)
    pair.start()
    pair.run(20.0)
    bits = pair.a.send.stats["keys_generated"] * 64
    sigma = burst or 64 * SMALL.segment_keys
    assert bits <= sigma + rate * 20.0
    assert bits >= 0.9 * rate * 19.0
    assert_synchronised(pair)


def test_large_keys_travel_one_per_segment():
    config = ConnectionConfig(key_bits=0xFFFF, buffer_bits=1 << 20)
    pair = Pair(config=config)
    pair.start()
    pair.run(1.0)
    assert len(pair.taken["a"]) > 10
    assert all(len(k.key) == 8192 and k.key[-1] & 1 == 0 for k in pair.taken["a"])
    assert_synchronised(pair)


def test_unreachable_is_fatal_only_while_connecting():
    conn = Connection(A_END, B_END, Role.INITIATOR, SMALL)
    conn.open(0.0)
    conn.unreachable(0.1, "no route")
    assert conn.state is State.CLOSED and conn.events() == [Reset("no route")]
    pair = make_pair()
    pair.start()
    pair.run(0.5)
    pair.a.unreachable(pair.now, "no route")
    assert pair.a.state is State.ESTABLISHED and pair.a.counters["unreachable"] == 1


def test_bad_key_sequence_aborts():
    pair = make_pair()
    pair.start()
    pair.run(0.2)
    b = pair.b
    bad = KeyDelivery(b.recv.keys.next_id + 5, 64, bytes(8))
    segment = Segment(A_END.port, B_END.port, b.recv.nxt, b.send.nxt,
                      SegmentFlags.KEY | SegmentFlags.ACK, 4, encode_key_deliveries([bad]))
    b.receive_segment(segment, pair.now)
    assert b.state is State.CLOSED
    assert b.events()[-1] == Reset("protocol error: bad key sequence")


def test_misuse_raises():
    responder = Connection(B_END, A_END, Role.RESPONDER, SMALL)
    with pytest.raises(QbbError):
        responder.open(0.0)
    with pytest.raises(QbbError):
        responder.reject(0.0)
    initiator = Connection(A_END, B_END, Role.INITIATOR, SMALL)
    with pytest.raises(QbbError):
        initiator.accept_syn(Segment(1, 2, flags=SegmentFlags.SYN), 0.0)
    with pytest.raises(ValueError):
        initiator.congestion_signal(0.0, "bogus")


# --- faults: lossy, duplicating, reordering, corrupting channels -------------------------

@pytest.mark.parametrize("loss,dup,reorder,corrupt", [(0.1, 0.0, 0.0, 0.0), (0.0, 0.2, 0.0, 0.0),
                                                     (0.0, 0.0, 0.3, 0.0), (0.05, 0.05, 0.1, 0.05)])
def test_faulty_channel_keeps_keys_consistent(loss, dup, reorder, corrupt):
    pair = make_pair(loss=loss, duplicate=dup, reorder=reorder, corrupt=corrupt, seed=11)
    pair.start()
    pair.run(5.0)
    assert pair.a.state is State.ESTABLISHED and len(pair.taken["a"]) > 100
    assert_synchronised(pair)
    pair.loss = pair.duplicate = pair.reorder = pair.corrupt = 0.0
    pair.a.close(pair.now)
    pair.flush()
    pair.run(pair.now + 60.0)
    assert pair.a.state is pair.b.state is State.CLOSED
    assert len(pair.taken["a"]) == len(pair.taken["b"]) == pair.a.send.stats["keys_generated"]
    assert_synchronised(pair)


def test_fin_that_does_not_acknowledge_the_syn_ack_is_dropped():
    pair = make_pair()
    pair.a.open(0.0)
    deliver(pair.b, pair.a.segments_to_send(0.0)[0], 0.01)
    b = pair.b
    fin = Segment(A_END.port, B_END.port, b.recv.nxt, b.send.una,
                  SegmentFlags.FIN | SegmentFlags.ACK, 4)
    b.receive_segment(fin, 0.02)
    assert b.state is State.SYN_RECEIVED and b.counters["dropped_handshake"] == 1


def test_nothing_is_accepted_after_the_peers_fin():
    pair = make_pair()
    pair.start()
    pair.run(0.3)
    pair.b.close(pair.now)
    pair.flush()
    pair.run(pair.now + 0.015)  # the FIN reached a, which answered with its own FIN
    a = pair.a
    assert a.state is State.LAST_ACK
    for flags in (SegmentFlags.FIN | SegmentFlags.ACK, SegmentFlags.KEY | SegmentFlags.ACK):
        payload = pack_keys(draw_keys(a.recv.keys.next_id, 1, 64, bytes)) \
            if flags & SegmentFlags.KEY else b""
        a.receive_segment(Segment(B_END.port, A_END.port, a.recv.nxt, a.send.una, flags, 4,
                                  payload), pair.now)
    assert a.state is State.LAST_ACK and a.counters["dropped_after_fin"] == 1
    assert a.counters["dropped_protocol"] == 1  # keys never flow towards the initiator
    pair.run(pair.now + 5.0)
    assert a.state is State.CLOSED and pair.events["a"][-1] == Closed("closed")


@st.composite
def forged_segments(draw):
    """(end, segment builder): a segment near the end's current sequence space."""
    end = draw(st.sampled_from("ab"))
    flags = SegmentFlags(draw(st.sampled_from([0x10, 0x11, 0x18, 0x19, 0x14, 0x04, 0x12, 0x02,
                                              0x01, 0x08, 0x58, 0x98, 0x50])))
    deltas = st.one_of(st.just(0), st.integers(-3, 3), st.integers(-3000, 3000))
    seq_delta, ack_delta, window = draw(deltas), draw(deltas), draw(st.integers(0, 70))
    count, id_delta = draw(st.integers(1, 3)), draw(st.integers(-2, 2))

    def build(conn: Connection) -> Segment:
        payload = b""
        if flags & SegmentFlags.KEY:
            first = max(0, conn.recv.keys.next_id + id_delta)
            payload = pack_keys(draw_keys(first, count, 64, lambda n: bytes(n)))
        return Segment(conn.remote.port, conn.local.port, (conn.recv.nxt + seq_delta) % 2**32,
                       (conn.send.una + ack_delta) % 2**32, flags, window, payload)
    return end, build


@given(st.lists(forged_segments(), max_size=25), st.sampled_from(["", "a", "b"]),
       st.booleans())
@settings(max_examples=40)
def test_arbitrary_segments_never_raise(forged, closer, established):
    """Whatever arrives (the transport trusts Q3P for authenticity, so forged keys may be
    taken as genuine), a connection never raises and never leaves its state table."""
    pair = make_pair()
    pair.start()
    pair.run(0.3 if established else 0.015)
    if closer:
        getattr(pair, closer).close(pair.now)
    for end, build in forged:
        conn = getattr(pair, end)
        if conn.ksid is None:
            continue
        conn.receive_segment(build(conn), pair.now)
        pair.flush()
        pair.step(pair.now + 0.004)
    pair.take_a = pair.take_b = False  # buffers fill and the stream goes quiet
    pair.run(pair.now + 30.0)
    assert pair.a.state is not State.SYN_RECEIVED and pair.b.state is not State.SYN_SENT


class FaultyChannelMachine(RuleBasedStateMachine):
    """Two connection ends and two queues of encoded segments under adversarial control."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.queues = {"a": [], "b": []}  # segments on their way *to* a / b
        self.taken = {"a": [], "b": []}
        self.events = {"a": [], "b": []}
        self.a = self.b = None

    @initialize(isn_a=st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 2000, 2**32 - 1)),
                isn_b=st.integers(0, 2**32 - 1))
    def start(self, isn_a, isn_b):
        self.a = Connection(A_END, B_END, Role.INITIATOR, SMALL, isn=isn_a,
                            request=ConnectRequest(ServiceClass.BEST_EFFORT, 0, 0, "app"))
        self.b = Connection(B_END, A_END, Role.RESPONDER, SMALL, isn=isn_b)
        self.a.open(self.now)
        self.flush()

    def conn(self, name):
        return self.a if name == "a" else self.b

    def flush(self):
        for name, other in (("a", "b"), ("b", "a")):
            conn = self.conn(name)
            self.queues[other].extend(encode_segment_fast(s)
                                      for s in conn.segments_to_send(self.now))
            self.events[name].extend(conn.events())

    def pick(self, name, index):
        queue = self.queues[name]
        return queue.pop(index % len(queue))

    @rule(name=st.sampled_from("ab"), index=st.integers(0, 50),
          fault=st.sampled_from(["none"] * 6 + ["drop", "duplicate", "corrupt"]),
          bit=st.integers(0, 2**20))
    @precondition(lambda self: any(self.queues.values()))
    def deliver(self, name, index, fault, bit):
        """Deliver one queued segment (any of them: reordering), perhaps with a fault."""
        if not self.queues[name]:
            return
        raw = self.pick(name, index)
        if fault == "drop":
            return
        if fault == "duplicate":
            self.queues[name].append(raw)
        if fault == "corrupt":
            bit %= len(raw) * 8
            raw = bytes(b ^ (1 << (bit % 8)) if i == bit // 8 else b for i, b in enumerate(raw))
        try:
            segment = decode_segment_fast(raw)
        except DecodeError:
            return
        deliver(self.conn(name), segment, self.now)
        self.flush()

    @rule()
    @precondition(lambda self: any(self.queues.values()))
    def deliver_all_in_order(self):
        for name in "ab":
            while self.queues[name]:
                deliver(self.conn(name), decode_segment_or_none(self.pick(name, 0)), self.now)
                self.flush()

    @rule(dt=st.floats(0.01, 3.0))
    def advance(self, dt):
        self.now += dt
        for conn in (self.a, self.b):
            due = conn.next_timer()
            if due is not None and due <= self.now:
                conn.handle_timer(self.now)
        self.flush()

    @rule(name=st.sampled_from("ab"), n=st.integers(1, 40))
    def take(self, name, n):
        self.taken[name].extend(self.conn(name).take_keys(n))
        self.flush()

    @rule(name=st.sampled_from("ab"), how=st.sampled_from(["close"] * 3 + ["abort"]))
    @precondition(lambda self: len(self.taken["b"]) >= 10)
    def close(self, name, how):
        if how == "close":
            self.conn(name).close(self.now)
        else:
            self.conn(name).abort(self.now, "test")
        self.flush()

    @invariant()
    def keys_are_synchronised(self):
        a = self.taken["a"] + self.a.recv.keys.peek()
        b = self.taken["b"] + self.b.recv.keys.peek()
        assert len(a) <= len(b)  # the initiator released only what the responder acked
        assert a == b[:len(a)]
        assert key_ids(b) == list(range(len(b)))  # no id twice, none skipped
        assert self.a.state is not State.SYN_RECEIVED and self.b.state is not State.SYN_SENT
        assert self.a.send.key_bits_in_flight + self.a.recv.keys.bits <= SMALL.buffer_bits

    def teardown(self):
        self.heal(120.0)  # nobody takes keys here: the buffers fill and generation stops
        if self.a.state is State.ESTABLISHED and self.b.state is State.ESTABLISHED:
            assert self.a.send.key_segments == 0  # everything generated was acknowledged
            assert self.a.recv.keys.released == self.b.recv.keys.released \
                == self.a.send.stats["keys_generated"]
        for name in "ab":
            self.taken[name].extend(self.conn(name).take_keys(10**6))
        self.keys_are_synchronised()
        self.a.close(self.now)
        self.b.close(self.now)
        self.flush()
        self.heal(5000.0)
        assert self.a.state is State.CLOSED and self.b.state is State.CLOSED
        for name in "ab":
            ends = [e for e in self.events[name] if isinstance(e, (Closed, Reset))]
            assert len(ends) == (1 if self.conn(name).ksid else 0)  # one terminal event

    def heal(self, span: float) -> None:
        """Deliver everything in order without faults; let timers run for ``span`` seconds."""
        end = self.now + span
        for _ in range(100_000):
            for name in "ab":
                while self.queues[name]:
                    segment = decode_segment_or_none(self.pick(name, 0))
                    deliver(self.conn(name), segment, self.now)
                    self.flush()
            if any(self.queues.values()):
                continue
            times = [t for t in (self.a.next_timer(), self.b.next_timer()) if t is not None]
            if not times or min(times) > end:
                self.now = end
                return
            self.now = max(self.now, min(times))
            for conn in (self.a, self.b):
                due = conn.next_timer()
                if due is not None and due <= self.now:
                    conn.handle_timer(self.now)
            self.flush()
        raise AssertionError("the connections never settled")


def decode_segment_or_none(raw: bytes) -> Segment:
    try:
        return decode_segment_fast(raw)
    except DecodeError:
        return Segment(0, 0)  # wrong ports: the connection drops it


FaultyChannelMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=40,
                                                  deadline=None)
TestFaultyChannel = FaultyChannelMachine.TestCase

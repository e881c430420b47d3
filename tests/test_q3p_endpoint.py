"""Scenario tests of the sans-IO Q3P endpoint (``qbb.q3p.endpoint``) over ``q3p_sim``."""

from __future__ import annotations

import os
import struct

from hypothesis import given
from hypothesis import strategies as st

from q3p_sim import IDS, Channel, LinkSim
from qbb.q3p.config import LinkConfig
from qbb.q3p.endpoint import Q3PEndpoint
from qbb.q3p.events import Delivered, KeyStarved, LinkDown, LinkUp
from qbb.q3p.keystore import KeyStoreConfig, LinkKeyStore
from qbb.q3p.packet import FLAG_A, FLAG_E, Command, decode_frame
from strategies_q3p import frame_bytes, mutated


def up_sim(seed: int = 0, **options: object) -> LinkSim:
    sim = LinkSim(seed, **options)
    sim.run(0.5)
    assert sim.nodes["A"].endpoint.state == sim.nodes["B"].endpoint.state == "up"
    return sim


def data_frames(sim: LinkSim, dest: str) -> list[bytes]:
    return [data for to, data in sim.tap if to == dest and data[10] == Command.DATA]


def test_handshake_and_delivery() -> None:
    sim = up_sim()
    assert sim.link_events("A") == [LinkUp(IDS["B"])]
    assert sim.link_events("B") == [LinkUp(IDS["A"])]
    for i in range(20):
        assert sim.send("A", 100 * i, channel=i % 2, encrypt=bool(i % 3))
        assert sim.send("B", 10)
    sim.settle()
    sim.check_delivery(complete=True)
    sim.check_keys()
    for node in "AB":
        sim.ledger.check_gets_were_taken(node)
        assert not sim.nodes[node].endpoint.counters  # a clean channel: nothing dropped
    status = sim.nodes["A"].endpoint.status()
    assert status["state"] == "up" and status["snd_nxt"] > 20 and status["srtt"] > 0


def test_faulty_channel_large_messages_exactly_once() -> None:
    channel = Channel(loss=0.15, duplicate=0.1, reorder=0.3, corrupt=0.05)
    sim = up_sim(3, channel=channel, mtu=9000)
    for i in range(30):
        sim.send("A", 40_000 + i, channel=i % 3, priority=i % 8, encrypt=True)
        sim.send("B", 500, channel=2, encrypt=i % 2 == 0)
    sim.settle()
    sim.check_delivery(complete=True)
    sim.check_keys()
    sim.ledger.check_gets_were_taken("A")
    sim.ledger.check_gets_were_taken("B")
    counters = sim.nodes["B"].endpoint.counters
    assert counters["duplicate"] and counters["auth.bad_tag"] + counters["malformed"]
    assert sim.nodes["A"].endpoint.counters["retransmit"]
    assert all(len(data) <= 9000 for _, data in sim.tap)


def test_encrypted_payload_never_in_clear() -> None:
    sim = up_sim()
    secret = b"key material " * 20
    sim.nodes["A"].endpoint.send(secret, sim.now, encrypt=True)
    sim.settle()
    assert sim.nodes["B"].delivered == [(0, secret)]
    frames = data_frames(sim, "B")
    assert frames and all(f[8] & FLAG_E and f[8] & FLAG_A for f in frames)
    assert all(b"key material" not in f for _, f in sim.tap)


def test_priorities_leave_first() -> None:
    sim = LinkSim(1)
    for i in range(6):
        sim.send("A", 50, channel=0, priority=0)
    sim.send("A", 50, channel=1, priority=6)
    sim.send("A", 50, channel=2, priority=7)
    sim.settle()
    sim.check_delivery(complete=True)
    first = [decode_frame(f) for f in data_frames(sim, "B")][:3]
    assert [(f.channel, f.priority) for f in first] == [(2, 7), (1, 6), (0, 0)]
    controls = [decode_frame(d) for to, d in sim.tap if to == "B" and d[10] != Command.DATA]
    assert all(f.priority == 7 for f in controls)


def test_attacks_are_rejected_and_counted() -> None:
    sim = up_sim()
    sim.send("A", 300, encrypt=True)
    sim.settle()
    delivered = data_frames(sim, "B")[0]
    sim.channel = Channel(loss=1.0)
    sim.send("A", 300, encrypt=True)  # intercepted: its key is still unused at B
    fresh = data_frames(sim, "B")[-1]
    sim.channel = Channel()
    endpoint = sim.nodes["B"].endpoint
    forged_at = sim.nodes["A"].endpoint.store.positions().enc_next + 64
    flip = bytearray(fresh)
    flip[40] ^= 1
    attacks = [
        ("key.already_used", delivered),  # replay of a delivered frame
        ("malformed", fresh[:-3]),  # truncated
        ("malformed", fresh + b"\0"),  # extended
        ("auth.bad_tag", bytes(flip)),  # bit flip in the ciphertext
        ("auth.bad_tag", _forged(forged_at)),  # names unused key
        ("unauthenticated", struct.pack(">IIBBBBQQ", 28, 9, 0, 1, 0, 0, 0, 0)),
        ("stale", _forged(offset=0)),  # names key from before the session
    ]
    for reason, data in attacks:
        before = endpoint.counters[reason]
        sim.inject("B", data)
        sim.run(0.001)
        assert endpoint.counters[reason] == before + 1, reason
    # no attack consumed key: B used only what A took, and not the forged frame's range
    sim.ledger.check_gets_were_taken("B")
    assert (forged_at, 32) not in sim.ledger.got["B"]
    assert (decode_frame(fresh).a_offset, 32) not in sim.ledger.got["B"]
    assert not sim.nodes["B"].delivered[1:]
    sim.inject("B", fresh)  # the genuine frame still verifies
    sim.settle()
    assert len(sim.nodes["B"].delivered) == 2
    sim.check_delivery(complete=True)


def _forged(offset: int) -> bytes:
    payload = b"forged"
    header = struct.pack(">IIBBBBQQ", 28 + len(payload) + 16, 0, FLAG_A, 1, 0, 0, 0, offset)
    return header + payload + os.urandom(16)


def test_key_starvation_and_recovery() -> None:
    sim = LinkSim(2, rate_bps=16_000, start=0.0)  # 2 kB/s of key for both directions
    sim.run(3.0)
    sim.send("A", 20_000, encrypt=True)
    sim.run(5.0)
    events = sim.link_events("A")
    assert KeyStarved(True) in events
    sim.settle(limit=120.0)
    sim.check_delivery(complete=True)
    assert sim.link_events("A")[-1] == KeyStarved(False) or not sim.nodes["A"].endpoint._starved
    sim.check_keys()


def test_dead_interval_and_recovery() -> None:
    sim = up_sim(4)
    sim.channel = Channel(loss=1.0)
    sim.send("A", 1000)
    sim.run(6.0)
    assert LinkDown(IDS["B"], "dead interval") in sim.link_events("A")
    assert sim.nodes["A"].endpoint.state == "handshaking"
    sim.channel = Channel()
    sim.settle()
    assert sim.link_events("A")[-1] == LinkUp(IDS["B"])
    sim.check_delivery(complete=True)  # the session survived: nothing lost, nothing twice
    assert sim.nodes["B"].endpoint.counters.get("peer.restart") is None


def test_restart_resynchronises_without_key_reuse() -> None:
    sim = up_sim(5, channel=Channel(loss=0.1, reorder=0.2))
    for i in range(40):
        sim.send("A", 3000, channel=i % 2, encrypt=True)
        sim.send("B", 200, encrypt=True)
    sim.run(0.05)
    sim.crash("B")
    sim.settle()
    assert LinkDown(IDS["B"], "peer restarted") in sim.link_events("A")
    assert sim.link_events("A")[-1] == LinkUp(IDS["B"])
    assert sim.nodes["A"].endpoint.counters["peer.restart"] == 1
    for i in range(10):
        sim.send("B", 100 + i, encrypt=True)
    sim.settle()
    sim.check_delivery(complete=True)
    sim.check_keys()  # the new instance took no key the old one had used
    sim.crash("A")
    sim.crash("B")
    sim.send("A", 5000, encrypt=True)
    sim.settle()
    sim.check_delivery(complete=True)
    sim.check_keys()


def test_handshake_parameters_must_match() -> None:
    sim = LinkSim(6)
    sim.nodes["B"].endpoint.store.config = KeyStoreConfig(False, key_ratio=400)
    sim.run(2.0)
    assert sim.nodes["A"].endpoint.state == "handshaking"
    assert sim.nodes["A"].endpoint.counters["handshake.mismatch"] > 0


def test_mtu_is_the_smaller_one() -> None:
    sim = LinkSim(7, mtu=600)
    sim.nodes["A"].endpoint.config = LinkConfig(IDS["A"], IDS["B"], 7, mtu=3000)
    sim.run(1.0)
    sim.send("A", 5000)
    sim.settle()
    sim.check_delivery(complete=True)
    assert max(len(d) for to, d in sim.tap if to == "B") <= 600


def test_send_backpressure_and_bad_arguments() -> None:
    sim = LinkSim(8, queue_messages=3, max_message=1000)
    endpoint = sim.nodes["A"].endpoint
    assert not endpoint.send(b"x", 0.0, priority=8)
    assert not endpoint.send(b"x", 0.0, channel=256)
    assert not endpoint.send("text", 0.0)  # type: ignore[arg-type]
    assert not endpoint.send(b"x" * 1001, 0.0)
    assert all(endpoint.send(b"x", 0.0) for _ in range(3))
    assert not endpoint.send(b"x", 0.0)
    assert endpoint.counters["send.queue_full"] == 1 and endpoint.counters["send.invalid"] == 4


def test_unauthenticated_data_when_allowed() -> None:
    sim = up_sim(9, authenticate_all=False)
    sim.send("A", 100)
    sim.send("A", 100, encrypt=True)
    sim.settle()
    sim.check_delivery(complete=True)
    flags = [f[8] for f in data_frames(sim, "B")]
    assert flags[0] & FLAG_A == 0 and flags[1] & FLAG_A and flags[1] & FLAG_E


def test_close_and_not_started() -> None:
    sim = up_sim(10)
    sim.nodes["A"].endpoint.close(sim.now, "maintenance")
    assert sim.nodes["A"].endpoint.state == "down"
    sim.flush("A")
    sim.run(0.2)
    assert sim.link_events("B")[-1] == LinkDown(IDS["A"], "peer sent CLOSE: maintenance")
    assert sim.nodes["A"].endpoint.next_timer() is None
    store = LinkKeyStore(KeyStoreConfig(True))
    idle = Q3PEndpoint(LinkConfig(IDS["A"], IDS["B"], 1), store)
    idle.receive_datagram(b"junk", 0.0)
    assert idle.counters == {"not_started": 1} and idle.datagrams_to_send(0.0) == []


def test_starved_endpoint_without_devices() -> None:
    store = LinkKeyStore(KeyStoreConfig(True))
    endpoint = Q3PEndpoint(LinkConfig(IDS["A"], IDS["B"], 1), store)
    endpoint.start(0.0)
    assert endpoint.datagrams_to_send(0.0) == []
    assert endpoint.events() == [KeyStarved(True)]
    store.ingest(os.urandom(4096))
    endpoint.advance_keys(0.1)
    out = endpoint.datagrams_to_send(0.1)
    assert len(out) == 1 and decode_frame(out[0]).command == Command.HANDSHAKE
    assert endpoint.events() == [KeyStarved(False)]


_RECEIVER = None


def _receiver() -> Q3PEndpoint:
    global _RECEIVER
    if _RECEIVER is None:
        sim = up_sim(11)
        _RECEIVER = sim.nodes["B"].endpoint
    return _RECEIVER


@given(data=st.binary(max_size=200) | frame_bytes() | mutated(frame_bytes()))
def test_no_input_escapes(data: bytes) -> None:
    endpoint = _receiver()
    endpoint.receive_datagram(data, 1.0)
    endpoint.handle_timer(1.0)
    endpoint.datagrams_to_send(1.0)
    assert not endpoint.counters.get("internal_error")
    assert all(not isinstance(e, Delivered) for e in endpoint.events())

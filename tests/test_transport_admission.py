"""Admission control of the guaranteed-rate class (qbb/transport/admission.py), sans-IO."""

from __future__ import annotations

import pytest

from qbb.netlayer.icmp import DestinationUnreachable, UnreachableCode, decode_icmp
from qbb.netlayer.packet import QKDNLPacket, decode_packet, encode_packet
from qbb.transport.admission import AdmissionControl, FlowKey
from qbb.transport.packet import (ConnectRequest, Segment, SegmentFlags, ServiceClass,
                                  encode_connect_request, encode_segment)
from qbb.wire import PROTO_ICMP, PROTO_QKDTL

A, C = "1.1.0.1", "1.1.0.9"
RATES = {"if-ab": 10_000.0, "if-ae": 4_000.0}


def control(**kwargs) -> AdmissionControl:
    return AdmissionControl(RATES.__getitem__, **kwargs)


def syn(sport: int, rate: int, service=ServiceClass.GUARANTEED_RATE, flags=SegmentFlags.SYN,
        src: str = A) -> QKDNLPacket:
    body = encode_connect_request(ConnectRequest(service, rate, rate, "app"))
    segment = Segment(sport, 1024, 1000, 0, flags, 4, body)
    return QKDNLPacket(src, C, PROTO_QKDTL, encode_segment(segment))


def segment(sport: int, flags: SegmentFlags, src: str = A, dst: str = C, dport: int = 1024):
    ports = (sport, dport) if src == A else (dport, sport)
    return QKDNLPacket(src, dst, PROTO_QKDTL, encode_segment(Segment(*ports, 5, 6, flags, 4)))


def test_reservations_up_to_the_fraction_of_the_key_rate_then_refusal():
    adm = control()  # capacity 5000 bit/s on if-ab, 2000 on if-ae
    assert adm.capacity("if-ab") == 5000.0
    assert adm.check_syn(syn(50000, 2000), "if-ab", 0.0)
    assert adm.check_syn(syn(50001, 3000), "if-ab", 0.0)
    assert not adm.check_syn(syn(50002, 1), "if-ab", 0.0)
    assert adm.reserved_bps("if-ab", 0.0) == 5000.0
    assert adm.check_syn(syn(50002, 2000), "if-ae", 0.0)  # other link, own table
    assert not adm.check_syn(syn(50003, 2001), "if-ae", 0.0)
    assert adm.check_syn(syn(50000, 2000), "if-ab", 1.0)  # retransmitted SYN: refresh only
    assert adm.reserved_bps("if-ab", 1.0) == 5000.0
    assert adm.counters["admitted"] == 3 and adm.counters["refused"] == 2


def test_best_effort_syn_acks_and_other_packets_pass_untouched():
    adm = control()
    assert adm.check_syn(syn(50000, 10 ** 6, ServiceClass.BEST_EFFORT), "if-ab", 0.0)
    assert adm.check_syn(syn(50000, 10 ** 6, flags=SegmentFlags.SYN | SegmentFlags.ACK),
                         "if-ab", 0.0)
    assert adm.check_syn(segment(50000, SegmentFlags.ACK), "if-ab", 0.0)
    assert adm.check_syn(QKDNLPacket(A, C, PROTO_QKDTL, b"\x00" * 7), "if-ab", 0.0)
    assert adm.check_syn(QKDNLPacket(A, C, PROTO_ICMP, b"x"), "if-ab", 0.0)
    assert adm.reservations == {} and adm.counters["malformed"] == 1
    assert not adm.check_syn(syn(50000, 0), "if-ab", 0.0)  # guaranteed needs a rate


def test_bytes_are_accepted_as_well_as_packets():
    adm = control()
    assert adm.check_syn(encode_packet(syn(50000, 5000)), "if-ab", 0.0)
    assert not adm.check_syn(encode_packet(syn(50001, 1)), "if-ab", 0.0)
    assert adm.check_syn(b"not a packet", "if-ab", 0.0)


@pytest.mark.parametrize("flag", [SegmentFlags.FIN | SegmentFlags.ACK, SegmentFlags.RST])
@pytest.mark.parametrize("from_responder", [False, True])
def test_fin_or_rst_in_either_direction_releases(flag, from_responder):
    adm = control()
    assert adm.check_syn(syn(50000, 5000), "if-ab", 0.0)
    src, dst = (C, A) if from_responder else (A, C)
    adm.observe(segment(50000, flag, src, dst), "if-x", 1.0)
    assert adm.reservations == {} and adm.counters["released"] == 1
    assert adm.check_syn(syn(50001, 5000), "if-ab", 1.0)


def test_soft_state_expires_unless_refreshed_by_traffic():
    adm = control(timeout=10.0)
    assert adm.check_syn(syn(50000, 3000), "if-ab", 0.0)
    assert adm.check_syn(syn(50001, 2000), "if-ab", 0.0)
    for t in range(1, 30, 5):  # 50000 keeps sending; 50001 falls silent
        adm.observe(segment(50000, SegmentFlags.KEY | SegmentFlags.ACK), "if-ab", float(t))
        adm.observe(segment(50000, SegmentFlags.ACK, C, A), "if-back", float(t))
    assert adm.reserved_bps("if-ab", 30.0) == 3000.0
    assert adm.counters["expired"] == 1
    assert adm.check_syn(syn(50002, 2000), "if-ab", 30.0)
    assert adm.reserved_bps("if-ab", 45.0) == 0.0


def test_rerouted_flow_moves_its_reservation():
    adm = control()
    assert adm.check_syn(syn(50000, 2000), "if-ab", 0.0)
    adm.observe(segment(50000, SegmentFlags.KEY), "if-ae", 1.0)
    assert adm.reserved_bps("if-ab", 1.0) == 0.0 and adm.reserved_bps("if-ae", 1.0) == 2000.0
    assert adm.counters["moved"] == 1


def test_direct_reserve_and_release_by_flow_key():
    adm = control()
    flow = FlowKey(A, 50000, C, 1024)
    assert adm.reserve(flow, 4000, "if-ab", 0.0)
    assert not adm.reserve(FlowKey(A, 50001, C, 1024), 1001, "if-ab", 0.0)
    assert adm.release(flow.reversed()) and not adm.release(flow)
    assert adm.status(0.0)["reservations"] == 0


def test_refusal_is_icmp_destination_unreachable_code_13_quoting_the_syn():
    adm = control()
    refused = syn(50000, 9000)
    reply = adm.refusal("1.1.0.5", refused)
    assert (reply.source, reply.destination, reply.protocol) == ("1.1.0.5", A, PROTO_ICMP)
    message = decode_icmp(reply.payload)
    assert isinstance(message, DestinationUnreachable)
    assert message.code == UnreachableCode.ADMINISTRATIVELY_PROHIBITED
    raw = encode_packet(refused)
    assert message.original == raw[:28]
    assert decode_packet(encode_packet(reply)) == reply
    assert adm.refusal("1.1.0.5", raw) == reply

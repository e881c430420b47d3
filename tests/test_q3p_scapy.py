"""Scapy dissection of Q3P frames agrees with qbb.q3p.packet, and scapy-built frames decode."""

import pytest
from hypothesis import given, strategies as st
from scapy.all import raw
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Padding, Raw

from qbb.q3p.packet import (
    Ack, Command, Handshake, Notice, Q3PFrame, Sync, decode_body, decode_frame, encode_frame,
)
from qbb.q3p.scapy_layers import (
    Q3P, Q3PAck, Q3PCiphertext, Q3PHandshake, Q3PNotice, Q3PSync,
)
from qbb.wire import Q3P_UDP_PORT
from strategies_q3p import frames, mutated, well_formed_frames

LAYER_OF = {Ack: Q3PAck, Handshake: Q3PHandshake, Sync: Q3PSync, Notice: Q3PNotice}


def header_fields(pkt: Q3P) -> dict:
    return dict(
        message_number=pkt.message_number, command=pkt.cmd, tag=pkt.tag if pkt.flags.A else None,
        encrypted=bool(pkt.flags.E), more_fragments=bool(pkt.flags.M), priority=pkt.priority,
        channel=pkt.channel, e_offset=pkt.e_offset, a_offset=pkt.a_offset, version=pkt.version,
    )


def body_fields(layer) -> dict:
    fields = {name: layer.getfieldval(name) for name in ("cumulative", "window", "sack",
              "node_id", "link_id", "session_nonce", "mtu", "enc_next", "dec_next",
              "key_ratio", "discarded", "reason") if name in layer.fields}
    if "text" in layer.fields:
        fields["text"] = layer.text.decode("utf-8")
    return fields


def check_dissection(frame: Q3PFrame, pkt: Q3P) -> None:
    expected = {name: getattr(frame, name) for name in header_fields(pkt)}
    assert header_fields(pkt) == expected
    assert pkt.length == len(encode_frame(frame))
    assert raw(pkt.payload) == frame.payload
    assert Padding not in pkt


@given(well_formed_frames())
def test_dissection_matches_decoder(frame):
    data = encode_frame(frame)
    pkt = Q3P(data)
    check_dissection(frame, pkt)
    assert raw(pkt) == data
    if frame.encrypted:
        assert pkt[Q3PCiphertext].ciphertext == frame.payload
    elif frame.command == Command.DATA:
        assert isinstance(pkt.payload, IP) and raw(pkt[IP]) == frame.payload
    else:
        body = decode_body(frame.command, frame.payload)
        layer = pkt[LAYER_OF[type(body)]]
        assert body_fields(layer) == {k: v for k, v in vars(body).items()}


@given(frames())
def test_tag_is_a_field_not_padding(frame):
    pkt = Q3P(encode_frame(frame))
    assert (pkt.tag if pkt.flags.A else None) == frame.tag
    assert raw(pkt.payload) == frame.payload


@given(well_formed_frames())
def test_dissection_under_udp_on_either_port(frame):
    data = encode_frame(frame)
    for ports in ({"sport": Q3P_UDP_PORT, "dport": 40000}, {"sport": 40000, "dport": Q3P_UDP_PORT}):
        pkt = IP(raw(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(**ports) / Raw(data)))
        check_dissection(frame, pkt[Q3P])


@given(st.one_of(st.binary(max_size=80), mutated(st.builds(encode_frame, well_formed_frames()))))
def test_scapy_survives_garbage(data):
    # Under UDP as in a capture: a frame scapy cannot dissect becomes Raw, nothing raises.
    wire = raw(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=Q3P_UDP_PORT, dport=Q3P_UDP_PORT)
               / Raw(data))
    pkt = IP(wire)
    assert raw(pkt) == wire
    pkt.summary()
    if data and Q3P in pkt and len(data) >= 28:
        assert pkt[Q3P].message_number == int.from_bytes(data[4:8], "big")


HEADER_A = bytes.fromhex("00000000" "00000007" "40" "01" "00" "00") + bytes(16)


@pytest.mark.parametrize("length, tail", [
    (16, bytes(range(30))), (256, bytes(range(30))), (46, bytes(range(30))),
    (44, bytes(range(30))), (46, bytes(range(3))), (28, b""),
])
def test_inconsistent_lengths_rebuild_as_captured(length, tail):
    data = length.to_bytes(4, "big") + HEADER_A[4:] + tail
    assert raw(Q3P(data)) == data


def test_inner_leftovers_stay_in_front_of_the_tag():
    notice = encode_frame(Q3PFrame(1, Command.KEEPALIVE, bytes(4) + b"left", b"T" * 16))
    short_ip = bytearray(raw(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()))
    short_ip[2:4] = (21).to_bytes(2, "big")  # IP total length shorter than the payload
    data_frame = encode_frame(Q3PFrame(2, Command.DATA, bytes(short_ip), b"T" * 16))
    for data in (notice, data_frame):
        pkt = Q3P(data + b"after")
        assert raw(pkt) == data + b"after"
        assert pkt.tag == b"T" * 16 and pkt[Padding].load == b"after"
        assert raw(pkt.payload)[:-5] == decode_frame(data).payload


def test_scapy_built_stack_round_trips_through_decoder():
    inner = IP(src="10.1.0.1", dst="10.2.0.1", ttl=9) / ICMP(type=8, id=7, seq=1)
    built = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
             / IP(src="192.0.2.1", dst="192.0.2.2") / UDP()
             / Q3P(message_number=42, flags="A", priority=6, tag=b"T" * 16, a_offset=4096) / inner)
    wire = raw(built)
    pkt = Ether(wire)
    assert pkt[UDP].sport == pkt[UDP].dport == Q3P_UDP_PORT
    q3p = pkt[Q3P]
    assert (q3p.length, q3p.tag, q3p.cmd) == (28 + len(raw(inner)) + 16, b"T" * 16, Command.DATA)
    assert pkt[ICMP].id == 7 and pkt[IP:2].dst == "10.2.0.1"
    frame = decode_frame(raw(q3p))
    assert frame == Q3PFrame(42, Command.DATA, raw(inner), b"T" * 16, priority=6, a_offset=4096)
    assert raw(Ether(wire)) == wire


def test_length_filled_in_post_build():
    plain = Q3P(message_number=1) / IP(dst="10.0.0.1") / ICMP()
    data = raw(plain)
    assert int.from_bytes(data[:4], "big") == len(data) == 28 + 28
    assert decode_frame(data).tag is None


def test_control_layers_set_the_command():
    for layer, command in ((Q3PAck(cumulative=3, window=8, sack=b"\x80"), Command.ACK),
                           (Q3PHandshake(node_id="10.0.0.9", mtu=1400), Command.HANDSHAKE),
                           (Q3PSync(enc_next=5), Command.SYNC),
                           (Q3PNotice(reason=1, text=b"restart"), Command.KEEPALIVE)):
        frame = decode_frame(raw(Q3P() / layer))
        assert frame.command == command
        body = decode_body(frame.command, frame.payload)
        fields = body_fields(layer)
        assert fields == {k: v for k, v in vars(body).items() if k in fields}

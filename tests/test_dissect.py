"""Dissection of the shipped capture: scapy layers top to bottom, and our codecs agree."""

import json
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.utils import rdpcap

from qbb import dissect, samples
from qbb.cli import main
from qbb.netlayer import icmp
from qbb.netlayer.packet import decode_packet
from qbb.q3p.packet import decode_frame
from qbb.q3p.scapy_layers import Q3P, Q3PCiphertext
from qbb.routing import packet as ospf
from qbb.routing.rokr_packet import decode_rokr
from qbb.transport.packet import decode_key_delivery, decode_segment
from qbb.wire import PROTO_ICMP, PROTO_OSPF, PROTO_QKDTL, PROTO_QROKR

PCAP = Path(__file__).resolve().parent.parent / "pcaps" / "synthetic-stack.pcap"
NAMES = [name for name, _ in samples.q3p_samples()]

EXPECTED_TOP = {
    "q3p-handshake": "Q3P HANDSHAKE", "q3p-sync": "Q3P SYNC", "q3p-ack": "Q3P ACK",
    "q3p-keepalive": "Q3P notice", "ospf-hello": "OSPF Hello",
    "ospf-dd": "OSPF Database Description", "ospf-lsr": "OSPF Link State Request (container)",
    "ospf-lsu": "OSPF Link State Update", "ospf-lsack": "OSPF Link State Acknowledgement",
    "qkdtl-syn": "QKDTL connect request", "qkdtl-key": "Q3P ciphertext", "qkdtl-ack": "QKDTL",
    "qrokr-reserve": "Q-RoKR reserve", "qrokr-feedback": "Q-RoKR feedback",
    "qrokr-cancel": "Q-RoKR cancel", "icmp-time-exceeded": "Raw", "icmp-unreachable": "Raw",
    "icmp-echo": "Raw",
}

DECODERS = {PROTO_OSPF: ospf.decode_packet, PROTO_ICMP: icmp.decode_icmp,
            PROTO_QKDTL: decode_segment, PROTO_QROKR: decode_rokr}


@pytest.fixture(scope="module")
def capture():
    return rdpcap(str(PCAP))


def test_committed_capture_is_what_the_generator_writes(capture):
    assert [bytes(p) for p in capture] == [bytes(p) for p in samples.sample_capture()]


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_every_packet_dissects_to_its_top_layer(capture, index):
    packet = capture[index]
    names = [layer.name for layer in dissect.layers(packet)]
    assert names[:4] == ["Ethernet", "IP", "UDP", "Q3P"]
    assert names[-1] == EXPECTED_TOP[NAMES[index]]
    assert "Padding" not in names


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_our_codecs_agree_with_scapy(capture, index):
    packet = capture[index]
    frame = decode_frame(bytes(packet[UDP].payload))
    assert frame.message_number == packet[Q3P].message_number
    assert frame.tag == packet[Q3P].tag
    if frame.encrypted or frame.command != 0:
        return
    network = decode_packet(frame.payload)
    inner = packet[Q3P][IP]
    assert (network.source, network.destination, network.ttl) == (inner.src, inner.dst, inner.ttl)
    assert network.protocol == inner.proto
    DECODERS[network.protocol](network.payload)  # decodes, checksums accepted


def test_key_material_is_only_ciphertext_on_the_wire(capture):
    segment = decode_segment(samples.network_samples()["qkdtl-key"].payload)
    key = decode_key_delivery(segment.payload).key
    wire = b"".join(bytes(p) for p in capture)
    assert key not in wire
    secret = [p for p in capture if p.haslayer(Q3PCiphertext)]
    assert len(secret) == 1 and secret[0][Q3P].flags.E


def test_cli_json_prints_one_object_per_packet(capsys):
    assert main(["dissect", "--json", str(PCAP)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == len(NAMES)
    hello = rows[NAMES.index("ospf-hello")]
    assert [layer["layer"] for layer in hello["layers"]][-2:] == ["OSPF Header", "OSPF Hello"]
    assert hello["layers"][-1]["fields"]["neighbors"] == [samples.NODE_B]


def test_cli_text_and_layer_filter(capsys):
    assert main(["dissect", "--layer", "Q-RoKR", str(PCAP)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n#") + out.startswith("#") == 3
    assert "type=RESERVE" in out and "3 packet(s) shown" in out


def test_cli_missing_and_bad_files_are_clear_errors(tmp_path, capsys):
    assert main(["dissect", str(tmp_path / "nope.pcap")]) == 2
    assert "no such capture file" in capsys.readouterr().err
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture")
    assert main(["dissect", str(bad)]) == 2
    assert "cannot read capture" in capsys.readouterr().err

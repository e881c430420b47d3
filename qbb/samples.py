"""Representative messages of every layer, and a synthetic capture built from them.

Used by ``tools/make_sample_pcap.py`` (which writes ``pcaps/synthetic-stack.pcap``), by
``qbb bench codecs`` and by the dissection tests. Everything is deterministic: the
one-time pads and MAC keys come from a seeded generator standing in for a key store, so
the capture is reproducible byte for byte. They are sample bytes, never real key.

The frames follow the conventions of shared/DESIGN.md: routing, ICMP and Q-RoKR
packets travel in authenticated, unencrypted Q3P DATA frames; a QKDTL KEY segment (a
relayed session key) travels one-time-pad encrypted, so only ciphertext is on the wire.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.poly1305 import Poly1305

from qbb.netlayer import icmp
from qbb.netlayer.icmp import quote_original
from qbb.netlayer.packet import QKDNLPacket, encode_packet
from qbb.q3p import packet as q3p
from qbb.routing import packet as ospf
from qbb.routing.lsa import LinkType, RouterFlags, RouterLink, RouterLSA, LsType, SummaryLSA
from qbb.routing.lsa import lsa_header
from qbb.routing.rokr_packet import (Cancel, CancelReason, Feedback, FeedbackStatus, Reserve,
                                     encode_rokr)
from qbb.transport.packet import (ConnectRequest, KeyDelivery, Segment, SegmentFlags,
                                  ServiceClass, encode_connect_request, encode_key_delivery,
                                  encode_segment)
from qbb.wire import PROTO_ICMP, PROTO_OSPF, PROTO_QKDTL, PROTO_QROKR

#: QKD addresses of two neighbouring nodes (seed 002 §2.3 style, area 1).
NODE_A, NODE_B, NODE_C = "1.1.0.1", "1.1.0.5", "1.1.0.9"
AREA = "0.0.0.1"
LINK_MASK = "255.255.255.252"


def _router_lsa(router: str, block: str, neighbour: str, own_if: str, cost: int) -> RouterLSA:
    """A node's Router-LSA: one point-to-point link, its /30 stub, the node's own /30."""
    links = (RouterLink(link_id=neighbour, link_data=own_if,
                        link_type=LinkType.POINT_TO_POINT, metric=cost),
             RouterLink(link_id="1.1.128.0", link_data=LINK_MASK, link_type=LinkType.STUB,
                        metric=cost),
             RouterLink(link_id=block, link_data=LINK_MASK, link_type=LinkType.STUB, metric=0))
    return RouterLSA(link_state_id=router, advertising_router=router, links=links,
                     flags=RouterFlags(0), ls_sequence_number=-0x7FFFFFFF + 3, ls_age=12)


def ospf_samples() -> dict[str, ospf.OspfPacket]:
    """One OSPF packet of each type, as node A sends them to node B."""
    lsa_a = _router_lsa(NODE_A, "1.1.0.0", NODE_B, "1.1.128.1", 6)
    lsa_b = _router_lsa(NODE_B, "1.1.0.4", NODE_A, "1.1.128.2", 5)
    summary = SummaryLSA(ls_type=LsType.SUMMARY_NETWORK, link_state_id="1.2.0.0",
                         advertising_router=NODE_A, metric=12, network_mask="255.255.0.0")
    bodies = {
        "ospf-hello": ospf.Hello(network_mask=LINK_MASK, hello_interval=10,
                                 router_dead_interval=40, neighbors=(NODE_B,)),
        "ospf-dd": ospf.DatabaseDescription(
            interface_mtu=1500, dd_sequence_number=4242, flags=ospf.DdFlags.M | ospf.DdFlags.MS,
            lsa_headers=(lsa_header(lsa_a), lsa_header(summary))),
        "ospf-lsr": ospf.LinkStateRequest(requests=(ospf.LsRequest(ls_type=1, link_state_id=NODE_B, advertising_router=NODE_B),)),
        "ospf-lsu": ospf.LinkStateUpdate(lsas=(lsa_a, lsa_b, summary)),
        "ospf-lsack": ospf.LinkStateAck(lsa_headers=(lsa_header(lsa_b),)),
    }
    return {name: ospf.OspfPacket(router_id=NODE_A, area_id=AREA, body=body) for name, body in bodies.items()}


def network_samples() -> dict[str, QKDNLPacket]:
    """One QKDNL packet per upper-layer message type (OSPF, ICMP, QKDTL, Q-RoKR)."""
    packets = {name: QKDNLPacket(NODE_A, NODE_B, PROTO_OSPF, ospf.encode_packet(pkt), ttl=1)
               for name, pkt in ospf_samples().items()}
    rng = random.Random(2008)
    key = KeyDelivery(key_id=7, key_bits=256, key=rng.randbytes(32))
    segments = {
        "qkdtl-syn": Segment(40001, 5000, seq=1000, flags=SegmentFlags.SYN, window=64,
                             payload=encode_connect_request(ConnectRequest(
                                 ServiceClass.BEST_EFFORT, 1_000_000, 256_000, "vpn-gateway"))),
        "qkdtl-key": Segment(40001, 5000, seq=1001, ack=2001, window=64,
                             flags=SegmentFlags.KEY | SegmentFlags.ACK,
                             payload=encode_key_delivery(key)),
        "qkdtl-ack": Segment(5000, 40001, seq=2001, ack=1037, window=64, flags=SegmentFlags.ACK),
    }
    for name, seg in segments.items():
        packets[name] = QKDNLPacket(NODE_A, NODE_C, PROTO_QKDTL, encode_segment(seg))
    path = (NODE_A, NODE_B, NODE_C)
    rokr = {
        "qrokr-reserve": Reserve(17, NODE_A, NODE_C, 4096, 2_500_000, (NODE_B, NODE_C), path),
        "qrokr-feedback": Feedback(17, (NODE_B, NODE_C), FeedbackStatus.SUCCESS, 1_750_000),
        "qrokr-cancel": Cancel(17, (NODE_B, NODE_C), CancelReason.PATH_CHANGED),
    }
    for name, msg in rokr.items():
        packets[name] = QKDNLPacket(NODE_A, NODE_C, PROTO_QROKR, encode_rokr(msg))
    expired = encode_packet(packets["qkdtl-ack"])
    errors = {
        "icmp-time-exceeded": icmp.TimeExceeded(icmp.TimeExceededCode.TTL_EXCEEDED_IN_TRANSIT,
                                                quote_original(expired)),
        "icmp-unreachable": icmp.DestinationUnreachable(icmp.UnreachableCode.HOST_UNREACHABLE,
                                                        quote_original(expired)),
        "icmp-echo": icmp.EchoRequest(identifier=1, sequence=1, data=b"qbb ping"),
    }
    for name, msg in errors.items():
        packets[name] = QKDNLPacket(NODE_B, NODE_A, PROTO_ICMP, icmp.encode_icmp(msg))
    return packets


@dataclass
class SamplePads:
    """A stand-in for a key store: pads and one-time MAC keys at increasing offsets."""

    rng: random.Random
    offset: int = 0

    def take(self, size: int) -> tuple[int, bytes]:
        start, self.offset = self.offset, self.offset + size
        return start, self.rng.randbytes(size)


def seal(frame: q3p.Q3PFrame, pads: SamplePads) -> bytes:
    """Encrypt (when ``frame.encrypted``) then authenticate a frame: encrypt-then-MAC."""
    payload, e_offset = frame.payload, 0
    if frame.encrypted:
        e_offset, pad = pads.take(len(payload))
        payload = bytes(x ^ y for x, y in zip(payload, pad))
    a_offset, mac_key = pads.take(32)
    unsealed = q3p.Q3PFrame(frame.message_number, frame.command, payload, bytes(16),
                            frame.encrypted, frame.more_fragments, frame.priority,
                            frame.channel, e_offset, a_offset)
    buffer = q3p.encode_frame_without_tag(unsealed)
    return bytes(q3p.attach_tag(buffer, Poly1305.generate_tag(
        mac_key, bytes(q3p.authenticated_bytes(buffer)))))


def q3p_samples() -> Iterator[tuple[str, bytes]]:
    """Sealed Q3P frames: handshake, every network sample in DATA frames, control frames."""
    pads = SamplePads(random.Random(1))
    number = iter(range(1, 1 << 20))
    hello = q3p.Handshake(NODE_A, 1, 0x5EC0C0, 1500, 64, 0, 0, 500)
    control = [
        ("q3p-handshake", q3p.Command.HANDSHAKE, q3p.encode_handshake(hello)),
        ("q3p-sync", q3p.Command.SYNC, q3p.encode_sync(q3p.Sync(0x5EC0C0, 4096, 2048, 0))),
    ]
    for name, command, body in control:
        yield name, seal(q3p.Q3PFrame(next(number), command, body, priority=7), pads)
    for name, pkt in network_samples().items():
        secret = name == "qkdtl-key"  # session-key relay: one-time pad on this hop
        priority = 6 if name.startswith("ospf") else 2
        frame = q3p.Q3PFrame(next(number), q3p.Command.DATA, encode_packet(pkt),
                             encrypted=secret, priority=priority)
        yield name, seal(frame, pads)
    expected = next(number)
    ack = q3p.Ack.from_received(expected, 64, [expected + 2, expected + 3])
    yield "q3p-ack", seal(q3p.Q3PFrame(next(number), q3p.Command.ACK, q3p.encode_ack(ack),
                                       priority=7), pads)
    yield "q3p-keepalive", seal(q3p.Q3PFrame(next(number), q3p.Command.KEEPALIVE,
                                             q3p.encode_notice(q3p.Notice())), pads)


#: Underlay (classical network) addresses of nodes A and B: RFC 5737 documentation range.
UNDERLAY_A, UNDERLAY_B = "192.0.2.1", "192.0.2.2"
MAC_A, MAC_B = "02:51:42:42:00:01", "02:51:42:42:00:02"


def sample_capture() -> list:
    """The synthetic capture as scapy packets: Ether / IP / UDP(7355) / Q3P frame bytes."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    from qbb.wire import Q3P_UDP_PORT

    packets = []
    for index, (name, frame) in enumerate(q3p_samples()):
        forward = not name.startswith("icmp")
        src, dst = (UNDERLAY_A, UNDERLAY_B) if forward else (UNDERLAY_B, UNDERLAY_A)
        mac_src, mac_dst = (MAC_A, MAC_B) if forward else (MAC_B, MAC_A)
        pkt = (Ether(src=mac_src, dst=mac_dst) / IP(src=src, dst=dst, id=index + 1, flags="DF")
               / UDP(sport=Q3P_UDP_PORT, dport=Q3P_UDP_PORT) / Raw(frame))
        pkt = Ether(bytes(pkt))  # freeze lengths and checksums
        pkt.time = 1_700_000_000 + index / 1000
        packets.append(pkt)
    return packets

"""The real captures in pcaps/ (tools/record_pcaps.py): dissected with qbb's scapy layers.

Each capture is link A-B of topologies/ring5.json taken on A's veth end during one
emulated run (pcaps/README.md).  Checks: OSPF Hellos list the neighbour once it is heard,
the DB exchange has the ExStart I/M/MS handshake, LS Requests, Updates and Acks; after the
failure of link C-D, LS Updates carry new Router-LSAs of C and D with a higher sequence
number and fewer links; the key relay rides in Q3P DATA frames with E set whose payload
stays ciphertext; ICMP Time Exceeded and Destination Unreachable (host) come back from
B; and the session keys of the recording appear in no capture, in clear, anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.contrib.ospf import (OSPF_DBDesc, OSPF_Hdr, OSPF_Hello, OSPF_LSAck, OSPF_LSReq,
                                OSPF_LSUpd, OSPF_Router_LSA)
from scapy.layers.inet import ICMP, IP, UDP

from qbb import dissect
from qbb.q3p.scapy_layers import Q3P, Q3PCiphertext
from qbb.topology import load_topology
from qbb.transport.scapy_layers import QKDTL
from qbb.wire import PROTO_QKDTL, Q3P_UDP_PORT

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
MANIFEST = json.loads((PCAPS / "manifest.json").read_text())
NAMES = ["adjacency", "key-relay", "icmp-errors", "link-failure-flooding"]
PLAN = load_topology(ROOT / "topologies" / "ring5.json").address_plan()
A, B, C, D = (PLAN.nodes[n].address for n in "ABCD")


def packets(name: str) -> list:
    return list(dissect.read_capture(PCAPS / f"{name}.pcap"))


def router_lsas(name: str) -> list[tuple[str, OSPF_Router_LSA]]:
    """(sender router ID, Router-LSA) for every Router-LSA in an LS Update."""
    return [(p[OSPF_Hdr].src, lsa) for p in packets(name) if OSPF_LSUpd in p
            for lsa in p[OSPF_LSUpd].lsalist if isinstance(lsa, OSPF_Router_LSA)]


@pytest.mark.parametrize("name", NAMES)
def test_capture_is_small_real_and_on_the_q3p_port(name: str) -> None:
    path = PCAPS / f"{name}.pcap"
    assert 0 < path.stat().st_size < 200_000
    udp = [p for p in packets(name) if UDP in p]
    assert udp and all(Q3P_UDP_PORT in (p[UDP].sport, p[UDP].dport) for p in udp)
    assert len(packets(name)) == MANIFEST["files"][f"{name}.pcap"]["packets"]


def test_hellos_list_the_neighbour() -> None:
    hellos = [(p[OSPF_Hdr].src, p[OSPF_Hello]) for p in packets("adjacency") if OSPF_Hello in p]
    assert {src for src, _ in hellos} == {A, B}
    first_a = next(h for src, h in hellos if src == A)
    assert first_a.neighbors == []  # A has heard no one yet
    assert any(src == A and h.neighbors == [B] for src, h in hellos)
    assert any(src == B and h.neighbors == [A] for src, h in hellos)
    assert all(h.hellointerval == 1 and h.deadinterval == 4 for _, h in hellos)


def test_database_exchange() -> None:
    caps = packets("adjacency")
    dbds = [p[OSPF_DBDesc] for p in caps if OSPF_DBDesc in p]
    initial = [d for d in dbds if d.dbdescr.I and d.dbdescr.M and d.dbdescr.MS]
    assert len(initial) >= 2  # ExStart: both sides claim master with I|M|MS
    assert any(d.lsaheaders for d in dbds)  # Exchange: LSA headers described
    assert any(OSPF_LSReq in p for p in caps)
    assert any(OSPF_LSUpd in p for p in caps) and any(OSPF_LSAck in p for p in caps)
    advertised = {lsa.adrouter for _, lsa in router_lsas("adjacency")}
    assert {A, B, C} <= advertised


def test_flooding_after_link_failure_carries_new_router_lsas() -> None:
    before = {}
    for _, lsa in router_lsas("adjacency"):
        before[lsa.adrouter] = max(before.get(lsa.adrouter, (0, 0)), (lsa.seq, lsa.linkcount))
    after = {lsa.adrouter: lsa for _, lsa in router_lsas("link-failure-flooding")}
    assert {C, D} <= set(after)
    for router in (C, D):
        old_seq, old_links = before[router]
        assert after[router].seq > old_seq
        assert after[router].linkcount < old_links  # the C-D adjacency is gone
        neighbours = {link.id for link in after[router].linklist if link.type == 1}
        assert (C if router == D else D) not in neighbours
    acks = [p[OSPF_LSAck] for p in packets("link-failure-flooding") if OSPF_LSAck in p]
    acked = {(h.adrouter, h.seq) for ack in acks for h in ack.lsaheaders}
    assert (C, after[C].seq) in acked and (D, after[D].seq) in acked


def test_key_relay_is_encrypted() -> None:
    frames = [p[Q3P] for p in packets("key-relay") if Q3P in p and p[Q3P].flags.E]
    assert len(MANIFEST["keys"]) == 3 and len(frames) >= 3  # ARQ may retransmit
    for frame in frames:
        assert frame.cmd == 0 and frame.flags.A and frame.priority == 2 and frame.channel == 2
        assert isinstance(frame.payload, Q3PCiphertext)
        assert IP not in frame and QKDTL not in frame


def test_icmp_errors_from_b() -> None:
    inner = [p[Q3P].payload for p in packets("icmp-errors")
             if Q3P in p and isinstance(p[Q3P].payload, IP) and ICMP in p[Q3P].payload]
    seen = {(ip.src, ip.dst, ip[ICMP].type, ip[ICMP].code) for ip in inner}
    assert (A, C, 8, 0) in seen  # the probe with TTL 1
    assert (B, A, 11, 0) in seen  # Time Exceeded in transit, from B
    assert (B, A, 3, 1) in seen  # Host Unreachable: 1.1.0.10 is in B's block, unassigned
    expired = next(ip for ip in inner if ip[ICMP].type == 11)
    quoted = expired[ICMP].payload
    assert isinstance(quoted, IP) and quoted.dst == C and quoted.ttl == 1
    kinds = {(m["type"], m["code"]) for m in MANIFEST["icmp_seen_by_nodes"]}
    assert ("TimeExceeded", 0) in kinds and ("DestinationUnreachable", 1) in kinds


@pytest.mark.parametrize("name", NAMES)
def test_no_key_material_in_clear(name: str) -> None:
    data = (PCAPS / f"{name}.pcap").read_bytes()
    for key in MANIFEST["keys"]:
        raw = bytes.fromhex(key["key"])
        assert raw not in data and raw[:16] not in data and raw[16:] not in data
    for p in packets(name):  # no QKDTL (protocol 253) packet is ever readable on a link
        assert QKDTL not in p
        if Q3P in p and isinstance(p[Q3P].payload, IP):
            assert p[Q3P].payload.proto != PROTO_QKDTL

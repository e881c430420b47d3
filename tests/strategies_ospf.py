"""Hypothesis strategies for the OSPFv2 codecs (qbb.routing.lsa, qbb.routing.packet).

``lsas()`` / ``packets()`` generate valid objects; ``scapy_lsas()`` / ``scapy_packets()``
only what scapy's contrib OSPF layers can parse back (no TOS entries, no unknown LSA
types).  ``mutated(data)`` perturbs valid bytes; ``reseal_packet`` / ``reseal_lsa``
recompute length and checksum after a mutation so the structural checks get exercised
rather than only the checksum check.  ``scapy_packet`` / ``scapy_lsa`` build the scapy
counterparts of our objects and ``assert_*_matches_scapy`` compare field by field.
"""

from __future__ import annotations

import socket
from dataclasses import astuple

from hypothesis import strategies as st
from scapy.contrib import ospf
from scapy.packet import NoPayload

from qbb.routing.checksum import lsa_checksum
from qbb.routing.common import Options
from qbb.routing.lsa import (
    LinkType, LsaHeader, LsType, RouterFlags, RouterLink, RouterLSA, SummaryLSA,
    TosMetric, UnknownLSA, lsa_header)
from qbb.routing.packet import (
    AuType, DatabaseDescription, DdFlags, Hello, LinkStateAck, LinkStateRequest,
    LinkStateUpdate, LsRequest, OspfPacket, encode_packet, packet_checksum)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u24 = st.integers(0, 0xFFFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ipv4 = u32.map(lambda n: socket.inet_ntoa(n.to_bytes(4, "big")))
options = u8.map(Options)
sequence_numbers = st.integers(-(2**31), 2**31 - 1)
ls_types = u8


def _common() -> dict:
    return {"link_state_id": ipv4, "advertising_router": ipv4,
            "ls_sequence_number": sequence_numbers, "ls_age": u16, "options": options}


def router_links(max_tos: int = 3) -> st.SearchStrategy[RouterLink]:
    return st.builds(
        RouterLink, link_id=ipv4, link_data=ipv4, link_type=st.sampled_from(LinkType),
        metric=u16, tos_metrics=st.lists(st.builds(TosMetric, u8, u16), max_size=max_tos)
        .map(tuple))


def router_lsas(max_links: int = 4, max_tos: int = 3) -> st.SearchStrategy[RouterLSA]:
    return st.builds(
        RouterLSA, flags=st.integers(0, 7).map(RouterFlags),
        links=st.lists(router_links(max_tos), max_size=max_links).map(tuple), **_common())


def summary_lsas(max_tos: int = 3) -> st.SearchStrategy[SummaryLSA]:
    return st.builds(
        SummaryLSA, ls_type=st.sampled_from([LsType.SUMMARY_NETWORK, LsType.SUMMARY_ASBR]),
        network_mask=ipv4, metric=u24,
        tos_metrics=st.lists(st.builds(TosMetric, u8, u24), max_size=max_tos).map(tuple),
        **_common())


def unknown_lsas() -> st.SearchStrategy[UnknownLSA]:
    return st.builds(
        UnknownLSA, ls_type=ls_types.filter(lambda t: t not in (1, 3, 4)),
        body=st.binary(max_size=40), **_common())


def lsas() -> st.SearchStrategy:
    return st.one_of(router_lsas(), summary_lsas(), unknown_lsas())


def scapy_lsas() -> st.SearchStrategy:
    return st.one_of(router_lsas(max_tos=0), summary_lsas(max_tos=0))


def lsa_headers() -> st.SearchStrategy[LsaHeader]:
    return st.builds(LsaHeader, ls_type=ls_types, ls_checksum=u16,
                     length=st.integers(20, 0xFFFF), **_common())


def hellos() -> st.SearchStrategy[Hello]:
    return st.builds(
        Hello, network_mask=ipv4, hello_interval=u16, options=options,
        router_priority=u8, router_dead_interval=u32, designated_router=ipv4,
        backup_designated_router=ipv4, neighbors=st.lists(ipv4, max_size=6).map(tuple))


def database_descriptions() -> st.SearchStrategy[DatabaseDescription]:
    return st.builds(
        DatabaseDescription, interface_mtu=u16, dd_sequence_number=u32, options=options,
        flags=st.integers(0, 7).map(DdFlags),
        lsa_headers=st.lists(lsa_headers(), max_size=4).map(tuple))


def link_state_requests() -> st.SearchStrategy[LinkStateRequest]:
    item = st.builds(LsRequest, ls_types, ipv4, ipv4)
    return st.builds(LinkStateRequest, st.lists(item, max_size=5).map(tuple))


def link_state_updates(lsa_strategy: st.SearchStrategy | None = None):
    items = lsas() if lsa_strategy is None else lsa_strategy
    return st.builds(LinkStateUpdate, st.lists(items, max_size=4).map(tuple))


def link_state_acks() -> st.SearchStrategy[LinkStateAck]:
    return st.builds(LinkStateAck, st.lists(lsa_headers(), max_size=5).map(tuple))


def bodies() -> st.SearchStrategy:
    return st.one_of(hellos(), database_descriptions(), link_state_requests(),
                     link_state_updates(), link_state_acks())


def packets(body: st.SearchStrategy | None = None) -> st.SearchStrategy[OspfPacket]:
    auth = st.one_of(st.just(bytes(8)), st.binary(min_size=8, max_size=8))
    body = bodies() if body is None else body
    return st.builds(OspfPacket, router_id=ipv4, area_id=ipv4, body=body,
                     au_type=st.sampled_from([AuType.NULL, AuType.SIMPLE]),
                     authentication=auth)


def scapy_packets() -> st.SearchStrategy[OspfPacket]:
    """Packets whose every field scapy's contrib OSPF layers decode (AuType 0 or 1)."""
    body = st.one_of(hellos(), database_descriptions(), link_state_requests(),
                     link_state_updates(scapy_lsas()), link_state_acks())
    return packets(body)


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with a bit flipped, truncated, extended, or a byte overwritten."""
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "overwrite"]))
    if kind == "truncate":
        return data[:draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind == "extend":
        return data + draw(st.binary(min_size=1, max_size=24))
    if not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    value = data[at] ^ (1 << draw(st.integers(0, 7))) if kind == "flip" else draw(u8)
    return data[:at] + bytes([value]) + data[at + 1:]


def reseal_packet(data: bytes) -> bytes:
    """Rewrite the OSPF length and checksum fields to match ``data`` (if it has a header)."""
    if len(data) < 24 or len(data) > 0xFFFF:
        return data
    data = data[:2] + len(data).to_bytes(2, "big") + data[4:]
    return data[:12] + packet_checksum(data).to_bytes(2, "big") + data[14:]


def reseal_lsa(data: bytes) -> bytes:
    """Rewrite the LSA length and Fletcher checksum fields to match ``data``."""
    if len(data) < 20 or len(data) > 0xFFFF:
        return data
    data = data[:18] + len(data).to_bytes(2, "big") + data[20:]
    return data[:16] + lsa_checksum(data).to_bytes(2, "big") + data[18:]


# -- scapy counterparts (contrib OSPF layers) for cross-checks and dissection tests ----

def scapy_lsa(lsa):
    """The scapy layer for ``lsa`` (Router/Summary, no TOS); post_build fills checksums."""
    common = dict(age=lsa.ls_age, options=int(lsa.options), id=lsa.link_state_id,
                  adrouter=lsa.advertising_router, seq=lsa.ls_sequence_number & 0xFFFFFFFF)
    if isinstance(lsa, RouterLSA):
        links = [ospf.OSPF_Link(id=k.link_id, data=k.link_data, type=int(k.link_type),
                                metric=k.metric) for k in lsa.links]
        return ospf.OSPF_Router_LSA(flags=int(lsa.flags), linklist=links, **common)
    cls = (ospf.OSPF_SummaryIP_LSA if lsa.ls_type == LsType.SUMMARY_NETWORK
           else ospf.OSPF_SummaryASBR_LSA)
    return cls(mask=lsa.network_mask, metric=lsa.metric, **common)


def assert_lsa_matches_scapy(lsa, parsed) -> None:
    """``parsed`` (a scapy LSA layer) carries the same values as our ``lsa``."""
    header = lsa_header(lsa)
    assert (parsed.age, parsed.options, parsed.type) == (
        lsa.ls_age, int(lsa.options), int(lsa.ls_type))
    assert (parsed.id, parsed.adrouter) == (lsa.link_state_id, lsa.advertising_router)
    assert parsed.seq == lsa.ls_sequence_number & 0xFFFFFFFF
    assert (parsed.chksum, parsed.len) == (header.ls_checksum, header.length)
    if isinstance(lsa, RouterLSA):
        assert (parsed.flags, parsed.reserved) == (int(lsa.flags), 0)
        assert parsed.linkcount == len(lsa.links)
        got = [(k.id, k.data, k.type, k.toscount, k.metric) for k in parsed.linklist]
        assert got == [(k.link_id, k.link_data, int(k.link_type), 0, k.metric)
                       for k in lsa.links]
    else:
        assert (parsed.mask, parsed.reserved, parsed.metric) == (
            lsa.network_mask, 0, lsa.metric)


def _scapy_lsa_header(h: LsaHeader):
    return ospf.OSPF_LSA_Hdr(age=h.ls_age, options=int(h.options), type=int(h.ls_type),
                             id=h.link_state_id, adrouter=h.advertising_router,
                             seq=h.ls_sequence_number & 0xFFFFFFFF, chksum=h.ls_checksum,
                             len=h.length)


def _header_tuple(h) -> tuple:
    return (h.age, h.options, h.type, h.id, h.adrouter, h.seq, h.chksum, h.len)


def scapy_body(body):
    """The scapy layer for one of our packet bodies (scapy_packets() bodies only)."""
    if isinstance(body, Hello):
        return ospf.OSPF_Hello(
            mask=body.network_mask, hellointerval=body.hello_interval,
            options=int(body.options), prio=body.router_priority,
            deadinterval=body.router_dead_interval, router=body.designated_router,
            backup=body.backup_designated_router, neighbors=list(body.neighbors))
    if isinstance(body, DatabaseDescription):
        return ospf.OSPF_DBDesc(
            mtu=body.interface_mtu, options=int(body.options), dbdescr=int(body.flags),
            ddseq=body.dd_sequence_number,
            lsaheaders=[_scapy_lsa_header(h) for h in body.lsa_headers])
    if isinstance(body, LinkStateRequest):
        return ospf.OSPF_LSReq(requests=[
            ospf.OSPF_LSReq_Item(type=int(r.ls_type), id=r.link_state_id,
                                 adrouter=r.advertising_router) for r in body.requests])
    if isinstance(body, LinkStateUpdate):
        return ospf.OSPF_LSUpd(lsalist=[scapy_lsa(lsa) for lsa in body.lsas])
    return ospf.OSPF_LSAck(lsaheaders=[_scapy_lsa_header(h) for h in body.lsa_headers])


def scapy_packet(packet: OspfPacket):
    """OSPF_Hdr / body; scapy's post_build fills length and both kinds of checksum."""
    header = ospf.OSPF_Hdr(src=packet.router_id, area=packet.area_id,
                           authtype=int(packet.au_type),
                           authdata=int.from_bytes(packet.authentication, "big"))
    return header / scapy_body(packet.body)


def assert_packet_matches_scapy(packet: OspfPacket, parsed) -> None:
    """``parsed`` (scapy OSPF_Hdr over our bytes) carries the values of ``packet``."""
    data = encode_packet(packet)
    assert (parsed.version, parsed.type, parsed.len) == (2, packet.packet_type, len(data))
    assert (parsed.src, parsed.area) == (packet.router_id, packet.area_id)
    assert parsed.chksum == int.from_bytes(data[12:14], "big")
    assert parsed.authtype == packet.au_type
    assert parsed.authdata == int.from_bytes(packet.authentication, "big")
    body, layer = packet.body, parsed.payload
    if len(data) == 24:  # an empty LSR or LS Ack: scapy adds no body layer at all
        assert isinstance(layer, NoPayload) and not astuple(body)[0]
    elif isinstance(body, Hello):
        assert (layer.mask, layer.hellointerval, layer.options, layer.prio) == (
            body.network_mask, body.hello_interval, body.options, body.router_priority)
        assert (layer.deadinterval, layer.router, layer.backup) == (
            body.router_dead_interval, body.designated_router, body.backup_designated_router)
        assert tuple(layer.neighbors) == body.neighbors
    elif isinstance(body, DatabaseDescription):
        assert (layer.mtu, layer.options, layer.dbdescr, layer.ddseq) == (
            body.interface_mtu, body.options, body.flags, body.dd_sequence_number)
        _assert_headers(layer.lsaheaders, body.lsa_headers)
    elif isinstance(body, LinkStateRequest):
        got = [(r.type, r.id, r.adrouter) for r in layer.requests]
        assert got == [(r.ls_type, r.link_state_id, r.advertising_router)
                       for r in body.requests]
    elif isinstance(body, LinkStateUpdate):
        assert layer.lsacount == len(body.lsas) == len(layer.lsalist or [])
        for lsa, theirs in zip(body.lsas, layer.lsalist or []):
            assert_lsa_matches_scapy(lsa, theirs)
    else:
        _assert_headers(layer.lsaheaders, body.lsa_headers)


def _assert_headers(theirs, ours) -> None:
    assert [_header_tuple(h) for h in theirs or []] == [
        _header_tuple(_scapy_lsa_header(h)) for h in ours]

"""Flooding (RFC 2328 §13): stale, duplicate, out-of-order, malformed and lost LSAs."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qbb.routing.lsa import (
    MAX_AGE, LinkType, LsType, RouterLink, RouterLSA, SummaryLSA, UnknownLSA, lsa_key)
from qbb.routing.lsdb import header_of
from qbb.routing.packet import (
    LinkStateAck, LinkStateRequest, LinkStateUpdate, LsRequest, OspfPacket, decode_packet,
    encode_packet)
from routing_sim import build_network, iface_of, inject, own_router_lsa, pair, random_network

FOREIGN = "1.1.0.101"  # a router beyond b, only known through LSAs


def foreign_lsa(seq: int, metric: int = 3, age: int = 0) -> RouterLSA:
    link = RouterLink(link_id="1.1.0.9", link_data="1.1.128.9",
                      link_type=LinkType.POINT_TO_POINT, metric=metric)
    return RouterLSA(link_state_id=FOREIGN, advertising_router=FOREIGN,
                     ls_sequence_number=seq, ls_age=age, links=(link,))


def _decoded(out):
    return [decode_packet(raw).body for _, raw in out]


def _held(sim, name, key):
    return sim.routers[name].lsdb("0.0.0.1").get(key)


def test_new_lsa_is_installed_acked_and_flooded():
    sim = pair()
    lsa = foreign_lsa(5)
    out = _decoded(inject(sim, "a", "b", LinkStateUpdate((lsa,))))
    assert [type(p) for p in out] == [LinkStateAck]
    assert out[0].lsa_headers == (header_of(lsa),)
    assert _held(sim, "a", lsa_key(lsa)).lsa == lsa
    (nbr,) = sim.routers["a"].neighbors().values()
    assert lsa_key(lsa) not in nbr.retransmission  # never flooded back to the sender


def test_duplicate_gets_direct_ack_and_no_reinstall():
    sim = pair()
    lsa = foreign_lsa(5)
    inject(sim, "a", "b", LinkStateUpdate((lsa,)))
    version = sim.routers["a"].lsdb("0.0.0.1").version
    out = _decoded(inject(sim, "a", "b", LinkStateUpdate((lsa,))))
    assert out == [LinkStateAck((header_of(lsa),))]
    assert sim.routers["a"].lsdb("0.0.0.1").version == version


def test_out_of_order_older_instance_is_answered_with_the_newer():
    sim = pair()
    newer, older = foreign_lsa(7, metric=4), foreign_lsa(6, metric=9)
    inject(sim, "a", "b", LinkStateUpdate((newer,)))
    out = _decoded(inject(sim, "a", "b", LinkStateUpdate((older,))))
    assert len(out) == 1 and isinstance(out[0], LinkStateUpdate)
    (sent,) = out[0].lsas
    assert sent.ls_sequence_number == 7 and sent.links == newer.links
    assert _held(sim, "a", lsa_key(newer)).lsa.ls_sequence_number == 7
    assert sim.routers["a"].stats["stale_lsas_answered"] == 1


def test_stale_copy_held_by_neighbour_is_corrected():
    """a's own LSA replayed to b with an old sequence number: b keeps and re-sends its own."""
    sim = pair()
    current = own_router_lsa(sim, "b", "a")
    stale = replace(current, ls_sequence_number=current.ls_sequence_number - 1, links=())
    out = _decoded(inject(sim, "b", "a", LinkStateUpdate((stale,))))
    assert isinstance(out[0], LinkStateUpdate) and out[0].lsas[0].links == current.links
    assert sim.run_until_converged(30) is not None
    assert own_router_lsa(sim, "b", "a").links == current.links


def test_maxage_lsa_unknown_here_is_acked_and_discarded():
    sim = pair()
    lsa = foreign_lsa(5, age=MAX_AGE)
    out = _decoded(inject(sim, "a", "b", LinkStateUpdate((lsa,))))
    assert out == [LinkStateAck((header_of(lsa),))]
    assert _held(sim, "a", lsa_key(lsa)) is None


def test_maxage_instance_flushes_the_lsa_everywhere():
    sim = random_network(4, seed=3)
    sim.start()
    assert sim.run_until_converged(60) is not None
    names = sorted(sim.routers)
    victim = sim.routers[names[0]]
    key = (int(LsType.ROUTER), victim.router_id, victim.router_id)
    lsa = victim.lsdb("0.0.0.1").get(key).lsa
    holder = next(n for n in names[1:] if key in sim.routers[n].lsdb("0.0.0.1"))
    # a third party floods a premature MaxAge copy; the originator must re-originate
    sim.routers[holder].lsdb("0.0.0.1").install(replace(lsa, ls_age=MAX_AGE), sim.now)
    sim.routers[holder]._dirty = True
    from qbb.routing.flooding import flood
    flood(sim.routers[holder], "0.0.0.1", replace(lsa, ls_age=MAX_AGE), sim.now)
    for address, raw in sim.routers[holder]._finish(sim.now):
        sim._transmit(holder, address, raw)
    assert sim.run_until_converged(60) is not None
    for name in names:
        entry = sim.routers[name].lsdb("0.0.0.1").get(key)
        assert entry is not None and entry.lsa.ls_sequence_number > lsa.ls_sequence_number


def test_unknown_ls_types_are_dropped():
    sim = pair()
    weird = UnknownLSA(ls_type=5, link_state_id="9.9.9.0", advertising_router=FOREIGN,
                       body=bytes(16))
    inject(sim, "a", "b", LinkStateUpdate((weird,)))
    assert sim.routers["a"].drops["lsa_unknown_type"] == 1
    assert all(k[0] != 5 for k in sim.routers["a"].lsdb("0.0.0.1").entries)


def test_summary_lsas_are_flooded_onwards():
    sim = build_network({"a": 1, "b": 1, "c": 1}, [("a", "b"), ("b", "c")])
    sim.start()
    assert sim.run_until_converged(30) is not None
    summary = SummaryLSA(ls_type=LsType.SUMMARY_NETWORK, link_state_id="1.2.0.0",
                         advertising_router=FOREIGN, metric=7, network_mask="255.255.0.0")
    inject(sim, "b", "a", LinkStateUpdate((summary,)))
    sim.run(sim.now + 1)
    assert _held(sim, "c", lsa_key(summary)) is not None
    assert _held(sim, "a", lsa_key(summary)) is None


def test_unacknowledged_lsas_are_retransmitted_until_acked():
    from qbb.routing.flooding import install
    sim = pair()
    a = sim.routers["a"]
    (nbr,) = a.neighbors().values()
    lsa = foreign_lsa(6)
    sim.links[0].loss = 1.0  # the LS Update and its retransmission are lost
    install(a, "0.0.0.1", lsa, sim.now)
    assert lsa_key(lsa) in nbr.retransmission
    sim.run(sim.now + 3)  # RxmtInterval 2 s, RouterDeadInterval 4 s
    assert a.stats["lsas_retransmitted"] == 1 and lsa_key(lsa) in nbr.retransmission
    sim.links[0].loss = 0.0
    sim.run(sim.now + 2)
    assert lsa_key(lsa) not in nbr.retransmission
    assert _held(sim, "b", lsa_key(lsa)).lsa.ls_sequence_number == 6


def test_questionable_ack_is_ignored():
    sim = pair()
    a = sim.routers["a"]
    (nbr,) = a.neighbors().values()
    from qbb.routing.flooding import install
    sim.links[0].loss = 1.0
    install(a, "0.0.0.1", foreign_lsa(6), sim.now)
    before = a.stats["questionable_acks"]
    inject(sim, "a", "b", LinkStateAck((header_of(foreign_lsa(5)),)))
    assert lsa_key(foreign_lsa(6)) in nbr.retransmission
    assert a.stats["questionable_acks"] == before + 1


def test_request_for_unknown_lsa_restarts_the_exchange():
    sim = pair()
    inject(sim, "a", "b", LinkStateRequest((LsRequest(1, "9.9.9.9", "9.9.9.9"),)))
    assert sim.routers["a"].drops["lsr_unknown_lsa"] == 1
    assert sim.routers["a"].stats["nbr_BAD_LS_REQ"] == 1
    assert sim.run_until_converged(30) is not None  # the adjacency forms again


def test_lossy_links_still_converge():
    sim = random_network(6, seed=11, loss=0.2)
    sim.start()
    assert sim.run_until_converged(300) is not None
    assert sim.counts["lost"] > 0
    assert sum(r.stats["lsas_retransmitted"] for r in sim.routers.values()) > 0


# -- malformed input: dropped and counted, never raised ----------------------------------

def _valid_packets(sim):
    a, b = sim.routers["a"], sim.routers["b"]
    lsa = own_router_lsa(sim, "a", "b")
    bodies = [LinkStateUpdate((lsa,)), LinkStateAck((header_of(lsa),)),
              LinkStateRequest((LsRequest(1, b.router_id, b.router_id),))]
    packets = [encode_packet(OspfPacket(router_id=b.router_id, area_id="0.0.0.1", body=body))
               for body in bodies]
    return packets


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_packets_never_raise(data):
    sim = pair()
    packets = _valid_packets(sim)
    raw = bytearray(data.draw(st.sampled_from(packets)))
    mutation = data.draw(st.sampled_from(["flip", "truncate", "extend", "random"]))
    if mutation == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            bit = data.draw(st.integers(0, len(raw) * 8 - 1))
            raw[bit // 8] ^= 1 << (bit % 8)
    elif mutation == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif mutation == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=40))
    else:
        raw = bytearray(data.draw(st.binary(max_size=200)))
    a = sim.routers["a"]
    before = sum(a.drops.values())
    out = a.receive(iface_of(sim, "a"), bytes(raw), sim.now)
    assert isinstance(out, list)
    if mutation in ("truncate", "extend", "random"):
        assert sum(a.drops.values()) > before or raw in packets
    assert sim.run_until_converged(60) is not None


def test_wrong_area_and_own_id_and_unknown_interface_are_dropped():
    sim = pair()
    a, b = sim.routers["a"], sim.routers["b"]
    body = LinkStateAck(())
    wrong_area = encode_packet(OspfPacket(router_id=b.router_id, area_id="0.0.0.7", body=body))
    own = encode_packet(OspfPacket(router_id=a.router_id, area_id="0.0.0.1", body=body))
    a.receive(iface_of(sim, "a"), wrong_area, sim.now)
    a.receive(iface_of(sim, "a"), own, sim.now)
    a.receive("9.9.9.9", own, sim.now)
    a.receive(iface_of(sim, "a"), b"\x02\x05", sim.now)
    assert a.drops["area_mismatch"] == 1 and a.drops["own_router_id"] == 1
    assert a.drops["interface_unknown_or_down"] == 1 and a.drops["decode_error"] == 1
    assert a.last_decode_error.layer == "OSPF"

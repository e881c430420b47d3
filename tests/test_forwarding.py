"""The sans-IO forwarder (qbb/netlayer/forwarding.py) on routing tables of simulated networks."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, strategies as st

from qbb.netlayer.forwarding import (Deliver, Drop, Forwarder, ForwarderConfig, LoopFreeRule,
                                     OverloadPolicy, Send, reverse_costs)
from qbb.netlayer.icmp import (DestinationUnreachable, EchoReply, EchoRequest, SourceQuench,
                               TimeExceeded, UnreachableCode, decode_icmp, encode_icmp)
from qbb.netlayer.packet import QKDNLPacket, decode_packet, decrement_ttl, encode_packet
from qbb.routing.addressing import TopologySpec, plan_addresses
from qbb.routing.simulate import build_network
from qbb.wire import PROTO_ICMP, PROTO_OSPF, PROTO_QKDTL
from strategies_netlayer import mutated, qkdnl_bytes

NAMES = ("A", "B", "C", "D")
SQUARE = [("A", "B"), ("B", "C"), ("C", "D"), ("D", "A")]


def _symmetric(costs: dict) -> dict:
    return {**costs, **{(b, a): c for (a, b), c in costs.items()}}


@functools.lru_cache(maxsize=None)
def _network(costs: tuple) -> tuple:
    """A converged routing simulation of the square A-B-C-D-A and its address plan."""
    nodes = {name: 1 for name in NAMES}
    sim = build_network(nodes, SQUARE, _symmetric(dict(costs)))
    sim.start()
    assert sim.run_until_converged() is not None
    return sim, plan_addresses(TopologySpec(nodes=nodes, links=SQUARE))


def forwarder(name: str, costs: dict, **config) -> tuple[Forwarder, object]:
    sim, plan = _network(tuple(sorted(costs.items())))
    router = sim.routers[name]
    tables = router.tables(sim.now)
    fwd = Forwarder(router.router_id, [ln.address_of(name) for ln in plan.links_of(name)],
                    ForwarderConfig(**config))
    fwd.update_routes(tables, reverse_costs(tables, router.database(sim.now)))
    return fwd, plan


EQUAL = {("A", "B"): 1, ("B", "C"): 1, ("C", "D"): 1, ("D", "A"): 1}
# A -> C: primary via B (2); via D costs 1 + dist(D, C) = 1 + 2: loop-free, not downstream.
LFA_ONLY = {("A", "B"): 1, ("B", "C"): 1, ("C", "D"): 2, ("D", "A"): 1}
# A -> C: via D the neighbour's own path runs back through A: not loop-free.
NO_LFA = {("A", "B"): 1, ("B", "C"): 1, ("C", "D"): 10, ("D", "A"): 1}


def addr(plan, name: str) -> str:
    return plan.nodes[name].address


def iface(plan, name: str, peer: str) -> str:
    return plan.link(name, peer).address_of(name)


def packet(source, destination, protocol=PROTO_QKDTL, ttl=64, payload=b"k" * 16) -> bytes:
    return encode_packet(QKDNLPacket(source, destination, protocol, payload, ttl))


def sends(actions) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def icmp_of(send: Send):
    pkt = decode_packet(send.data)
    assert pkt.protocol == PROTO_ICMP
    return pkt, decode_icmp(pkt.payload)


# -- local delivery and checks -------------------------------------------------------------

def test_local_delivery_and_counters():
    fwd, plan = forwarder("A", EQUAL)
    data = packet(addr(plan, "C"), addr(plan, "A"))
    fwd.protocols.add(PROTO_QKDTL)
    [action] = fwd.handle(data, iface(plan, "A", "B"), 1.0)
    assert isinstance(action, Deliver) and action.packet == decode_packet(data)
    assert action.interface == iface(plan, "A", "B") and fwd.counters["delivered"] == 1
    # an interface address of the node is local too
    [action] = fwd.handle(packet(addr(plan, "C"), iface(plan, "A", "D")), None, 1.0)
    assert isinstance(action, Deliver)


def test_bad_checksum_and_malformed_are_dropped_and_counted():
    fwd, plan = forwarder("A", EQUAL)
    data = bytearray(packet(addr(plan, "C"), addr(plan, "A")))
    data[10] ^= 0x40
    assert fwd.handle(bytes(data), iface(plan, "A", "B"), 0.0) == [Drop("bad_checksum")]
    assert fwd.handle(b"\x45\x00", None, 0.0) == [Drop("malformed")]
    assert fwd.drops == {"bad_checksum": 1, "malformed": 1}


def test_protocol_unreachable_goes_back_to_the_source():
    fwd, plan = forwarder("A", EQUAL)
    data = packet(addr(plan, "C"), addr(plan, "A"), protocol=200)
    actions = fwd.handle(data, iface(plan, "A", "B"), 0.0)
    assert actions[0] == Drop("protocol_unreachable")
    [send] = sends(actions)
    pkt, message = icmp_of(send)
    assert pkt.destination == addr(plan, "C") and pkt.source == addr(plan, "A")
    assert message == DestinationUnreachable(UnreachableCode.PROTOCOL_UNREACHABLE, data[:28])
    assert send.priority == 5 and not send.encrypt


def test_echo_request_is_answered():
    fwd, plan = forwarder("A", EQUAL)
    request = encode_icmp(EchoRequest(7, 1, b"ping"))
    actions = fwd.handle(packet(addr(plan, "C"), addr(plan, "A"), PROTO_ICMP, payload=request),
                         iface(plan, "A", "B"), 0.0)
    assert isinstance(actions[0], Deliver)
    pkt, message = icmp_of(sends(actions)[0])
    assert message == EchoReply(7, 1, b"ping") and pkt.destination == addr(plan, "C")


def test_routing_group_delivered_on_arrival_never_forwarded():
    fwd, plan = forwarder("A", EQUAL)
    data = packet(iface(plan, "B", "A"), "224.0.0.5", PROTO_OSPF, ttl=1)
    fwd.protocols.add(PROTO_OSPF)
    [action] = fwd.handle(data, iface(plan, "A", "B"), 0.0)
    assert isinstance(action, Deliver)
    assert fwd.handle(data, None, 0.0) == [Drop("group_not_forwarded")]


# -- forwarding ------------------------------------------------------------------------------

def test_originated_packet_keeps_ttl_and_is_encrypted_for_qkdtl():
    fwd, plan = forwarder("A", EQUAL)
    data = packet(addr(plan, "A"), addr(plan, "C"), ttl=5)
    [send] = fwd.handle(data, None, 0.0)
    assert send.interface == iface(plan, "A", "B") and send.data == data
    assert send.encrypt and send.priority == 2


def test_transit_packet_has_ttl_decremented():
    fwd, plan = forwarder("B", EQUAL)
    data = packet(addr(plan, "A"), addr(plan, "C"), ttl=5)
    [send] = fwd.handle(data, iface(plan, "B", "A"), 0.0)
    assert send.interface == iface(plan, "B", "C") and send.data == decrement_ttl(data)
    assert decode_packet(send.data).ttl == 4 and fwd.counters["forwarded"] == 1


def test_ttl_expiry_sends_time_exceeded_to_the_source():
    fwd, plan = forwarder("B", EQUAL)
    data = packet(addr(plan, "A"), addr(plan, "C"), ttl=1)
    actions = fwd.handle(data, iface(plan, "B", "A"), 0.0)
    assert actions[0] == Drop("ttl_expired")
    [send] = sends(actions)
    assert send.interface == iface(plan, "B", "A")
    pkt, message = icmp_of(send)
    assert isinstance(message, TimeExceeded) and message.original == data[:28]
    assert pkt.source == addr(plan, "B") and fwd.counters["icmp_sent"] == 1


def test_no_route_and_host_unreachable():
    fwd, plan = forwarder("A", EQUAL)
    actions = fwd.handle(packet(addr(plan, "C"), "1.9.0.1"), iface(plan, "A", "B"), 0.0)
    assert actions[0] == Drop("no_route")
    assert icmp_of(sends(actions)[0])[1].code == UnreachableCode.NET_UNREACHABLE
    own_block_other_host = "1.1.0.6"
    assert plan.nodes["A"].address == "1.1.0.5"
    actions = fwd.handle(packet(addr(plan, "C"), own_block_other_host), iface(plan, "A", "B"), 0)
    assert actions[0] == Drop("host_unreachable")
    assert icmp_of(sends(actions)[0])[1].code == UnreachableCode.HOST_UNREACHABLE


def test_locally_originated_unreachable_is_reported_locally():
    fwd, plan = forwarder("A", EQUAL)
    actions = fwd.originate(QKDNLPacket(addr(plan, "A"), "1.9.0.1", PROTO_QKDTL, b"x"), 0.0)
    assert actions[0] == Drop("no_route")
    assert isinstance(actions[1], Deliver) and actions[1].packet.protocol == PROTO_ICMP


def test_never_icmp_about_icmp_errors():
    fwd, plan = forwarder("B", EQUAL)
    error = encode_icmp(TimeExceeded(0, b"x" * 28))
    data = packet(addr(plan, "A"), addr(plan, "C"), PROTO_ICMP, ttl=1, payload=error)
    assert fwd.handle(data, iface(plan, "B", "A"), 0.0) == [Drop("ttl_expired")]
    assert fwd.counters["icmp_suppressed"] == 1 and fwd.counters["icmp_sent"] == 0
    # an ICMP echo request is not an error: its expiry is reported
    echo = packet(addr(plan, "A"), addr(plan, "C"), PROTO_ICMP, 1, encode_icmp(EchoRequest(1, 1)))
    assert len(sends(fwd.handle(echo, iface(plan, "B", "A"), 0.0))) == 1


# -- load balancing ------------------------------------------------------------------------

def _overload(fwd: Forwarder, interface: str, now: float = 0.0) -> None:
    fwd.set_critical_load(interface, 1000.0)
    fwd.loads.record(interface, 10_000, now)


def test_overloaded_cheapest_link_moves_traffic_to_the_next_entry():
    fwd, plan = forwarder("A", LFA_ONLY)
    data = packet(addr(plan, "A"), addr(plan, "C"))
    assert fwd.handle(data, None, 0.0)[0].interface == iface(plan, "A", "B")
    _overload(fwd, iface(plan, "A", "B"))
    [send] = fwd.handle(data, None, 1.0)
    assert send.interface == iface(plan, "A", "D") and fwd.counters["alternate_used"] == 1


def test_loop_free_condition_rejects_an_alternate_that_leads_back():
    fwd, plan = forwarder("A", NO_LFA)
    data = packet(addr(plan, "A"), addr(plan, "C"))
    _overload(fwd, iface(plan, "A", "B"))
    [send] = fwd.handle(data, None, 1.0)
    assert send.interface == iface(plan, "A", "B")  # default link: the cheapest
    assert fwd.counters["lfa_rejected"] == 1 and fwd.counters["overload_default"] == 1


def test_overload_drop_policy_sends_source_quench():
    fwd, plan = forwarder("B", NO_LFA, overload=OverloadPolicy.DROP)
    for peer in ("A", "C"):
        _overload(fwd, iface(plan, "B", peer))
    data = packet(addr(plan, "A"), addr(plan, "C"))
    actions = fwd.handle(data, iface(plan, "B", "A"), 1.0)
    assert actions[0] == Drop("overloaded")
    assert isinstance(icmp_of(sends(actions)[0])[1], SourceQuench)


def test_downstream_rule_is_stricter_than_lfa():
    fwd, plan = forwarder("A", LFA_ONLY, loop_free=LoopFreeRule.DOWNSTREAM)
    _overload(fwd, iface(plan, "A", "B"))
    [send] = fwd.handle(packet(addr(plan, "A"), addr(plan, "C")), None, 1.0)
    assert send.interface == iface(plan, "A", "B") and fwd.counters["lfa_rejected"] == 1
    fwd, plan = forwarder("A", LFA_ONLY, loop_free=LoopFreeRule.NONE)
    _overload(fwd, iface(plan, "A", "B"))
    assert fwd.handle(packet(addr(plan, "A"), addr(plan, "C")), None, 1.0)[0].interface == \
        iface(plan, "A", "D")


def test_split_horizon_never_returns_a_packet_by_an_alternate():
    fwd, plan = forwarder("A", LFA_ONLY)
    _overload(fwd, iface(plan, "A", "B"))
    data = packet(addr(plan, "D"), addr(plan, "C"))
    [send] = fwd.handle(data, iface(plan, "A", "D"), 1.0)
    assert send.interface == iface(plan, "A", "B")
    assert fwd.counters["split_horizon_rejected"] == 1


def test_down_interface_is_skipped():
    fwd, plan = forwarder("A", LFA_ONLY)
    fwd.set_interface_up(iface(plan, "A", "B"), False)
    data = packet(addr(plan, "A"), addr(plan, "C"))
    assert fwd.handle(data, None, 0.0)[0].interface == iface(plan, "A", "D")
    fwd.set_interface_up(iface(plan, "A", "D"), False)
    actions = fwd.originate(decode_packet(data), 0.0)
    assert actions[0] == Drop("interface_down")


def test_no_tables_means_no_route():
    fwd = Forwarder("1.1.0.5")
    data = packet("1.1.0.9", "1.1.0.13")
    assert fwd.handle(data, "1.1.128.1", 0.0)[0] == Drop("no_route")


@pytest.mark.parametrize("name", NAMES)
def test_reverse_costs_match_symmetric_link_costs(name):
    sim, plan = _network(tuple(sorted(LFA_ONLY.items())))
    router = sim.routers[name]
    tables = router.tables(sim.now)
    back = reverse_costs(tables, router.database(sim.now))
    assert back == {a: i.cost for a, i in tables.interfaces.items()}


# -- robustness -------------------------------------------------------------------------------

ALLOWED = (Deliver, Send, Drop)


@given(st.one_of(st.binary(max_size=80), qkdnl_bytes(), mutated(qkdnl_bytes())),
       st.sampled_from([None, "1.1.128.1", "1.1.128.6"]))
def test_any_bytes_give_actions_only(data, arrived_on):
    fwd, _ = forwarder("A", EQUAL)
    actions = fwd.handle(data, arrived_on, 0.5)
    assert actions and all(isinstance(a, ALLOWED) for a in actions)

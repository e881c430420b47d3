"""LSDB aging, sequence numbers (wrap), origination, refresh and MaxAge (RFC 2328 §12-14)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from qbb.routing.lsa import (
    INITIAL_SEQUENCE_NUMBER, MAX_AGE, MAX_SEQUENCE_NUMBER, LinkType, LsType, RouterLink,
    RouterLSA, lsa_key)
from qbb.routing.lsdb import WRAP, AreaLsdb, next_sequence, same_contents
from qbb.routing.origination import Originator
from qbb.routing.packet import LinkStateUpdate
from routing_sim import Timers, build_network, inject, own_router_lsa, pair

RID = "1.1.0.5"


def router_lsa(seq=INITIAL_SEQUENCE_NUMBER, age=0, metric=1, rid=RID) -> RouterLSA:
    link = RouterLink(link_id="1.1.0.9", link_data="1.1.128.1",
                      link_type=LinkType.POINT_TO_POINT, metric=metric)
    return RouterLSA(link_state_id=rid, advertising_router=rid, ls_sequence_number=seq,
                     ls_age=age, links=(link,))


def test_age_is_derived_and_capped():
    lsdb = AreaLsdb("0.0.0.1")
    lsdb.install(router_lsa(age=10), 100.0)
    entry = lsdb.get(lsa_key(router_lsa()))
    assert entry.age(100.0) == 10 and entry.age(105.5) == 15
    assert entry.current(200.0).ls_age == 110
    assert entry.age(100.0 + MAX_AGE) == MAX_AGE
    assert lsdb.next_expiry() == 100.0 + MAX_AGE - 10


@settings(max_examples=30)
@given(st.integers(0, MAX_AGE), st.floats(0, 10_000))
def test_expiry_reported_once_at_maxage(age, elapsed):
    lsdb = AreaLsdb("0.0.0.1")
    lsdb.install(router_lsa(age=age), 0.0)
    expired = lsdb.newly_expired(elapsed)
    reached = age + int(elapsed) >= MAX_AGE
    assert expired == ([lsa_key(router_lsa())] if reached and age < MAX_AGE else [])
    assert lsdb.newly_expired(elapsed + 1) == [] or not reached
    assert (lsdb.maxage_keys(elapsed) != []) == reached


def test_install_reports_content_changes():
    lsdb = AreaLsdb("0.0.0.1")
    assert lsdb.install(router_lsa(), 0)
    assert not lsdb.install(router_lsa(seq=INITIAL_SEQUENCE_NUMBER + 1, age=3), 1)
    assert lsdb.install(router_lsa(seq=INITIAL_SEQUENCE_NUMBER + 2, metric=7), 2)
    assert lsdb.install(router_lsa(seq=INITIAL_SEQUENCE_NUMBER + 2, metric=7, age=MAX_AGE), 3)
    assert lsdb.version == 4 and len(lsdb) == 1
    assert lsdb.snapshot(3) == {} and len(lsdb.snapshot(3, include_maxage=True)) == 1
    lsdb.remove(lsa_key(router_lsa()))
    assert len(lsdb) == 0


def test_next_sequence_rules():
    assert next_sequence(None) == INITIAL_SEQUENCE_NUMBER
    assert next_sequence(router_lsa(seq=5)) == 6
    assert next_sequence(router_lsa(seq=MAX_SEQUENCE_NUMBER)) is WRAP
    assert same_contents(router_lsa(seq=1, age=9), router_lsa(seq=2))
    assert not same_contents(router_lsa(metric=1), router_lsa(metric=2))


# -- the originator ----------------------------------------------------------------------

def _originate(orig, lsdb, want, now):
    out = orig.reconcile("0.0.0.1", lsdb, {lsa_key(want): want} if want else {}, now)
    for lsa in out:
        lsdb.install(lsa, now)
    return out


def test_min_ls_interval_defers_changes():
    orig, lsdb = Originator(RID, min_ls_interval=5), AreaLsdb("0.0.0.1")
    (first,) = _originate(orig, lsdb, router_lsa(metric=1), 0.0)
    assert first.ls_sequence_number == INITIAL_SEQUENCE_NUMBER
    assert _originate(orig, lsdb, router_lsa(metric=1), 1.0) == []  # unchanged
    assert _originate(orig, lsdb, router_lsa(metric=2), 2.0) == []  # too soon
    assert orig.next_due([lsdb]) == 5.0
    (second,) = _originate(orig, lsdb, router_lsa(metric=2), 5.0)
    assert second.ls_sequence_number == INITIAL_SEQUENCE_NUMBER + 1 and not orig.deferred


def test_refresh_after_ls_refresh_time():
    orig, lsdb = Originator(RID, refresh_time=1800), AreaLsdb("0.0.0.1")
    _originate(orig, lsdb, router_lsa(), 0.0)
    assert orig.next_due([lsdb]) == 1800.0
    assert _originate(orig, lsdb, router_lsa(), 1799.0) == []
    (refreshed,) = _originate(orig, lsdb, router_lsa(), 1800.0)
    assert refreshed.ls_sequence_number == INITIAL_SEQUENCE_NUMBER + 1
    assert refreshed.ls_age == 0


def test_unwanted_own_lsa_is_flushed():
    orig, lsdb = Originator(RID), AreaLsdb("0.0.0.1")
    _originate(orig, lsdb, router_lsa(), 0.0)
    (flushed,) = _originate(orig, lsdb, None, 10.0)
    assert flushed.ls_age == MAX_AGE and flushed.ls_sequence_number == INITIAL_SEQUENCE_NUMBER
    assert _originate(orig, lsdb, None, 11.0) == []


def test_sequence_wrap_flushes_then_restarts():
    orig, lsdb = Originator(RID, min_ls_interval=0), AreaLsdb("0.0.0.1")
    lsdb.install(router_lsa(seq=MAX_SEQUENCE_NUMBER), 0.0)
    orig.force("0.0.0.1", lsa_key(router_lsa()))
    (flush,) = _originate(orig, lsdb, router_lsa(), 1.0)
    assert flush.ls_age == MAX_AGE and flush.ls_sequence_number == MAX_SEQUENCE_NUMBER
    assert _originate(orig, lsdb, router_lsa(), 2.0) == []  # waits for the flush
    lsdb.remove(lsa_key(router_lsa()))  # acknowledged by everybody: gone
    (fresh,) = _originate(orig, lsdb, router_lsa(), 3.0)
    assert fresh.ls_sequence_number == INITIAL_SEQUENCE_NUMBER


# -- through the protocol ----------------------------------------------------------------

def test_self_originated_newer_instance_and_wrap_over_the_wire():
    """b replays a's Router-LSA at MaxSequenceNumber: a flushes it and restarts (§12.1.6)."""
    sim = pair()
    stale = replace(own_router_lsa(sim, "a", "a"), ls_sequence_number=MAX_SEQUENCE_NUMBER)
    inject(sim, "a", "b", LinkStateUpdate((stale,)))
    assert sim.run_until_converged(60) is not None
    for holder in "ab":
        assert own_router_lsa(sim, holder, "a").ls_sequence_number == INITIAL_SEQUENCE_NUMBER
    assert sim.routers["a"].originator.flushed == 1


def test_self_originated_newer_instance_is_superseded():
    sim = pair()
    current = own_router_lsa(sim, "a", "a")
    replay = replace(current, ls_sequence_number=current.ls_sequence_number + 10, links=())
    inject(sim, "a", "b", LinkStateUpdate((replay,)))
    assert sim.run_until_converged(60) is not None
    for holder in "ab":
        lsa = own_router_lsa(sim, holder, "a")
        assert lsa.ls_sequence_number == replay.ls_sequence_number + 1
        assert same_contents(lsa, current)


def test_refresh_keeps_lsas_alive_and_orphans_age_out():
    """Refresh every LSRefreshTime; an LSA whose originator vanished is flushed at MaxAge."""
    timers = Timers(hello=10, dead=40, rxmt=5)
    sim = build_network({"a": 1, "b": 1, "c": 1}, [("a", "b"), ("b", "c")], timers=timers)
    sim.start()
    assert sim.run_until_converged(120) is not None
    c_key = (int(LsType.ROUTER), sim.routers["c"].router_id, sim.routers["c"].router_id)
    sim.power_off("c")
    sim.run(sim.now + 1000)
    assert c_key in sim.routers["a"].database()["0.0.0.1"]  # still within MaxAge
    a_seq = own_router_lsa(sim, "a", "a").ls_sequence_number
    sim.run(sim.now + MAX_AGE)
    assert c_key not in sim.routers["a"].lsdb("0.0.0.1")
    assert c_key not in sim.routers["b"].lsdb("0.0.0.1")
    assert own_router_lsa(sim, "b", "a").ls_sequence_number > a_seq  # refreshed
    assert own_router_lsa(sim, "b", "a").ls_age < MAX_AGE

"""Reliable flooding: LS Update, acknowledgement, retransmission (RFC 2328 §13, §13.3-13.7).

Receiving an LS Update from a neighbour in Exchange or later, each LSA is handled as in
§13 (the Fletcher checksum was already verified by the codec):

1. an unknown LS type (only 1 Router, 3 and 4 Summary are used) is discarded
   (counted as ``lsa_unknown_type``);
2. a MaxAge LSA with no database copy, while no neighbour of the area is in Exchange or
   Loading, is acknowledged and discarded;
3. a newer LSA (no copy, or §13.1 more recent) replaces the database copy - unless
   that copy was installed less than MinLSArrival ago (discarded, ``min_ls_arrival``);
   the old instance leaves every retransmission list, the new one is installed,
   flooded (:func:`flood`) and acknowledged; a self-originated one is handed to the
   originator (§13.4);
4. an LSA on the sender's request list that is not newer raises BadLSReq;
5. the same instance: an implied acknowledgement when it is on the sender's
   retransmission list, else a direct acknowledgement;
6. an older LSA: the database copy is sent back (unless it is MaxAge with
   MaxSequenceNumber, being flushed for a sequence wrap).

Acknowledgements (§13.5): QBB links are point-to-point, so the "delayed" acknowledgement
is sent at once, all LSAs of one LS Update in one LS Ack.  Flooding (§13.3) puts the LSA
on the retransmission list of every other neighbour of the area in Exchange or later
(after reconciling their request lists) and sends it with LS age + InfTransDelay.
Retransmission (§13.6): an unacknowledged LSA is resent every RxmtInterval in an LS
Update of its own neighbour; an LS Ack removes it when it names the same instance
(§13.7).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbb.routing.dbexchange import KNOWN_LS_TYPES, request_more
from qbb.routing.interface import Interface
from qbb.routing.lsa import MAX_AGE, MAX_SEQUENCE_NUMBER, Lsa, LsaHeader, lsa_key
from qbb.routing.lsdb import header_of, newer
from qbb.routing.neighbor import Neighbor, NeighborEvent, NeighborState
from qbb.routing.packet import LinkStateAck, LinkStateUpdate, OspfPacket

if TYPE_CHECKING:
    from qbb.routing.router import Router

__all__ = ["flood", "install", "on_ack", "on_retransmit_timer", "on_update"]

S, E = NeighborState, NeighborEvent


class _Stop(Exception):
    """BadLSReq: stop processing the rest of the LS Update (§13 step 6)."""


def on_update(router: Router, iface: Interface, packet: OspfPacket, lsu: LinkStateUpdate,
              now: float) -> None:
    """Process a received Link State Update (§13)."""
    nbr = router.exchanging_neighbor(iface, packet, "lsu")
    if nbr is None:
        return
    acks: list[LsaHeader] = []
    try:
        for lsa in lsu.lsas:
            _receive(router, iface, nbr, lsa, now, acks)
    except _Stop:
        pass
    if acks:
        router.send(iface, LinkStateAck(tuple(acks)))
    if nbr.state in (S.EXCHANGE, S.LOADING):
        request_more(router, iface, nbr, now)
    _check_loading(router, iface, nbr, now)


def _check_loading(router: Router, iface: Interface, nbr: Neighbor, now: float) -> None:
    if nbr.state is S.LOADING and not nbr.request_list:
        nbr.request_due = None
        router.neighbor_event(iface, E.LOADING_DONE, now)


def _receive(router: Router, iface: Interface, nbr: Neighbor, lsa: Lsa, now: float,
             acks: list[LsaHeader]) -> None:
    if int(lsa.ls_type) not in KNOWN_LS_TYPES:
        router.drop("lsa_unknown_type")
        return
    key, header = lsa_key(lsa), header_of(lsa)
    entry = router.lsdb(iface.area).get(key)
    if entry is None and lsa.ls_age >= MAX_AGE and not router.exchanging(iface.area):
        acks.append(header)
        return
    order = 1 if entry is None else newer(header, entry.header(now))
    if order > 0:
        own = lsa.advertising_router == router.router_id
        if entry is not None and not own and now - entry.installed_at < router.config.min_ls_arrival:
            router.drop("min_ls_arrival")
            return
        install(router, iface.area, lsa, now, sender=nbr)
        acks.append(header)
        if own:
            router.self_originated_received(iface.area, key)
        return
    if key in nbr.request_list:
        router.drop("bad_ls_request")
        router.neighbor_event(iface, E.BAD_LS_REQ, now)
        raise _Stop
    if order == 0:
        if nbr.retransmission.pop(key, None) is None:
            acks.append(header)
        return
    if entry.is_maxage(now) and entry.lsa.ls_sequence_number == MAX_SEQUENCE_NUMBER:
        return
    router.count("stale_lsas_answered")
    router.send_update(iface, [entry.current(now)], now)


def install(router: Router, area: str, lsa: Lsa, now: float,
            sender: Neighbor | None = None) -> None:
    """Install a new instance (§13 step 5c-d) and flood it (§13.3)."""
    key = lsa_key(lsa)
    for iface in router.interfaces_in(area):
        if iface.neighbor is not None:
            iface.neighbor.retransmission.pop(key, None)
    if router.lsdb(area).install(lsa, now):
        router.lsdb_changed(area)
    flood(router, area, lsa, now, sender)


def flood(router: Router, area: str, lsa: Lsa, now: float,
          sender: Neighbor | None = None) -> None:
    """Send ``lsa`` to every other neighbour of ``area`` in Exchange or later (§13.3)."""
    key = lsa_key(lsa)
    for iface in router.interfaces_in(area):
        nbr = iface.neighbor
        if nbr is None or nbr.state < S.EXCHANGE:
            continue
        if nbr.state < S.FULL and key in nbr.request_list:
            order = newer(lsa, nbr.request_list[key])
            if order < 0:
                continue
            del nbr.request_list[key]
            nbr.outstanding.discard(key)
            if nbr is not sender:
                _check_loading(router, iface, nbr, now)
            if order == 0:
                continue
        if nbr is sender:
            continue
        nbr.retransmission[key] = now + iface.config.rxmt_interval
        router.send_update(iface, [lsa], now)


def on_retransmit_timer(router: Router, iface: Interface, nbr: Neighbor, now: float) -> None:
    """Resend every LSA whose RxmtInterval elapsed unacknowledged (§13.6)."""
    lsdb = router.lsdb(iface.area)
    due = [key for key, t in nbr.retransmission.items() if t <= now + 1e-9]
    lsas = []
    for key in due:
        entry = lsdb.get(key)
        if entry is None:
            del nbr.retransmission[key]
            continue
        nbr.retransmission[key] = now + iface.config.rxmt_interval
        lsas.append(entry.current(now))
    if lsas:
        router.count("lsas_retransmitted", len(lsas))
        router.send_update(iface, lsas, now)


def on_ack(router: Router, iface: Interface, packet: OspfPacket, ack: LinkStateAck,
           now: float) -> None:
    """Remove acknowledged instances from the retransmission list (§13.7)."""
    nbr = router.exchanging_neighbor(iface, packet, "lsack")
    if nbr is None:
        return
    lsdb = router.lsdb(iface.area)
    for header in ack.lsa_headers:
        key = lsa_key(header)
        entry = lsdb.get(key)
        if key not in nbr.retransmission or entry is None:
            continue
        if newer(header, entry.header(now)) == 0:
            del nbr.retransmission[key]
        else:
            router.count("questionable_acks")

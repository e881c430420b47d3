"""Database exchange: Database Description and Link State Request (RFC 2328 §10.6-10.9).

Forming an adjacency (ExStart -> Exchange -> Loading -> Full):

* ExStart (:func:`start_exstart`): both ends claim master with an empty DD carrying
  I|M|MS and a fresh DD sequence number, retransmitted every RxmtInterval.  The router
  with the higher router ID (compared as 32-bit numbers) is master (§10.6 ExStart):
  the other one adopts the master's sequence number and answers as slave.
* Exchange: the master sends DDs with sequence numbers n, n+1, ... each listing a batch
  of LSA headers from its summary list and retransmits the last one every RxmtInterval
  until the slave answers with the same sequence number; the slave answers every DD
  and resends its last answer when the master repeats itself.  A DD with the wrong
  MS bit, with I set, with changed options or an unexpected sequence number raises
  SeqNumberMismatch (back to ExStart).  The exchange is done when both ends have sent
  a DD with M clear.
* Every listed header that is unknown locally or newer than the local instance goes
  on the request list; LS Requests for up to ``max_requests`` entries are outstanding at
  a time and retransmitted every RxmtInterval (§10.9).  A request for an LSA not in the
  database raises BadLSReq (§10.7).  Loading ends when the list is empty.

The functions take the router as context (``router.send``, ``router.send_raw``,
``router.send_update``, ``router.neighbor_event``, ``router.lsdb``, ``router.drop``).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from qbb.routing.interface import Interface
from qbb.routing.lsa import MAX_AGE, lsa_key
from qbb.routing.lsdb import newer
from qbb.routing.neighbor import Neighbor, NeighborEvent, NeighborState
from qbb.routing.packet import (
    DatabaseDescription, DdFlags, LinkStateRequest, LsRequest, OspfPacket)

if TYPE_CHECKING:
    from qbb.routing.router import Router

__all__ = ["KNOWN_LS_TYPES", "on_dd", "on_request", "on_request_timer", "on_dd_timer",
           "request_more", "start_exchange", "start_exstart"]

KNOWN_LS_TYPES = frozenset({1, 3, 4})
_INIT = DdFlags.I | DdFlags.M | DdFlags.MS
S, E = NeighborState, NeighborEvent


def _rid(router_id: str) -> int:
    return int(ipaddress.IPv4Address(router_id))


def start_exstart(router: Router, iface: Interface, nbr: Neighbor, now: float) -> None:
    """Enter ExStart: claim master with an empty I|M|MS DD (§10.3 2-WayReceived)."""
    nbr.dd_sequence = router.new_dd_sequence()
    nbr.master = True
    nbr.options = None
    _send_dd(router, iface, nbr, _INIT, (), now)


def start_exchange(router: Router, iface: Interface, nbr: Neighbor, now: float) -> None:
    """NegotiationDone: snapshot the database into the summary list (§10.3)."""
    rxmt = now + iface.config.rxmt_interval
    nbr.summary_list = []
    for header in router.lsdb(iface.area).headers(now):
        if header.ls_age >= MAX_AGE:
            nbr.retransmission[lsa_key(header)] = rxmt
        else:
            nbr.summary_list.append(header)


def _send_dd(router: Router, iface: Interface, nbr: Neighbor, flags: DdFlags,
             headers: tuple, now: float) -> None:
    dd = DatabaseDescription(interface_mtu=iface.config.mtu,
                             dd_sequence_number=nbr.dd_sequence, options=router.options,
                             flags=flags, lsa_headers=headers)
    nbr.last_sent_dd = router.send(iface, dd)
    nbr.more_sent = bool(flags & DdFlags.M)
    nbr.dd_rxmt_due = now + iface.config.rxmt_interval if nbr.master else None


def _send_next_dd(router: Router, iface: Interface, nbr: Neighbor, now: float) -> None:
    size = router.config.max_dd_headers
    batch, nbr.summary_list = tuple(nbr.summary_list[:size]), nbr.summary_list[size:]
    flags = (DdFlags.M if nbr.summary_list else DdFlags(0)) | (
        DdFlags.MS if nbr.master else DdFlags(0))
    _send_dd(router, iface, nbr, flags, batch, now)


def on_dd_timer(router: Router, iface: Interface, nbr: Neighbor, now: float) -> None:
    """The master's DD retransmission timer (§10.8)."""
    if nbr.last_sent_dd is not None and nbr.state in (S.EXSTART, S.EXCHANGE):
        router.send_raw(iface, nbr.last_sent_dd)
        nbr.dd_rxmt_due = now + iface.config.rxmt_interval
    else:
        nbr.dd_rxmt_due = None


def on_dd(router: Router, iface: Interface, packet: OspfPacket, dd: DatabaseDescription,
          now: float) -> None:
    """Process a received Database Description packet (§10.6)."""
    nbr = router.neighbor_of(iface, packet, "dd")
    if nbr is None:
        return
    if dd.interface_mtu > iface.config.mtu:
        router.drop("dd_mtu_mismatch")
        return
    if nbr.state is S.INIT:
        router.neighbor_event(iface, E.TWO_WAY_RECEIVED, now)
    if nbr.state is S.EXSTART:
        _exstart(router, iface, nbr, dd, now)
    elif nbr.state is S.EXCHANGE:
        _exchange(router, iface, nbr, dd, now)
    elif nbr.state in (S.LOADING, S.FULL):
        if _ident(dd) != nbr.last_received_dd:
            router.neighbor_event(iface, E.SEQ_NUMBER_MISMATCH, now)
        elif not nbr.master and nbr.last_sent_dd is not None:
            router.send_raw(iface, nbr.last_sent_dd)
    else:
        router.drop("dd_neighbor_state")


def _ident(dd: DatabaseDescription) -> tuple:
    return (dd.flags, dd.options, dd.dd_sequence_number)


def _exstart(router: Router, iface: Interface, nbr: Neighbor, dd: DatabaseDescription,
             now: float) -> None:
    theirs, ours = _rid(nbr.router_id), _rid(router.router_id)
    if dd.flags & _INIT == _INIT and not dd.lsa_headers and theirs > ours:
        nbr.master = False
        nbr.dd_sequence = dd.dd_sequence_number
        nbr.dd_rxmt_due = None
    elif (not dd.flags & (DdFlags.I | DdFlags.MS) and theirs < ours
          and dd.dd_sequence_number == nbr.dd_sequence):
        nbr.master = True
    else:
        router.count("dd_exstart_ignored")
        return
    nbr.options = dd.options
    router.neighbor_event(iface, E.NEGOTIATION_DONE, now)
    nbr.last_received_dd = _ident(dd)
    _accept(router, iface, nbr, dd, now)


def _exchange(router: Router, iface: Interface, nbr: Neighbor, dd: DatabaseDescription,
              now: float) -> None:
    if _ident(dd) == nbr.last_received_dd:
        if not nbr.master and nbr.last_sent_dd is not None:
            router.send_raw(iface, nbr.last_sent_dd)
        return
    expected = nbr.dd_sequence if nbr.master else (nbr.dd_sequence + 1) & 0xFFFFFFFF
    if (bool(dd.flags & DdFlags.MS) == nbr.master or dd.flags & DdFlags.I
            or dd.options != nbr.options or dd.dd_sequence_number != expected):
        router.neighbor_event(iface, E.SEQ_NUMBER_MISMATCH, now)
        return
    nbr.last_received_dd = _ident(dd)
    _accept(router, iface, nbr, dd, now)


def _accept(router: Router, iface: Interface, nbr: Neighbor, dd: DatabaseDescription,
            now: float) -> None:
    """The DD is next in sequence: note what to request, answer or go on (§10.6, §10.8)."""
    lsdb = router.lsdb(iface.area)
    for header in dd.lsa_headers:
        if int(header.ls_type) not in KNOWN_LS_TYPES:
            router.neighbor_event(iface, E.SEQ_NUMBER_MISMATCH, now)
            return
        key = lsa_key(header)
        entry = lsdb.get(key)
        if entry is None or newer(header, entry.header(now)) > 0:
            nbr.request_list[key] = header
    their_more = bool(dd.flags & DdFlags.M)
    if nbr.master:
        nbr.dd_sequence = (nbr.dd_sequence + 1) & 0xFFFFFFFF
        if not nbr.more_sent and not their_more:
            nbr.dd_rxmt_due = None
            router.neighbor_event(iface, E.EXCHANGE_DONE, now)
        else:
            _send_next_dd(router, iface, nbr, now)
    else:
        nbr.dd_sequence = dd.dd_sequence_number
        _send_next_dd(router, iface, nbr, now)
        if not their_more and not nbr.more_sent:
            router.neighbor_event(iface, E.EXCHANGE_DONE, now)
    if nbr.state in (S.EXCHANGE, S.LOADING):
        request_more(router, iface, nbr, now)


# -- Link State Requests (§10.7, §10.9) ----------------------------------------------

def request_more(router: Router, iface: Interface, nbr: Neighbor, now: float) -> None:
    """Send the next LS Request unless one is still outstanding (§10.9)."""
    if nbr.outstanding & nbr.request_list.keys():
        return
    batch = list(nbr.request_list)[:router.config.max_requests]
    nbr.outstanding = set(batch)
    if not batch:
        nbr.request_due = None
        return
    requests = tuple(LsRequest(t, lsid, adv) for t, lsid, adv in batch)
    router.send(iface, LinkStateRequest(requests))
    nbr.request_due = now + iface.config.rxmt_interval


def on_request_timer(router: Router, iface: Interface, nbr: Neighbor, now: float) -> None:
    """No answer within RxmtInterval: request again what is still missing."""
    nbr.outstanding = set()
    nbr.request_due = None
    if nbr.state in (S.EXCHANGE, S.LOADING):
        request_more(router, iface, nbr, now)


def on_request(router: Router, iface: Interface, packet: OspfPacket,
               lsr: LinkStateRequest, now: float) -> None:
    """Answer a Link State Request with the LSAs asked for (§10.7)."""
    nbr = router.exchanging_neighbor(iface, packet, "lsr")
    if nbr is None:
        return
    lsdb = router.lsdb(iface.area)
    lsas = []
    for request in lsr.requests:
        entry = lsdb.get((request.ls_type, request.link_state_id, request.advertising_router))
        if entry is None:
            router.drop("lsr_unknown_lsa")
            router.neighbor_event(iface, E.BAD_LS_REQ, now)
            return
        lsas.append(entry.current(now))
    router.send_update(iface, lsas, now)

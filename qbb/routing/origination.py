"""Origination of the router's own LSAs (RFC 2328 §12.4, §12.1.6, §13.4, §14.1).

What a router advertises into each of its areas is a pure function of its interfaces
(:func:`router_lsa`) and, for an area border router, of its routing tables
(Summary-LSAs from :func:`qbb.routing.interarea.summaries_to_originate`, when that
module exists).  :class:`Originator` reconciles that *desired* set with the router's
own instances in the area database and returns the new instances to install and flood:

* a desired LSA whose contents (everything but age and sequence number) differ from
  the installed instance, or that is LSRefreshTime old, or that must be re-originated
  because a newer instance from an earlier incarnation arrived (§13.4, :meth:`force`)
  gets the next sequence number - no sooner than MinLSInterval after the previous
  instance of the same LSA (later changes are deferred to that time, §12.4);
* an installed own LSA that is no longer desired is flushed: re-issued at MaxAge
  (premature aging, §14.1);
* sequence wrap (§12.1.6): an instance at MaxSequenceNumber is flushed first; the
  router removes it once every neighbour acknowledged it, and the next reconciliation
  originates the LSA afresh with InitialSequenceNumber.

Router-LSA of a QBB node (shared routing conventions, seed 002 §2.3, Fig. 18): for each
up interface of the area whose neighbour is Full, a point-to-point link (link ID =
neighbour's router ID, link data = own interface address, metric = own output cost) and
a stub link for the link's /30 (network, mask, own cost); in the node's home area a stub
link for the node's own /30 block (metric 0).  Flag B is set on area border routers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

from qbb.routing.interface import Interface, network_of
from qbb.routing.lsa import MAX_AGE, LinkType, Lsa, RouterFlags, RouterLink, RouterLSA
from qbb.routing.lsdb import WRAP, AreaLsdb, next_sequence, same_contents, with_age
from qbb.routing.neighbor import NeighborState

__all__ = ["LS_REFRESH_TIME", "MIN_LS_INTERVAL", "Originator", "router_lsa"]

LS_REFRESH_TIME = 1800  # seconds (RFC 2328 Appendix B)
MIN_LS_INTERVAL = 5
Key = tuple[int, str, str]
AreaKey = tuple[str, Key]


def router_lsa(router_id: str, area: str, interfaces: Iterable[Interface], *,
               node_mask: str | None, border: bool) -> RouterLSA:
    """The Router-LSA for ``area`` (sequence number and age left at their defaults).

    ``node_mask`` is the mask of the node's own block when ``area`` is its home area
    (the stub for the node address goes there), else None.
    """
    links = []
    if node_mask is not None:
        links.append(RouterLink(link_id=network_of(router_id, node_mask), link_data=node_mask,
                                link_type=LinkType.STUB, metric=0))
    for iface in sorted(interfaces, key=lambda i: i.address):
        nbr = iface.neighbor
        if iface.area != area or not iface.is_up or nbr is None:
            continue
        if nbr.state is not NeighborState.FULL:
            continue
        links.append(RouterLink(link_id=nbr.router_id, link_data=iface.address,
                                link_type=LinkType.POINT_TO_POINT, metric=iface.cost))
        links.append(RouterLink(link_id=iface.config.network, link_data=iface.config.mask,
                                link_type=LinkType.STUB, metric=iface.cost))
    flags = RouterFlags.B if border else RouterFlags(0)
    return RouterLSA(link_state_id=router_id, advertising_router=router_id, flags=flags,
                     links=tuple(links))


class Originator:
    """Sequence numbers, MinLSInterval and refresh of one router's own LSAs."""

    def __init__(self, router_id: str, *, min_ls_interval: float = MIN_LS_INTERVAL,
                 refresh_time: float = LS_REFRESH_TIME) -> None:
        self.router_id = router_id
        self.min_ls_interval = min_ls_interval
        self.refresh_time = refresh_time
        self.last: dict[AreaKey, float] = {}
        self.deferred: dict[AreaKey, float] = {}
        self.forced: set[AreaKey] = set()
        self.originated = 0
        self.flushed = 0

    def force(self, area: str, key: Key) -> None:
        """A newer instance of our own LSA arrived (§13.4): issue a newer one (or flush)."""
        self.forced.add((area, key))

    def holds(self, area: str, key: Key) -> bool:
        """A new instance of this LSA is due: keep a flushed copy (its sequence number)."""
        return (area, key) in self.deferred or (area, key) in self.forced

    def reconcile(self, area: str, lsdb: AreaLsdb, desired: Mapping[Key, Lsa],
                  now: float) -> list[Lsa]:
        """New own instances for ``area`` (install and flood them, in order)."""
        own = {key for key in lsdb.entries if key[2] == self.router_id}
        # a deferred or forced LSA may be neither installed (flushed and removed) nor
        # desired any more: visit it too, so that its pending origination is dropped
        waiting = {key for a, key in (*self.deferred, *self.forced) if a == area}
        out = []
        for key in sorted(own | set(desired) | waiting):
            lsa = self._one(area, lsdb, key, desired.get(key), now)
            if lsa is not None:
                out.append(lsa)
        return out

    def _one(self, area: str, lsdb: AreaLsdb, key: Key, want: Lsa | None,
             now: float) -> Lsa | None:
        entry = lsdb.get(key)
        current = entry.lsa if entry is not None else None
        maxage = entry is not None and entry.is_maxage(now)
        ak = (area, key)
        if want is None:
            self.deferred.pop(ak, None)
            self.forced.discard(ak)
            if entry is None or maxage:
                return None
            return self._flush(current)
        if maxage and next_sequence(current) is WRAP:
            return None  # wrap in progress: wait until the flushed instance is gone
        if (entry is not None and not maxage and ak not in self.forced
                and same_contents(current, want) and entry.age(now) < self.refresh_time):
            self.deferred.pop(ak, None)
            return None
        earliest = self.last.get(ak, -math.inf) + self.min_ls_interval
        if now < earliest - 1e-9:
            self.deferred[ak] = earliest
            return None
        self.deferred.pop(ak, None)
        self.forced.discard(ak)
        sequence = next_sequence(current)
        if sequence is WRAP:
            return self._flush(current)
        self.last[ak] = now
        self.originated += 1
        return replace(want, ls_sequence_number=sequence, ls_age=0)

    def _flush(self, current: Lsa) -> Lsa:
        self.flushed += 1
        return with_age(current, MAX_AGE)

    def next_due(self, lsdbs: Iterable[AreaLsdb]) -> float | None:
        """Earliest deferred origination or refresh (LSRefreshTime) of an own LSA."""
        times = list(self.deferred.values())
        for lsdb in lsdbs:
            for key, entry in lsdb.entries.items():
                if key[2] == self.router_id and entry.lsa.ls_age < MAX_AGE:
                    times.append(entry.installed_at + self.refresh_time - entry.lsa.ls_age)
        return min(times) if times else None

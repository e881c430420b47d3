"""Inter-area routing without a backbone (seed 002 §2.3, Appendix A; RFC 2328 12.4.3, 16.2).

SECOQC areas join in any connected graph: there is no backbone area through which all
inter-area traffic passes, so RFC 2328's hierarchy (ABRs summarise only intra-area routes
into the backbone and backbone routes into the other areas) does not apply.  Instead the
area border routers (ABRs: routers with a Router-LSA in more than one area, flag B set)
run a distance vector over the graph of areas, carried in type 3 Summary-LSAs:

* **Origination** (:func:`summaries_to_originate`).  An ABR advertises into each of its
  areas X one Summary-LSA per network N of its standard routing table, metric = the
  route's cost, unless

  - the route's area is X (**split horizon by area**: never advertise into X a route
    whose best path at this ABR runs through X, intra-area or learned from X's
    summaries), or
  - N is one of the ABR's own stub networks in X (routers of X already see it), or
  - the cost is not below LSInfinity (0xFFFFFF, RFC 2328 B).

  Nodes (``R`` routes) are not summarised: a node is reached through its node address,
  which lies in its own /30 block, a network.  So no type 4 Summary-LSA is needed (there
  are no AS boundary routers either).  The result is the complete set the ABR should
  have in each of its areas: a summary it originated earlier and that is no longer in
  the set must be flushed (premature aging, RFC 2328 14.1); that is how an unreachable
  network is withdrawn.  When two summaries of one area share a network address with
  different masks, the shorter mask gets the host bits set in its Link State ID
  (RFC 2328 Appendix E); receivers take ``Link State ID & mask``.
* **Use** (:func:`offer_inter_area`, RFC 2328 16.2 without the backbone restriction: an
  ABR examines the summaries of all its areas).  A Summary-LSA of ABR R (flag B set,
  metric < LSInfinity, not originated by the computing router) in area X gives the
  inter-area candidate ``dist_X(self, R) + metric`` through the interface leading to R.
  Intra-area routes are always preferred (:func:`qbb.routing.table.preference`).

**Convergence and loop freedom.**  From any start, repeated origination and
computation over a fixed topology reaches a fixpoint in which every ABR's advertised
metric is its best cost (Bellman-Ford over the overlay graph whose edges join two routers
of one area with their intra-area distance; split horizon never removes an optimal
alternative, since an ABR whose best route is via X has an X-neighbour ABR offering it
cheaper by the triangle inequality).  The cost a router believes for an inter-area
network is then the shortest such overlay path, with one rule: a router that reaches N
intra-area uses that route (OSPF's preference), even when leaving its area would be
cheaper.  With positive link costs, following next hops never loops: along inter-area
hops the believed cost strictly decreases, and once a hop is intra-area, every later hop
follows intra-area shortest-path trees with strictly decreasing cost.  The preference
for intra-area routes can make the forwarded path costlier than the cost believed
upstream (as in OSPF).

**Feasibility condition** (no counting to infinity; EIGRP's source node condition,
Babel's feasibility distance, RFC 8966 §3.5.1).  A plain distance vector counts to
infinity when a network is withdrawn and two ABRs share two areas: each takes the
other's stale summary from the area it does not advertise into (split horizon by area
does not see the loop).  So an ABR keeps, per network, its *feasible distance* FD: the
smallest cost it has held since the entry was last reset (:class:`FeasibilityState`).
A summary of metric m is feasible only if m < FD; intra-area routes always are.  The
route chosen from feasible candidates is the standard route and the one summarised.
Every advertised metric is at least its advertiser's FD, and along a chain of ABRs each
using the next, FD strictly decreases: no loop can form, even from stale summaries.
A destination whose preferred (unconstrained) route is not feasible is *held*: the
feasible route (or none) is used, its per-interface and extended entries are the
feasible ones, and after ``hold`` seconds (long enough for stale summaries to be
flushed) its FD is reset and the unconstrained choice taken.  While a hold runs the
router reports :meth:`~qbb.routing.router.Router.pending`, so the simulator's quiescence
is the unconstrained fixpoint above.  FD entries of unreachable networks are forgotten
after the same hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from qbb.routing.lsa import MAX_AGE, LinkType, LsType, RouterLSA, SummaryLSA
from qbb.routing.table import DestType, NextHop, PathType, Route, RoutingTables, int_ip, ip_int

if TYPE_CHECKING:
    from qbb.routing.spf import AreaGraph, Database

__all__ = ["FeasibilityState", "LS_INFINITY", "offer_inter_area", "summaries_to_originate"]

LS_INFINITY = 0xFFFFFF
_INTER = PathType.INTER_AREA
_N = DestType.NETWORK


def offer_inter_area(best: dict, graph: AreaGraph, dist: list, base: int, hop: NextHop,
                     hop_key: int, feasible: Mapping | None = None) -> None:
    """Offer the inter-area candidates of ``graph``'s summaries through one interface.

    ``dist`` comes from the Dijkstra run from the interface's neighbour without the
    computing router (so its own summaries are never reached); ``base`` is the
    interface cost.  ``best`` maps route keys to ``(preference, Route fields)``.
    With ``feasible`` (route key -> feasible distance), a summary whose metric is not
    below the key's feasible distance is left out (the feasibility condition).
    """
    area, area_key, border, keys = graph.area, ip_int(graph.area), graph.border, graph.keys
    for adv, network, mask, metric in graph.summaries:
        d = dist[adv]
        if d is None or not border[adv]:
            continue
        if feasible and metric >= feasible.get((_N, network, mask), LS_INFINITY + 1):
            continue
        cost = base + d + metric
        key = (_N, network, mask)
        pref = (1, cost, hop_key, area_key, keys[adv])
        current = best.get(key)
        if current is None or pref < current[0]:
            best[key] = (pref, Route(_N, network, mask, area, _INTER, cost, hop, graph.ids[adv]))


def _own_router_lsa(router_id: str, lsdb: Mapping) -> RouterLSA | None:
    lsa = lsdb.get((int(LsType.ROUTER), router_id, router_id))
    if isinstance(lsa, RouterLSA) and lsa.ls_age < MAX_AGE:
        return lsa
    return None


def _own_stubs(lsa: RouterLSA) -> set[tuple[str, str]]:
    return {(int_ip(ip_int(link.link_id) & ip_int(link.link_data)), link.link_data)
            for link in lsa.links if link.link_type == LinkType.STUB}


def summaries_to_originate(router_id: str, database: Database,
                           tables: RoutingTables) -> dict[str, list[SummaryLSA]]:
    """The Summary-LSAs ``router_id`` should originate, per area it belongs to.

    Every area holding the router's own (not MaxAge) Router-LSA is a key; a router in
    fewer than two areas is no ABR and gets empty lists.  The LSAs carry the default
    sequence number and age: the caller gives them its own.  Sorted by Link State ID.
    """
    own = {area: lsa for area in sorted(database, key=ip_int)
           if (lsa := _own_router_lsa(router_id, database[area])) is not None}
    result: dict[str, list[SummaryLSA]] = {area: [] for area in own}
    if len(own) < 2:
        return result
    routes = [r for r in tables.main.values()
              if r.dest_type is _N and r.cost < LS_INFINITY]
    for area, lsa in own.items():
        stubs = _own_stubs(lsa)
        chosen = [r for r in routes if r.area != area and (r.dest_id, r.mask) not in stubs]
        result[area] = _as_lsas(router_id, chosen)
    return result


def _as_lsas(router_id: str, routes: list) -> list[SummaryLSA]:
    """Summary-LSAs for ``routes``, Link State IDs made unique (RFC 2328 Appendix E)."""
    longest: dict[str, int] = {}
    for r in routes:
        longest[r.dest_id] = max(longest.get(r.dest_id, 0), ip_int(r.mask))
    lsas = []
    for r in routes:
        lsid = r.dest_id
        if ip_int(r.mask) != longest[r.dest_id]:
            lsid = int_ip(ip_int(r.dest_id) | (~ip_int(r.mask) & 0xFFFFFFFF))
        lsas.append(SummaryLSA(ls_type=LsType.SUMMARY_NETWORK, link_state_id=lsid,
                               advertising_router=router_id, network_mask=r.mask,
                               metric=r.cost))
    lsas.sort(key=lambda s: (ip_int(s.link_state_id), ip_int(s.network_mask)))
    return lsas


class FeasibilityState:
    """One ABR's feasible distances and hold timers (see the module docstring)."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.fd: dict[tuple, int] = {}
        self.held: dict[tuple, float] = {}  # constrained key -> reset time
        self.orphans: dict[tuple, float] = {}  # unreachable key -> forget time
        self.resets = 0

    def observe(self, tables: RoutingTables, now: float) -> None:
        """Lower FDs to the chosen costs; start or stop holds (after each computation)."""
        fd, held, orphans = self.fd, self.held, self.orphans
        main = tables.main
        for key, route in main.items():
            if key[0] is _N and route.cost < fd.get(key, LS_INFINITY + 1):
                fd[key] = route.cost
        for key in tables.constrained:
            held.setdefault(key, now + self.hold)
        for key in [k for k in held if k not in tables.constrained]:
            del held[key]
        for key in fd:
            if key not in main and key not in held:
                orphans.setdefault(key, now + self.hold)
        for key in [k for k in orphans if k in main or k in held]:
            del orphans[key]

    def expire(self, now: float) -> bool:
        """Reset the FDs whose hold is over; True if a constrained one was reset."""
        changed = False
        for timers, constrained in ((self.held, True), (self.orphans, False)):
            for key in [k for k, t in timers.items() if t <= now + 1e-9]:
                del timers[key]
                self.fd.pop(key, None)
                if constrained:
                    self.resets += 1
                    changed = True
        return changed

    def next_due(self) -> float | None:
        times = [*self.held.values(), *self.orphans.values()]
        return min(times) if times else None

    def clear(self) -> None:
        self.fd.clear()
        self.held.clear()
        self.orphans.clear()

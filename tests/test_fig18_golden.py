"""Golden example: seed 002 Figure 18 (Area 1), Table III (its LSDB) and Table I (QBB1's table).

Reconstruction (the text extraction of Figure 18 and Table III is garbled; see
docs/routing.md, "Golden example"):

* Area 1 holds QBB1..QBB4 on a square of point-to-point links with asymmetric costs
  QBB1->QBB2 6, QBB2->QBB1 5, QBB1->QBB3 7, QBB3->QBB1 8, QBB2->QBB4 4, QBB4->QBB2 1,
  QBB3->QBB4 2, QBB4->QBB3 2 (the only assignment consistent with Table I's costs).
* N1..N4 are the node networks of QBB1..QBB4 (/30, cost 0 from their node).
* QBB4 is the area border router; its summaries: NA2 3, NA3 10, NA4 8, NA5 2 (areas 2..5,
  /16 each, addresses 1.<area>.0.0 as in seed §2.3).
* Table I gives NA4 cost 16, but 9 (to QBB4) + 8 (the seed's own "the general cost of
  reaching a node in Area 4 is 8") is 17: the seed's table has an arithmetic slip, we
  expect 17.  Table I's area column for inter-area rows names the destination's area
  (2..5); ours names the area the route was computed in (1), as in RFC 2328.
"""

from __future__ import annotations

from qbb.routing.interarea import summaries_to_originate
from qbb.routing.lsa import (
    LinkType, LsType, RouterFlags, RouterLink, RouterLSA, SummaryLSA, lsa_key)
from qbb.routing.spf import area_graph, compute_tables
from qbb.routing.table import DestType, PathType

AREA = "0.0.0.1"
SLASH30, SLASH16 = "255.255.255.252", "255.255.0.0"
QBB = {k: f"1.1.0.{4 * (k - 1) + 1}" for k in range(1, 5)}  # node addresses
N = {k: f"1.1.0.{4 * (k - 1)}" for k in range(1, 5)}  # node networks N1..N4
NA = {k: f"1.{k}.0.0" for k in range(2, 6)}
COST = {(1, 2): 6, (2, 1): 5, (1, 3): 7, (3, 1): 8, (2, 4): 4, (4, 2): 1, (3, 4): 2, (4, 3): 2}
LINKS = {frozenset((1, 2)): "1.1.1.0", frozenset((1, 3)): "1.1.1.4",
         frozenset((2, 4)): "1.1.1.8", frozenset((3, 4)): "1.1.1.12"}
SUMMARY = {2: 3, 3: 10, 4: 8, 5: 2}

#: Table III reconstructed: (from, to) -> cost; "to" is QBBk, Nk or NAk
TABLE_III = {**{(f"QBB{a}", f"QBB{b}"): c for (a, b), c in COST.items()},
             **{(f"QBB{k}", f"N{k}"): 0 for k in range(1, 5)},
             **{("QBB4", f"NA{k}"): c for k, c in SUMMARY.items()}}

#: Table I: type, destination, mask, path type, cost, next hop (None = '*'), adv router
TABLE_I = [
    ("N", "N1", SLASH30, "intra", 0, None, "QBB1"),
    ("N", "N2", SLASH30, "intra", 6, "QBB2", "QBB2"),
    ("N", "N3", SLASH30, "intra", 7, "QBB3", "QBB3"),
    ("N", "N4", SLASH30, "intra", 9, "QBB3", "QBB4"),
    ("R", "QBB2", None, "intra", 6, "QBB2", "QBB2"),
    ("R", "QBB3", None, "intra", 7, "QBB3", "QBB3"),
    ("R", "QBB4", None, "intra", 9, "QBB3", "QBB4"),
    ("N", "NA2", SLASH16, "inter", 12, "QBB3", "QBB4"),
    ("N", "NA3", SLASH16, "inter", 19, "QBB3", "QBB4"),
    ("N", "NA4", SLASH16, "inter", 17, "QBB3", "QBB4"),  # seed prints 16, see docstring
    ("N", "NA5", SLASH16, "inter", 11, "QBB3", "QBB4"),
]


def _address(me: int, other: int) -> str:
    net = LINKS[frozenset((me, other))]
    last = int(net.rsplit(".", 1)[1]) + (1 if me < other else 2)
    return f"{net.rsplit('.', 1)[0]}.{last}"


def _router_lsa(k: int) -> RouterLSA:
    links = []
    for (a, b), cost in sorted(COST.items()):
        if a == k:
            links.append(RouterLink(link_id=QBB[b], link_data=_address(a, b),
                                    link_type=LinkType.POINT_TO_POINT, metric=cost))
            links.append(RouterLink(link_id=LINKS[frozenset((a, b))], link_data=SLASH30,
                                    link_type=LinkType.STUB, metric=cost))
    links.append(RouterLink(link_id=N[k], link_data=SLASH30, link_type=LinkType.STUB, metric=0))
    flags = RouterFlags.B if k == 4 else RouterFlags(0)
    return RouterLSA(link_state_id=QBB[k], advertising_router=QBB[k], flags=flags, links=links)


def database() -> dict:
    lsas = [_router_lsa(k) for k in range(1, 5)]
    lsas += [SummaryLSA(ls_type=LsType.SUMMARY_NETWORK, link_state_id=NA[k],
                        advertising_router=QBB[4], network_mask=SLASH16, metric=m)
             for k, m in SUMMARY.items()]
    return {AREA: {lsa_key(lsa): lsa for lsa in lsas}}


NAME = {**{v: f"QBB{k}" for k, v in QBB.items()}, **{v: f"N{k}" for k, v in N.items()},
        **{v: f"NA{k}" for k, v in NA.items()}}


def test_lsdb_is_table_iii() -> None:
    graph = area_graph(AREA, database()[AREA])
    found = {}
    for u, edges in enumerate(graph.adjacency):
        for v, cost in edges:
            found[(NAME[graph.ids[u]], NAME[graph.ids[v]])] = cost
        for _key, net, _mask, metric in graph.stubs[u]:
            if net in NAME:
                found[(NAME[graph.ids[u]], NAME[net])] = metric
    for adv, net, _mask, metric in graph.summaries:
        found[(NAME[graph.ids[adv]], NAME[net])] = metric
    assert found == TABLE_III


def test_routing_table_of_qbb1_is_table_i() -> None:
    tables = compute_tables(QBB[1], database())
    rows = []
    for dest_type, dest, mask, path, cost, hop, adv in TABLE_I:
        rows.append((DestType(dest_type), NAME_TO_ADDR[dest], mask, AREA,
                     PathType.INTRA_AREA if path == "intra" else PathType.INTER_AREA, cost,
                     None if hop is None else NAME_TO_ADDR[hop], NAME_TO_ADDR[adv]))
    got = [(r.dest_type, r.dest_id, r.mask, r.area, r.path_type, r.cost,
            None if r.next_hop is None else r.next_hop.neighbor, r.advertising_router)
           for r in tables.main.values() if r.dest_id in NAME]
    assert sorted(got, key=str) == sorted(rows, key=str)
    # the four link networks complete the table (not listed in Table I)
    assert len(tables.main) == len(TABLE_I) + 4


NAME_TO_ADDR = {v: k for k, v in NAME.items()}


def test_per_interface_and_extended_tables_of_qbb1() -> None:
    tables = compute_tables(QBB[1], database())
    via2, via3 = _address(1, 2), _address(1, 3)
    assert set(tables.per_interface) == {via2, via3}
    costs = {iface: {NAME[r.dest_id]: r.cost for r in t.values() if r.dest_id in NAME}
             for iface, t in tables.per_interface.items()}
    assert costs[via2] == {"N1": 0, "QBB2": 6, "N2": 6, "QBB4": 10, "N4": 10, "QBB3": 12,
                           "N3": 12, "NA2": 13, "NA3": 20, "NA4": 18, "NA5": 12}
    assert costs[via3] == {"N1": 0, "QBB3": 7, "N3": 7, "QBB4": 9, "N4": 9, "QBB2": 10,
                           "N2": 10, "NA2": 12, "NA3": 19, "NA4": 17, "NA5": 11}
    entries = tables.extended.lookup("1.5.7.7")
    assert [(r.cost, r.next_hop.neighbor) for r in entries] == [(11, QBB[3]), (12, QBB[2])]
    assert tables.extended.lookup(QBB[1])[0].next_hop is None


def test_qbb4_is_the_only_border_router() -> None:
    db = database()
    tables = compute_tables(QBB[1], db)
    assert summaries_to_originate(QBB[1], db, tables) == {AREA: []}
    assert tables.main.lookup("1.3.200.1").advertising_router == QBB[4]

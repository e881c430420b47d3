"""Routing tables of a QBB node (SECOQC seed 002 §2.5.2, Table I, Appendix C).

A :class:`Route` has the columns of the seed's routing table: destination type (``N``
network, ``R`` QBB node), destination id, address mask (``None`` for a node: the seed's
``*``), area, path type (intra-area / inter-area), cost, next hop (neighbour router id and
the local interface it is reached through; ``None`` for a local destination, the seed's
``*``) and advertising router (the router whose LSA described the destination: the
Router-LSA listing the stub network or the router itself for intra-area routes, the
Summary-LSA's area border router for inter-area routes).

A router keeps three kinds of table (seed §2.5.2, §2.5.3):

* :attr:`RoutingTables.main`, the standard OSPF table: one best route per destination;
* :attr:`RoutingTables.per_interface`, keyed by the **local interface address**: the table
  computed as if every other outgoing interface cost infinity;
* :attr:`RoutingTables.extended`: per destination, the per-interface routes (one per
  interface that reaches it, local routes once) in the order of :func:`preference`.

Preference (RFC 2328 11 and 16.2: intra-area before inter-area, then cost) with
deterministic tie-breaking: :func:`preference` orders routes by (path type, cost, next
hop interface address, area id, advertising router id), addresses compared as 32-bit
integers and a local route (no next hop) before any next hop.  So ``extended[d][0] is
main[d]`` always, and within one path type the extended entries are in increasing cost.
"""

from __future__ import annotations

import enum
import functools
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "DestType", "ExtendedRoutingTable", "Interface", "NextHop", "PathType", "Route",
    "RouteKey", "RoutingTable", "RoutingTables", "ShortestPathTree", "int_ip", "ip_int",
    "network_key", "preference", "router_key"]


class DestType(str, enum.Enum):
    """Destination type column: ``N`` network, ``R`` QBB node (router)."""

    NETWORK = "N"
    ROUTER = "R"


class PathType(str, enum.Enum):
    """Path type column (RFC 2328 11); external types do not occur in a QKD network."""

    INTRA_AREA = "intra-area"
    INTER_AREA = "inter-area"


RouteKey = tuple[DestType, str, "str | None"]


@functools.lru_cache(maxsize=1 << 16)
def ip_int(address: str) -> int:
    """A dotted-quad address as an unsigned 32-bit integer."""
    return int.from_bytes(socket.inet_aton(address), "big")


@functools.lru_cache(maxsize=1 << 16)
def int_ip(value: int) -> str:
    """An unsigned 32-bit integer as a dotted-quad address."""
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def network_key(network: str, mask: str) -> RouteKey:
    """The table key of a network destination."""
    return (DestType.NETWORK, network, mask)


def router_key(router_id: str) -> RouteKey:
    """The table key of a QBB node destination."""
    return (DestType.ROUTER, router_id, None)


@dataclass(frozen=True)
class NextHop:
    """The next QBB node on the path and the local interface that leads to it."""

    neighbor: str
    interface: str


class Route(NamedTuple):
    """One row of a routing table (seed Table I / Appendix C); immutable."""

    dest_type: DestType
    dest_id: str
    mask: str | None
    area: str
    path_type: PathType
    cost: int
    next_hop: NextHop | None
    advertising_router: str

    @property
    def key(self) -> RouteKey:
        return (self.dest_type, self.dest_id, self.mask)


_PATH_RANK = {PathType.INTRA_AREA: 0, PathType.INTER_AREA: 1}


def preference(route: Route) -> tuple[int, int, int, int, int]:
    """Sort key: smaller is preferred (see the module docstring)."""
    hop = -1 if route.next_hop is None else ip_int(route.next_hop.interface)
    return (_PATH_RANK[route.path_type], route.cost, hop, ip_int(route.area),
            ip_int(route.advertising_router))


def _mask_length(mask: str) -> int:
    return bin(ip_int(mask)).count("1")


class _PrefixIndex:
    """Longest-prefix match over the network keys of a table."""

    def __init__(self, keys: Iterator[RouteKey]) -> None:
        by_length: dict[int, dict[int, RouteKey]] = {}
        for key in keys:
            if key[0] is DestType.NETWORK:
                mask = ip_int(key[2])
                by_length.setdefault(_mask_length(key[2]), {})[ip_int(key[1]) & mask] = key
        self._levels = [(length, ((1 << length) - 1) << (32 - length), table)
                        for length, table in sorted(by_length.items(), reverse=True)]

    def find(self, address: str) -> RouteKey | None:
        value = ip_int(address)
        for _length, mask, table in self._levels:
            key = table.get(value & mask)
            if key is not None:
                return key
        return None


class _Table(Mapping):
    """Read-only mapping from :data:`RouteKey` with lookups by address."""

    def __init__(self, entries: Mapping) -> None:
        self._entries = dict(entries)
        self._index: _PrefixIndex | None = None

    def __getitem__(self, key: RouteKey):
        return self._entries[key]

    def __iter__(self) -> Iterator[RouteKey]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} destinations)"

    def _find(self, address: str) -> RouteKey | None:
        if self._index is None:
            self._index = _PrefixIndex(iter(self._entries))
        return self._index.find(address)

    def network(self, network: str, mask: str):
        return self._entries.get(network_key(network, mask))

    def router(self, router_id: str):
        return self._entries.get(router_key(router_id))


class RoutingTable(_Table):
    """One route per destination."""

    def lookup(self, address: str) -> Route | None:
        """The route of the longest network prefix containing ``address``."""
        key = self._find(address)
        return None if key is None else self._entries[key]

    def rows(self) -> list[Route]:
        """Routes ordered as in the seed's Table I: networks, then nodes, by address."""
        return sorted(self._entries.values(),
                      key=lambda r: (r.dest_type is DestType.ROUTER,
                                     r.path_type != PathType.INTRA_AREA,
                                     ip_int(r.dest_id), ip_int(r.mask or "0.0.0.0")))

    def format(self) -> str:
        """The table as aligned text with the seed's columns."""
        lines = ["type dest-id          mask             area       path-type  cost  "
                 "next-hop (interface)             adv-router"]
        for r in self.rows():
            hop = "*" if r.next_hop is None else f"{r.next_hop.neighbor} ({r.next_hop.interface})"
            lines.append(f"{r.dest_type.value:4s} {r.dest_id:16s} {r.mask or '*':16s} "
                         f"{r.area:10s} {r.path_type.value:10s} {r.cost:5d} {hop:32s} "
                         f"{r.advertising_router}")
        return "\n".join(lines)


class ExtendedRoutingTable(_Table):
    """Per destination, a tuple of routes through distinct interfaces, best first."""

    def lookup(self, address: str) -> tuple[Route, ...]:
        """The entries of the longest network prefix containing ``address``."""
        key = self._find(address)
        return () if key is None else self._entries[key]


@dataclass(frozen=True)
class Interface:
    """An outgoing point-to-point interface of the computing router (own Router-LSA)."""

    address: str
    neighbor: str
    area: str
    cost: int


@dataclass(frozen=True)
class ShortestPathTree:
    """Dijkstra tree of one area rooted at the computing router (RFC 2328 16.1).

    ``cost[v]`` is the distance to router ``v``, ``parent[v]`` its parent in the tree and
    ``interface[v]`` the local interface address of the tree's first hop.  The root is
    in ``cost`` (0) but not in ``parent`` / ``interface``.
    """

    root: str
    area: str
    cost: dict[str, int] = field(default_factory=dict)
    parent: dict[str, str] = field(default_factory=dict)
    interface: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class RoutingTables:
    """Everything :func:`qbb.routing.spf.compute_tables` derives from the LSDB."""

    router_id: str
    interfaces: dict[str, Interface]
    main: RoutingTable
    per_interface: dict[str, RoutingTable]
    extended: ExtendedRoutingTable
    spt: dict[str, ShortestPathTree]
    #: route keys whose preferred route the feasibility condition refused
    #: (:mod:`qbb.routing.interarea`); empty when no condition was given
    constrained: frozenset = frozenset()

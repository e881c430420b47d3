"""QKD network addressing (seed 002 §2.3), derived deterministically from a topology.

QKD addresses are IPv4-style dotted quads, independent of the underlay.  :func:`plan_addresses`
turns a :class:`TopologySpec` into an :class:`AddressPlan`; docs/addressing.md has the tables.

* Area ``N`` (1..255) owns ``1.N.0.0/16`` (§2.3, "1.1.0.0 to 1.1.255.255 ... Area 1"), OSPF
  area ID ``0.0.0.N``; no area 0 (OSPF's backbone ID: SECOQC has no backbone).
* Reserved (§2.3): 224/4, 240/4, 127/8 (and 0/8); per area ``1.N.0.0`` (the area) and
  ``1.N.255.255`` (area broadcast), whose /30 blocks are never allocated (so no /30 has the
  link state ID of the area's /16 summary, RFC 2328 Appendix E).
* A node gets a /30 block from ``1.N.0.0/17``, node address (router ID) block+1; a link a /30
  from ``1.N.128.0/17``, its ends in name order network+1 and +2.  Per area, nodes by sorted
  name then links by sorted name pair take the next free block (overrides are skipped).
* A link between areas belongs to the lower-numbered area unless ``link_areas`` says the
  other; the other end is then an area border node (§2.3: "each interface of an area border
  QBB node receives an IP address from one area").  Node addresses come from the own area.
* Each area (its nodes and nodes with interfaces in it, joined by its links) must be connected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network

from qbb.errors import ConfigError

Link = tuple[str, str]
AREA_MASK = "255.255.0.0"
BLOCK_MASK = "255.255.255.252"
MIN_AREA, MAX_AREA = 1, 255
_RESERVED = [IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4")]


def area_id(area: int) -> str:
    """OSPF area ID of area ``area``: ``"0.0.0.N"``."""
    return str(IPv4Address(_check_area(area, "area")))


def area_number(area_id_: str) -> int:
    """Inverse of :func:`area_id`."""
    return _check_area(int(IPv4Address(area_id_)), f"area ID {area_id_}")


def area_network(area: int) -> str:
    """Network address of area ``area``'s /16 range (mask :data:`AREA_MASK`)."""
    return f"1.{_check_area(area, 'area')}.0.0"


def area_of_address(address: str) -> int | None:
    """The area whose /16 range holds ``address``, or None."""
    first, second = IPv4Address(address).packed[:2]
    return second if first == 1 and MIN_AREA <= second <= MAX_AREA else None


def is_reserved(address: str) -> bool:
    """True for an address §2.3 reserves (multicast, future, loopback, area/broadcast)."""
    ip = IPv4Address(address)
    return any(ip in net for net in _RESERVED) or (
        area_of_address(address) is not None and ip.packed[2:] in (b"\0\0", b"\xff\xff"))


def _check_area(area: object, what: str) -> int:
    if type(area) is not int or not MIN_AREA <= area <= MAX_AREA:
        raise ConfigError(f"{what}: area must be an int in {MIN_AREA}..{MAX_AREA}, got {area!r}")
    return area


@dataclass(frozen=True)
class TopologySpec:
    """Nodes (name -> area), undirected links, and optional explicit overrides.

    ``node_addresses`` maps a node to its node address (host 1 or 2 of a /30 in its
    area); ``link_networks`` a link to its /30 network address; ``link_areas`` a link
    to its area (one of its ends' areas).  Link keys may name the ends in either order.
    """

    nodes: Mapping[str, int]
    links: Sequence[Link] = ()
    node_addresses: Mapping[str, str] = field(default_factory=dict)
    link_networks: Mapping[Link, str] = field(default_factory=dict)
    link_areas: Mapping[Link, int] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeAddress:
    """A node's /30 block and its node address (= OSPF router ID)."""

    name: str
    area: int
    address: str
    block: str
    mask: str = BLOCK_MASK


@dataclass(frozen=True)
class LinkAddress:
    """A QBB link's /30 network; ``addresses[i]`` belongs to ``ends[i]`` (ends sorted)."""

    ends: Link
    area: int
    network: str
    addresses: tuple[str, str]
    mask: str = BLOCK_MASK

    def address_of(self, name: str) -> str:
        return self.addresses[self.ends.index(name)]

    def peer_of(self, name: str) -> str:
        return self.ends[1 - self.ends.index(name)]


@dataclass(frozen=True)
class AddressPlan:
    """Every node's and link's addresses, with lookups by name and by address."""

    nodes: Mapping[str, NodeAddress]
    links: Mapping[Link, LinkAddress]

    def link(self, a: str, b: str) -> LinkAddress:
        key = _link_key((a, b))
        if key not in self.links:
            raise ConfigError(f"no link between {a!r} and {b!r}")
        return self.links[key]

    def links_of(self, name: str) -> tuple[LinkAddress, ...]:
        """The links (interfaces) of node ``name``, ordered by peer name."""
        if name not in self.nodes:
            raise ConfigError(f"unknown node {name!r}")
        return tuple(sorted((ln for ln in self.links.values() if name in ln.ends),
                            key=lambda ln: ln.peer_of(name)))

    def areas_of(self, name: str) -> frozenset[int]:
        """The node's own area and the areas of its links."""
        links = self.links_of(name)
        return frozenset({self.nodes[name].area} | {ln.area for ln in links})

    def is_abr(self, name: str) -> bool:
        return len(self.areas_of(name)) > 1

    def lookup(self, address: str) -> NodeAddress | LinkAddress | None:
        """The node block or link /30 that contains ``address``, or None."""
        return self._by_block.get(int(IPv4Address(address)) & ~3)

    def node_of(self, address: str) -> str | None:
        """The node that holds exactly ``address`` (node or interface address)."""
        owner = self.lookup(address)
        if isinstance(owner, NodeAddress):
            return owner.name if owner.address == address else None
        if owner is not None and address in owner.addresses:
            return owner.ends[owner.addresses.index(address)]
        return None

    @cached_property
    def _by_block(self) -> dict[int, NodeAddress | LinkAddress]:
        owners = [*self.nodes.values(), *self.links.values()]
        return {int(IPv4Address(o.block if isinstance(o, NodeAddress) else o.network)): o
                for o in owners}


def plan_addresses(spec: TopologySpec) -> AddressPlan:
    """Allocate every address of ``spec`` (rules in the module docstring); ConfigError if not."""
    for name, area in spec.nodes.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"node names must be non-empty str, got {name!r}")
        _check_area(area, f"node {name!r}")
    link_area = _link_areas(spec, _check_links(spec))
    for area in sorted(set(spec.nodes.values())):
        _check_connected(area, spec.nodes, link_area)
    taken: dict[int, str] = {}
    node_blocks, link_blocks = _overrides(spec, link_area, taken)
    for area in sorted(set(spec.nodes.values())):
        base = (1 << 24) | (area << 16)
        _allocate([n for n in sorted(spec.nodes) if spec.nodes[n] == area],
                  node_blocks, range(base + 4, base + 0x8000, 4), taken, "node")
        _allocate([ln for ln in sorted(link_area) if link_area[ln] == area],
                  link_blocks, range(base + 0x8000, base + 0xFFFC, 4), taken, "link")
    nodes = {n: NodeAddress(n, spec.nodes[n], _ip(node_blocks[n]), _ip(node_blocks[n] & ~3))
             for n in sorted(spec.nodes)}
    links = {ln: LinkAddress(ln, link_area[ln], _ip(link_blocks[ln]),
                             (_ip(link_blocks[ln] + 1), _ip(link_blocks[ln] + 2)))
             for ln in sorted(link_area)}
    return AddressPlan(nodes, links)


def _ip(value: int) -> str:
    return str(IPv4Address(value))


def _link_key(link: object) -> Link:
    if (not isinstance(link, (tuple, list)) or len(link) != 2
            or not all(isinstance(end, str) for end in link)):
        raise ConfigError(f"a link is a pair of node names, got {link!r}")
    return (link[0], link[1]) if link[0] <= link[1] else (link[1], link[0])


def _check_links(spec: TopologySpec) -> list[Link]:
    seen: set[Link] = set()
    for link in spec.links:
        key = _link_key(link)
        unknown = [end for end in key if end not in spec.nodes]
        if unknown:
            raise ConfigError(f"link {link!r} names unknown node {unknown[0]!r}")
        if key[0] == key[1]:
            raise ConfigError(f"link {link!r} is a self-loop")
        if key in seen:
            raise ConfigError(f"duplicate link between {key[0]!r} and {key[1]!r}")
        seen.add(key)
    return sorted(seen)


def _override_keys(mapping: Mapping[Link, object], links: object, what: str) -> dict:
    result: dict[Link, object] = {}
    for link, value in mapping.items():
        key = _link_key(link)
        if key not in links or key in result:
            raise ConfigError(f"{what} for {link!r}: " + (
                "given twice" if key in result else "not a link"))
        result[key] = value
    return result


def _link_areas(spec: TopologySpec, links: list[Link]) -> dict[Link, int]:
    chosen = _override_keys(spec.link_areas, set(links), "link area")
    result = {}
    for key in links:
        ends = {spec.nodes[key[0]], spec.nodes[key[1]]}
        result[key] = _check_area(chosen.get(key, min(ends)), f"link {key!r}")
        if result[key] not in ends:
            raise ConfigError(f"link {key!r}: area {result[key]} is not an area of its ends "
                              f"{sorted(ends)}")
    return result


def _check_connected(area: int, nodes: Mapping[str, int], link_area: Mapping[Link, int]) -> None:
    adjacent: dict[str, set[str]] = {n: set() for n, a in nodes.items() if a == area}
    for (a, b), la in link_area.items():
        if la == area:
            adjacent.setdefault(a, set()).add(b)
            adjacent.setdefault(b, set()).add(a)
    start = min(adjacent)
    reached, frontier = {start}, [start]
    while frontier:
        news = adjacent[frontier.pop()] - reached
        reached |= news
        frontier.extend(news)
    if len(reached) != len(adjacent):
        cut = sorted(set(adjacent) - reached)[:5]
        raise ConfigError(f"area {area} is not connected: {start!r} cannot reach {cut} "
                          f"over area-{area} links")


def _check_block(value: object, area: int, owner: str, hosts: tuple[int, ...]) -> int:
    try:
        number = int(IPv4Address(value if isinstance(value, str) else None))
    except ValueError:
        raise ConfigError(f"{owner}: {value!r} is not a dotted-quad address") from None
    if area_of_address(value) != area:
        raise ConfigError(f"{owner}: {value} is outside area {area}'s range "
                          f"{area_network(area)}/16")
    if (number & 0xFFFC) in (0, 0xFFFC):
        raise ConfigError(f"{owner}: {value} is in a reserved block of area {area}")
    if (number & 3) not in hosts:
        offsets = " or ".join(f".{h}" for h in hosts)
        raise ConfigError(f"{owner}: {value} must be offset {offsets} of /30 {_ip(number & ~3)}")
    return number


def _overrides(spec: TopologySpec, link_area: Mapping[Link, int],
               taken: dict[int, str]) -> tuple[dict[str, int], dict[Link, int]]:
    unknown = sorted(map(repr, set(spec.node_addresses) - set(spec.nodes)))
    if unknown:
        raise ConfigError(f"node address given for unknown node {', '.join(unknown)}")
    nodes = {name: _check_block(value, spec.nodes[name], f"node {name!r}", (1, 2))
             for name, value in sorted(spec.node_addresses.items())}
    chosen = _override_keys(spec.link_networks, link_area, "link network")
    links = {key: _check_block(value, link_area[key], f"link {key!r}", (0,))
             for key, value in sorted(chosen.items())}
    for owner, block in [(f"node {n!r}", a & ~3) for n, a in nodes.items()] + [
            (f"link {k!r}", b) for k, b in links.items()]:
        if block in taken:
            raise ConfigError(f"address collision: {owner} and {taken[block]} both use "
                              f"{_ip(block)}/30")
        taken[block] = owner
    return nodes, links


def _allocate(owners: list, blocks: dict, pool: range, taken: dict[int, str], what: str) -> None:
    free = (block for block in pool if block not in taken)
    for owner in owners:
        if owner in blocks:
            continue
        block = next(free, None)
        if block is None:
            raise ConfigError(f"{what} range {_ip(pool.start & ~0x7FFF)}/17 of area "
                              f"{(pool.start >> 16) & 0xFF} exhausted ({len(pool)} blocks)")
        taken[block] = f"{what} {owner!r}"
        blocks[owner] = block + 1 if what == "node" else block

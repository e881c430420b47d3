"""Topology files: the QBB nodes, QBB links and scheduled events of one network.

A topology is what a user hands to the launcher (DESIGN.md "What qbb is"): QBB nodes with
their area (seed 002 §2.3), point-to-point QBB links with the key generation rates of
their QKD devices (§2.5, Fig. 6-7; several devices on one link add up), optional
administrator costs per direction (Appendix B "Interface output cost(s)"; ``None`` =
computed from the key rate by :mod:`qbb.routing.cost`; with the topology's ``costs =
"auto"`` such computed costs follow the link's key rate and key-store level while the
network runs), classical-channel parameters (MTU, one-way delay, loss), the QKD key split
ratio of the link (per mille, :mod:`qbb.q3p.device`), the OSPF timers, and a schedule of
link failures, key-rate changes and node restarts.

The file format is JSON; docs/topology.md documents it field by field.  Every object is
validated when it is built (``__post_init__``), so a :class:`Topology` in hand is always
usable: its areas are connected and :func:`qbb.routing.addressing.plan_addresses` accepts it.
Errors are :class:`TopologyError` (a :class:`~qbb.errors.ConfigError`) whose message names
the source, the path inside the document and the problem, e.g.
``topologies/x.json: links[3].b: unknown node 'FOO'``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from qbb.errors import ConfigError
from qbb.routing.addressing import (
    MAX_AREA, MIN_AREA, AddressPlan, TopologySpec, area_of_address, plan_addresses)
from qbb.routing.cost import CostPolicy, computed_cost
from qbb.routing.interface import MAX_COST

__all__ = ["ACTIONS", "COST_MODES", "LINK_ACTIONS", "NODE_ACTIONS", "MAX_MTU", "MIN_MTU",
           "LinkSpec", "NodeSpec", "ScheduledEvent", "Topology", "TopologyError", "dump_topology",
           "load_topology", "parse_topology", "topology_from_dict", "topology_to_dict"]

MIN_MTU, MAX_MTU = 128, 65000  # Q3P header 28 bytes + 16-byte tag leaves >= 84 payload bytes
MAX_RATIO = 1000  # key_ratio is per mille (qbb.q3p.device.RATIO_SCALE)
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
LINK_ACTIONS = frozenset({"link_down", "link_up", "key_rate"})
NODE_ACTIONS = frozenset({"node_stop", "node_start"})
ACTIONS = LINK_ACTIONS | NODE_ACTIONS
COST_MODES = ("static", "auto")  # Topology.costs: computed costs fixed at start, or dynamic


class TopologyError(ConfigError):
    """A topology that cannot be used: ``source``, ``path`` in the document, ``problem``."""

    def __init__(self, path: str, problem: str, source: str = "topology") -> None:
        self.path, self.problem, self.source = path, problem, source
        super().__init__(f"{source}: {path}: {problem}" if path else f"{source}: {problem}")

    def under(self, prefix: str) -> TopologyError:
        """The same error with ``prefix`` prepended to its path."""
        path = f"{prefix}.{self.path}" if self.path else prefix
        return TopologyError(path, self.problem, self.source)

    def from_source(self, source: str) -> TopologyError:
        return TopologyError(self.path, self.problem, source)


# -- field checks: each returns the normalised value or raises TopologyError(path, ...) --

def _name(value: object, path: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise TopologyError(path, f"node name must be a letter followed by up to 31 letters, "
                                  f"digits or '_', got {value!r}")
    return value


def _int(value: object, path: str, low: int, high: int) -> int:
    if type(value) is not int:
        raise TopologyError(path, f"must be an integer, got {_describe(value)}")
    if not low <= value <= high:
        raise TopologyError(path, f"{value} is out of range {low}..{high}")
    return value


def _opt_int(value: object, path: str, low: int, high: int) -> int | None:
    return None if value is None else _int(value, path, low, high)


def _float(value: object, path: str, low: float = 0.0, high: float = math.inf,
           high_open: bool = False) -> float:
    if type(value) not in (int, float):
        raise TopologyError(path, f"must be a number, got {_describe(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:
        finite = False
    if not finite:
        raise TopologyError(path, f"must be finite, got {value!r}")
    if value < low:
        raise TopologyError(path, f"must be >= {low:g}, got {value!r}"
                            if low else f"must not be negative, got {value!r}")
    if value > high or (high_open and value == high):
        raise TopologyError(path, f"must be {'<' if high_open else '<='} {high:g}, got {value!r}")
    return float(value)


def _seconds(value: object, path: str) -> float:
    """A whole number of seconds 1..65535 (OSPF intervals are integers, RFC 2328 A.3.2)."""
    number = _float(value, path, 1.0, 65535.0)
    if number != int(number):
        raise TopologyError(path, f"must be a whole number of seconds, got {value!r}")
    return number


def _tuple(value: object, path: str, what: str) -> tuple:
    if not isinstance(value, (tuple, list)):
        raise TopologyError(path, f"must be a list of {what}, got {_describe(value)}")
    return tuple(value)


def _describe(value: object) -> str:
    kinds = {bool: "a boolean", str: "a string", list: "a list", tuple: "a list",
             dict: "an object", type(None): "null", int: "an integer", float: "a number"}
    return f"{kinds.get(type(value), type(value).__name__)} ({value!r})"


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


# -- the data model --

@dataclass(frozen=True)
class NodeSpec:
    """A QBB node: its name, its area (1..255) and optionally a fixed node address."""

    name: str
    area: int
    address: str | None = None

    def __post_init__(self) -> None:
        _name(self.name, "name")
        _int(self.area, "area", MIN_AREA, MAX_AREA)
        if self.address is not None:
            _address(self.address, self.area)


def _address(value: object, area: int) -> None:
    try:
        canonical = isinstance(value, str) and str(IPv4Address(value)) == value
    except ValueError:
        canonical = False
    if not canonical:
        raise TopologyError("address", f"must be a dotted-quad string, got {value!r}")
    if area_of_address(value) != area:
        raise TopologyError("address", f"{value} is outside area {area}'s range 1.{area}.0.0/16")


@dataclass(frozen=True)
class LinkSpec:
    """A QBB link between nodes ``a`` and ``b`` (see docs/topology.md for every field).

    ``key_rates_bps`` has one entry per QKD device on the link (bit/s); ``cost_ab`` is the
    output cost of ``a``'s interface (a -> b), ``cost_ba`` the reverse; ``area`` chooses the
    link's area when its ends lie in different areas (default: the lower one).
    """

    a: str
    b: str
    key_rates_bps: tuple[float, ...] = (1e6,)
    cost_ab: int | None = None
    cost_ba: int | None = None
    mtu: int = 1400
    delay_s: float = 0.001
    loss: float = 0.0
    area: int | None = None
    key_ratio: int = 500

    def __post_init__(self) -> None:
        _name(self.a, "a")
        _name(self.b, "b")
        if self.a == self.b:
            raise TopologyError("b", f"self loop: both ends are {self.a!r}")
        rates = _tuple(self.key_rates_bps, "key_rates_bps", "key rates")
        if not rates:
            raise TopologyError("key_rates_bps", "must name at least one QKD device rate")
        _set(self, "key_rates_bps",
             tuple(_float(r, f"key_rates_bps[{i}]") for i, r in enumerate(rates)))
        _opt_int(self.cost_ab, "cost_ab", 1, MAX_COST)
        _opt_int(self.cost_ba, "cost_ba", 1, MAX_COST)
        _int(self.mtu, "mtu", MIN_MTU, MAX_MTU)
        _set(self, "delay_s", _float(self.delay_s, "delay_s", 0.0, 60.0))
        _set(self, "loss", _float(self.loss, "loss", 0.0, 1.0, high_open=True))
        _opt_int(self.area, "area", MIN_AREA, MAX_AREA)
        _int(self.key_ratio, "key_ratio", 0, MAX_RATIO)

    @property
    def name(self) -> str:
        """``"A-B"``: the link's name in schedule targets (either order is accepted there)."""
        return f"{self.a}-{self.b}"

    @property
    def ends(self) -> tuple[str, str]:
        """The ends in name order (the key used by :mod:`qbb.routing.addressing`)."""
        return (self.a, self.b) if self.a <= self.b else (self.b, self.a)

    @property
    def total_rate_bps(self) -> float:
        """The key generation rate of all QKD devices of the link together."""
        return sum(self.key_rates_bps)

    def costs(self, policy: CostPolicy = CostPolicy()) -> tuple[int, int]:
        """(cost a->b, cost b->a): configured, else computed from the total key rate
        with a full key store (:func:`qbb.routing.cost.computed_cost`)."""
        computed = computed_cost(self.total_rate_bps, policy.low_level, policy)
        return (computed if self.cost_ab is None else self.cost_ab,
                computed if self.cost_ba is None else self.cost_ba)

    def cost_from(self, node: str, policy: CostPolicy = CostPolicy()) -> int:
        """Output cost of ``node``'s interface on this link."""
        return self.costs(policy)[[self.a, self.b].index(node)]

    def configured_cost(self, node: str) -> int | None:
        """The administrator's cost of ``node``'s interface (None: computed)."""
        return (self.cost_ab, self.cost_ba)[[self.a, self.b].index(node)]

    def peer_of(self, node: str) -> str:
        return self.b if node == self.a else self.a


@dataclass(frozen=True)
class ScheduledEvent:
    """At ``at_s`` seconds after start: ``action`` on ``target`` (a link "A-B" or a node)."""

    at_s: float
    action: str
    target: str
    value: float | None = None

    def __post_init__(self) -> None:
        _set(self, "at_s", _float(self.at_s, "at_s"))
        if self.action not in ACTIONS:
            raise TopologyError("action", f"unknown action {self.action!r}; choose from "
                                          f"{', '.join(sorted(ACTIONS))}")
        if not isinstance(self.target, str):
            raise TopologyError("target", f"must be a string, got {_describe(self.target)}")
        if self.action == "key_rate":
            if self.value is None:
                raise TopologyError("value", "key_rate needs a value (bit/s)")
            _set(self, "value", _float(self.value, "value"))
        elif self.value is not None:
            raise TopologyError("value", f"{self.action} takes no value")

    @property
    def on_link(self) -> bool:
        return self.action in LINK_ACTIONS

    def link_ends(self) -> tuple[str, str]:
        """The two node names of a link target ``"A-B"``."""
        a, sep, b = self.target.partition("-")
        if not sep or not a or not b:
            raise TopologyError("target", f"a link target is 'A-B', got {self.target!r}")
        return a, b


@dataclass(frozen=True)
class Topology:
    """A whole network; validated on construction (see the module docstring)."""

    name: str
    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...]
    schedule: tuple[ScheduledEvent, ...] = ()
    hello_s: float = 1.0
    dead_s: float = 4.0
    description: str = ""
    costs: str = "static"

    def __post_init__(self) -> None:
        try:
            self._validate()
        except TopologyError as error:
            raise error.from_source(f"topology {self.name!r}") from None

    def _validate(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TopologyError("name", f"must be a non-empty string, got {self.name!r}")
        if not isinstance(self.description, str):
            raise TopologyError("description",
                                f"must be a string, got {_describe(self.description)}")
        for attr, cls in (("nodes", NodeSpec), ("links", LinkSpec), ("schedule", ScheduledEvent)):
            items = _tuple(getattr(self, attr), attr, cls.__name__)
            for i, item in enumerate(items):
                if not isinstance(item, cls):
                    raise TopologyError(f"{attr}[{i}]", f"must be a {cls.__name__}")
            _set(self, attr, items)
        if self.costs not in COST_MODES:
            raise TopologyError("costs", f"must be one of {', '.join(map(repr, COST_MODES))}, "
                                         f"got {self.costs!r}")
        _set(self, "hello_s", _seconds(self.hello_s, "hello_s"))
        _set(self, "dead_s", _seconds(self.dead_s, "dead_s"))
        if self.dead_s <= self.hello_s:
            raise TopologyError("dead_s", f"must exceed hello_s ({self.hello_s:g}), "
                                          f"got {self.dead_s:g}")
        _check_nodes(self.nodes)
        _check_links(self.nodes, self.links)
        _check_schedule(self)
        try:
            plan_addresses(self.to_spec())
        except ConfigError as error:
            raise TopologyError("", f"no address plan: {error}") from None

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ConfigError(f"topology {self.name!r} has no node {name!r}")

    def link(self, a: str, b: str) -> LinkSpec:
        """The link between ``a`` and ``b`` (either order)."""
        for link in self.links:
            if {link.a, link.b} == {a, b}:
                return link
        raise ConfigError(f"topology {self.name!r} has no link between {a!r} and {b!r}")

    def links_of(self, name: str) -> tuple[LinkSpec, ...]:
        return tuple(link for link in self.links if name in (link.a, link.b))

    def to_spec(self) -> TopologySpec:
        """The addressing input (:func:`qbb.routing.addressing.plan_addresses`)."""
        return TopologySpec(
            nodes={n.name: n.area for n in self.nodes},
            links=[(link.a, link.b) for link in self.links],
            node_addresses={n.name: n.address for n in self.nodes if n.address is not None},
            link_areas={(ln.a, ln.b): ln.area for ln in self.links if ln.area is not None})

    def address_plan(self) -> AddressPlan:
        return plan_addresses(self.to_spec())

    def areas(self) -> tuple[int, ...]:
        return tuple(sorted({n.area for n in self.nodes}))


def _check_nodes(nodes: tuple[NodeSpec, ...]) -> None:
    if not nodes:
        raise TopologyError("nodes", "a topology needs at least one node")
    seen: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node.name in seen:
            raise TopologyError(f"nodes[{i}].name", f"duplicate node {node.name!r} "
                                                    f"(also nodes[{seen[node.name]}])")
        seen[node.name] = i


def _check_links(nodes: tuple[NodeSpec, ...], links: tuple[LinkSpec, ...]) -> None:
    areas = {n.name: n.area for n in nodes}
    seen: dict[tuple[str, str], int] = {}
    for i, link in enumerate(links):
        for end in ("a", "b"):
            if getattr(link, end) not in areas:
                raise TopologyError(f"links[{i}].{end}",
                                    f"unknown node {getattr(link, end)!r}")
        if link.ends in seen:
            raise TopologyError(f"links[{i}]", f"duplicate link {link.name} "
                                               f"(also links[{seen[link.ends]}])")
        seen[link.ends] = i
        if link.area is not None and link.area not in (areas[link.a], areas[link.b]):
            raise TopologyError(f"links[{i}].area", f"area {link.area} is not the area of either "
                                                    f"end ({areas[link.a]}, {areas[link.b]})")


def _check_schedule(topology: Topology) -> None:
    names = {n.name for n in topology.nodes}
    links = {link.ends for link in topology.links}
    previous = 0.0
    for i, event in enumerate(topology.schedule):
        path = f"schedule[{i}]"
        if event.at_s < previous:
            raise TopologyError(f"{path}.at_s", f"{event.at_s:g} is earlier than the "
                                                f"previous event ({previous:g}); keep time order")
        previous = event.at_s
        if event.on_link:
            try:
                a, b = event.link_ends()
            except TopologyError as error:
                raise error.under(path) from None
            if tuple(sorted((a, b))) not in links:
                raise TopologyError(f"{path}.target", f"no link {event.target!r}")
        elif event.target not in names:
            raise TopologyError(f"{path}.target", f"unknown node {event.target!r}")


# -- JSON --

_CLASSES = {"nodes": NodeSpec, "links": LinkSpec, "schedule": ScheduledEvent}
_REQUIRED = {Topology: ("name", "nodes", "links"), NodeSpec: ("name", "area"),
             LinkSpec: ("a", "b"), ScheduledEvent: ("at_s", "action", "target")}


def _fields_of(obj: object, cls: type, path: str) -> dict[str, Any]:
    """Check ``obj`` is a JSON object with known fields and the required ones."""
    where = path or "(document)"
    if not isinstance(obj, dict):
        raise TopologyError(where, f"must be an object, got {_describe(obj)}")
    known = [f.name for f in fields(cls)]
    for key in obj:
        if key not in known:
            raise TopologyError(f"{path}.{key}" if path else key,
                                f"unknown field; known fields: {', '.join(known)}")
    for key in _REQUIRED[cls]:
        if key not in obj:
            raise TopologyError(where, f"missing required field {key!r}")
    return dict(obj)


def _build(obj: object, cls: type, path: str) -> Any:
    values = _fields_of(obj, cls, path)
    if cls is LinkSpec and isinstance(values.get("key_rates_bps"), list):
        values["key_rates_bps"] = tuple(values["key_rates_bps"])
    try:
        return cls(**values)
    except TopologyError as error:
        raise error.under(path) from None


def topology_from_dict(document: object) -> Topology:
    """Build a :class:`Topology` from a parsed JSON document (TopologyError if invalid)."""
    values = _fields_of(document, Topology, "")
    for key, cls in _CLASSES.items():
        if key in values:
            items = values[key]
            if not isinstance(items, list):
                raise TopologyError(key, f"must be a list, got {_describe(items)}")
            values[key] = tuple(_build(item, cls, f"{key}[{i}]") for i, item in enumerate(items))
    try:
        return Topology(**values)
    except TopologyError as error:
        raise error.from_source("topology") from None


def parse_topology(text: str, source: str = "topology") -> Topology:
    """Parse JSON ``text``; errors name ``source`` (usually the file name)."""
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as error:
        raise TopologyError("", f"not valid JSON: {error}", source) from None
    try:
        return topology_from_dict(document)
    except TopologyError as error:
        raise error.from_source(source) from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file (ConfigError naming the file on any problem)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TopologyError("", f"cannot read: {error}", str(path)) from None
    return parse_topology(text, str(path))


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _item_dict(item: object, full: bool) -> dict[str, Any]:
    result = {}
    for f in fields(item):
        value = getattr(item, f.name)
        if not full and value == f.default:
            continue
        if isinstance(value, float):
            value = _number(value)
        elif isinstance(value, tuple):
            value = [_number(v) if isinstance(v, float) else v for v in value]
        result[f.name] = value
    return result


def topology_to_dict(topology: Topology, full: bool = False) -> dict[str, Any]:
    """The JSON document of ``topology``; ``full`` also writes fields at their default."""
    document: dict[str, Any] = {"name": topology.name, "description": topology.description,
                                "hello_s": _number(topology.hello_s),
                                "dead_s": _number(topology.dead_s), "costs": topology.costs}
    for key in ("nodes", "links", "schedule"):
        document[key] = [_item_dict(item, full) for item in getattr(topology, key)]
    if not full:
        for key in ("schedule", "description"):
            if not document[key]:
                del document[key]
        for key, default in (("hello_s", 1.0), ("dead_s", 4.0), ("costs", "static")):
            if getattr(topology, key) == default:
                del document[key]
    return document


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def dump_topology(topology: Topology, full: bool = False) -> str:
    """``topology`` as JSON text that :func:`parse_topology` reads back equal."""
    document = topology_to_dict(topology, full)
    lines = [f"  {_json(k)}: {_json(v)}" for k, v in document.items() if not isinstance(v, list)]
    for key in ("nodes", "links", "schedule"):
        if key in document:
            items = ",\n".join(f"    {_json(item)}" for item in document[key])
            lines.append(f"  {json.dumps(key)}: [\n{items}\n  ]" if items
                         else f"  {json.dumps(key)}: []")
    return "{\n" + ",\n".join(lines) + "\n}\n"

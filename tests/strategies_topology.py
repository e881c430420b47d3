"""Hypothesis strategies for topologies (qbb.topology): valid multi-area networks.

Every generated :class:`~qbb.topology.Topology` is valid by construction: each area is a
random tree plus extra links, inter-area links join areas (with a random choice of link
area), some nodes carry a fixed node address, and the schedule is in time order.
Imported by tests/test_topology.py; reusable by node, launcher and benchmark tests.
"""

from __future__ import annotations

from hypothesis import strategies as st

from qbb.topology import (
    MAX_MTU, MIN_MTU, NAME_PATTERN, LinkSpec, NodeSpec, ScheduledEvent, Topology)

names = st.from_regex(NAME_PATTERN, fullmatch=True)
rates = st.one_of(st.integers(0, 10**9).map(float),
                  st.floats(0, 1e12, allow_nan=False, allow_infinity=False))
costs = st.none() | st.integers(1, 0xFFFF)


@st.composite
def link_specs(draw, a: str, b: str, area: int | None = None) -> LinkSpec:
    """A link between ``a`` and ``b`` with random (valid) parameters."""
    return LinkSpec(
        a, b, key_rates_bps=tuple(draw(st.lists(rates, min_size=1, max_size=3))),
        cost_ab=draw(costs), cost_ba=draw(costs), mtu=draw(st.integers(MIN_MTU, MAX_MTU)),
        delay_s=draw(st.floats(0, 60, allow_nan=False)),
        loss=draw(st.floats(0, 1, exclude_max=True, allow_nan=False)),
        area=area, key_ratio=draw(st.integers(0, 1000)))


@st.composite
def _area_links(draw, members: list[str]) -> list[tuple[str, str]]:
    pairs = [(members[draw(st.integers(0, i - 1))], members[i]) for i in range(1, len(members))]
    extra = draw(st.lists(st.tuples(st.sampled_from(members), st.sampled_from(members)),
                          max_size=3))
    seen = {frozenset(p) for p in pairs}
    for a, b in extra:
        if a != b and frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            pairs.append((a, b))
    return pairs


@st.composite
def schedules(draw, nodes: list[str], links: list[LinkSpec]) -> tuple[ScheduledEvent, ...]:
    times = sorted(draw(st.lists(st.floats(0, 1e6, allow_nan=False), max_size=4)))
    events = []
    for at in times:
        action = draw(st.sampled_from(["link_down", "link_up", "key_rate",
                                       "node_stop", "node_start"]))
        if action.startswith("node"):
            events.append(ScheduledEvent(at, action, draw(st.sampled_from(nodes))))
            continue
        link = draw(st.sampled_from(links))
        target = draw(st.sampled_from([f"{link.a}-{link.b}", f"{link.b}-{link.a}"]))
        value = draw(rates) if action == "key_rate" else None
        events.append(ScheduledEvent(at, action, target, value))
    return tuple(events)


@st.composite
def topologies(draw, max_areas: int = 3, max_nodes_per_area: int = 4) -> Topology:
    """A valid topology of 1..``max_areas`` areas (each connected) and a schedule."""
    areas = draw(st.lists(st.integers(1, 255), min_size=1, max_size=max_areas, unique=True))
    sizes = [draw(st.integers(1, max_nodes_per_area)) for _ in areas]
    all_names = draw(st.lists(names, min_size=sum(sizes), max_size=sum(sizes), unique=True))
    members, nodes, start = {}, [], 0
    for area, size in zip(areas, sizes):
        members[area] = all_names[start:start + size]
        start += size
        for i, name in enumerate(members[area]):
            fixed = draw(st.booleans())
            address = f"1.{area}.{1 + i // 64}.{(i % 64) * 4 + 1}" if fixed else None
            nodes.append(NodeSpec(name, area, address))
    links = [draw(link_specs(a, b)) for area in areas for a, b in draw(_area_links(members[area]))]
    for left, right in zip(areas, areas[1:]):
        a, b = draw(st.sampled_from(members[left])), draw(st.sampled_from(members[right]))
        links.append(draw(link_specs(a, b, area=draw(st.sampled_from([None, left, right])))))
    order = draw(st.permutations(range(len(nodes))))
    hello = draw(st.integers(1, 30))
    return Topology(
        name=draw(st.text(min_size=1, max_size=20)), nodes=tuple(nodes[i] for i in order),
        links=tuple(links),
        schedule=draw(schedules([n.name for n in nodes], links)) if links else (),
        hello_s=float(hello), dead_s=float(draw(st.integers(hello + 1, 4 * hello + 10))),
        description=draw(st.text(max_size=40)))

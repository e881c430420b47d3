"""Topology files (qbb.topology, qbb.topology_cli): examples, every error path, round trips."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given

from qbb.errors import ConfigError
from qbb.routing.addressing import plan_addresses
from qbb.topology import (
    LinkSpec, NodeSpec, ScheduledEvent, Topology, TopologyError, dump_topology, load_topology,
    parse_topology, topology_from_dict, topology_to_dict)
from qbb.topology_cli import add_parser, summary
from tests.strategies_topology import topologies

EXAMPLES = sorted((Path(__file__).parent.parent / "topologies").glob("*.json"))
BASE = {
    "name": "t",
    "nodes": [{"name": "A", "area": 1}, {"name": "B", "area": 1}, {"name": "C", "area": 2}],
    "links": [{"a": "A", "b": "B"}, {"a": "B", "b": "C"}],
    "schedule": [{"at_s": 1, "action": "link_down", "target": "A-B"}],
}


def _parse(document: object) -> Topology:
    return parse_topology(json.dumps(document), "topologies/x.json")


def test_examples_present() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"line3.json", "ring5.json", "fig18.json", "two-areas.json",
            "secoqc-vienna-2008.json"} <= names
    assert any(load_topology(p).schedule for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_and_plans(path: Path) -> None:
    topology = load_topology(path)
    plan = plan_addresses(topology.to_spec())
    assert set(plan.nodes) == {n.name for n in topology.nodes}
    assert len(plan.links) == len(topology.links)
    assert load_topology(path) == parse_topology(dump_topology(topology))
    assert path.read_text() == dump_topology(topology)  # files are in canonical form


def test_example_shapes() -> None:
    by_name = {p.stem: load_topology(p) for p in EXAMPLES}
    assert (len(by_name["line3"].nodes), len(by_name["ring5"].nodes)) == (3, 5)
    vienna = by_name["secoqc-vienna-2008"]
    assert (len(vienna.nodes), len(vienna.links)) == (6, 8)
    assert vienna.link("STP", "BREIT").total_rate_bps < 10_000
    fig18 = by_name["fig18"]
    assert fig18.link("QBB1", "QBB2").costs() == (6, 5)
    assert fig18.link("QBB4", "QBB2").cost_from("QBB4") == 1
    assert fig18.address_plan().is_abr("QBB4")
    two = by_name["two-areas"]
    assert two.areas() == (1, 2)
    assert sorted(n for n in two.address_plan().nodes if two.address_plan().is_abr(n)) \
        == ["A3", "B1"]
    actions = {e.action for e in by_name["ring5-faults"].schedule}
    assert {"link_down", "link_up", "key_rate"} <= actions
    assert any(e.action == "key_rate" and e.value == 0 for e in by_name["ring5-faults"].schedule)


def test_defaults_and_helpers() -> None:
    topology = _parse(BASE)
    link = topology.link("B", "A")
    assert link == LinkSpec("A", "B") and link.key_rates_bps == (1e6,)
    assert link.costs() == (1, 1) and link.name == "A-B" and link.peer_of("A") == "B"
    assert topology.to_spec().nodes == {"A": 1, "B": 1, "C": 2}
    assert topology.node("C").area == 2 and topology.links_of("B") == topology.links
    with pytest.raises(ConfigError):
        topology.link("A", "C")
    with pytest.raises(ConfigError):
        topology.node("Z")
    assert LinkSpec("A", "B", key_rates_bps=(0.0,)).costs() == (65535, 65535)


def _mutate(path: str, value: object) -> dict:
    document = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    target: object = document
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is KeyError:
        del target[int(last) if last.isdigit() else last]
    elif isinstance(target, list) and last.isdigit() and int(last) == len(target):
        target.append(value)
    else:
        target[int(last) if last.isdigit() else last] = value
    return document


BAD = [
    ("nodes.0.extra", 1, "nodes[0].extra: unknown field"),
    ("links.0.colour", "red", "links[0].colour: unknown field"),
    ("schedule.0.when", 1, "schedule[0].when: unknown field"),
    ("surprise", 1, "surprise: unknown field"),
    ("nodes.0.area", KeyError, "nodes[0]: missing required field 'area'"),
    ("links.1.b", KeyError, "links[1]: missing required field 'b'"),
    ("name", KeyError, "missing required field 'name'"),
    ("nodes", {}, "nodes: must be a list"),
    ("nodes.0", "A", "nodes[0]: must be an object"),
    ("name", "", "name: must be a non-empty string"),
    ("description", 5, "description: must be a string"),
    ("nodes.0.name", "1A", "nodes[0].name: node name must be"),
    ("nodes.0.name", "A-B", "nodes[0].name: node name must be"),
    ("nodes.0.area", 0, "nodes[0].area: 0 is out of range 1..255"),
    ("nodes.0.area", 256, "nodes[0].area: 256 is out of range"),
    ("nodes.0.area", "1", "nodes[0].area: must be an integer"),
    ("nodes.0.area", True, "nodes[0].area: must be an integer"),
    ("nodes.0.address", "1.2.0.1", "nodes[0].address: 1.2.0.1 is outside area 1"),
    ("nodes.0.address", "1.1.0.300", "nodes[0].address: must be a dotted-quad"),
    ("nodes.0.address", "1.1.0.4", "must be offset .1 or .2"),
    ("nodes.3", {"name": "A", "area": 1}, "nodes[3].name: duplicate node 'A'"),
    ("nodes", [], "nodes: a topology needs at least one node"),
    ("links.1.b", "FOO", "links[1].b: unknown node 'FOO'"),
    ("links.1.a", "C", "links[1].b: self loop"),
    ("links.2", {"a": "B", "b": "A"}, "links[2]: duplicate link B-A"),
    ("links.0.key_rates_bps", [-1], "links[0].key_rates_bps[0]: must not be negative"),
    ("links.0.key_rates_bps", [], "links[0].key_rates_bps: must name at least one"),
    ("links.0.key_rates_bps", 5, "links[0].key_rates_bps: must be a list"),
    ("links.0.key_rates_bps", ["x"], "links[0].key_rates_bps[0]: must be a number"),
    ("links.0.delay_s", 10**400, "links[0].delay_s: must be finite"),
    ("links.0.cost_ab", 0, "links[0].cost_ab: 0 is out of range 1..65535"),
    ("links.0.cost_ba", 65536, "links[0].cost_ba: 65536 is out of range"),
    ("links.0.cost_ab", 1.5, "links[0].cost_ab: must be an integer"),
    ("links.0.mtu", 127, "links[0].mtu: 127 is out of range 128..65000"),
    ("links.0.mtu", 65001, "links[0].mtu: 65001 is out of range"),
    ("links.0.delay_s", -0.1, "links[0].delay_s: must not be negative"),
    ("links.0.loss", 1, "links[0].loss: must be < 1"),
    ("links.0.loss", -0.5, "links[0].loss: must not be negative"),
    ("links.0.key_ratio", 1001, "links[0].key_ratio: 1001 is out of range 0..1000"),
    ("links.0.key_ratio", -1, "links[0].key_ratio: -1 is out of range"),
    ("links.0.area", 2, "links[0].area: area 2 is not the area of either end"),
    ("links.1.area", 0, "links[1].area: 0 is out of range"),
    ("nodes.3", {"name": "D", "area": 1}, "no address plan: area 1 is not connected"),
    ("hello_s", 0, "hello_s: must be >= 1"),
    ("hello_s", 1.5, "hello_s: must be a whole number of seconds"),
    ("dead_s", 1, "dead_s: must exceed hello_s"),
    ("schedule.0.target", "A-C", "schedule[0].target: no link 'A-C'"),
    ("schedule.0.target", "AB", "schedule[0].target: a link target is 'A-B'"),
    ("schedule.0.target", 7, "schedule[0].target: must be a string"),
    ("schedule.0.action", "explode", "schedule[0].action: unknown action 'explode'"),
    ("schedule.0.at_s", -1, "schedule[0].at_s: must not be negative"),
    ("schedule.0.value", 5, "schedule[0].value: link_down takes no value"),
    ("schedule.1", {"at_s": 2, "action": "key_rate", "target": "A-B"},
     "schedule[1].value: key_rate needs a value"),
    ("schedule.1", {"at_s": 2, "action": "key_rate", "target": "B-A", "value": -5},
     "schedule[1].value: must not be negative"),
    ("schedule.1", {"at_s": 0.5, "action": "node_stop", "target": "A"},
     "schedule[1].at_s: 0.5 is earlier than the previous event"),
    ("schedule.1", {"at_s": 2, "action": "node_stop", "target": "Z"},
     "schedule[1].target: unknown node 'Z'"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[2][:40] for b in BAD])
def test_error_paths(path: str, value: object, message: str) -> None:
    with pytest.raises(TopologyError) as info:
        _parse(_mutate(path, value))
    assert str(info.value).startswith("topologies/x.json: ")
    assert message in str(info.value)


@pytest.mark.parametrize("text", ["", "[1", "{\"name\": NaN}", "[]", "null", "{\"a\": 1e999}"])
def test_not_json_or_not_an_object(text: str) -> None:
    with pytest.raises(TopologyError, match=r"^topologies/x\.json: "):
        parse_topology(text, "topologies/x.json")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.json: cannot read"):
        load_topology(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="bad.json: cannot read"):
        load_topology(bad)


def test_python_construction_validates() -> None:
    nodes = (NodeSpec("A", 1), NodeSpec("B", 1))
    with pytest.raises(TopologyError, match=r"^topology 'x': links\[0\]\.b: unknown node 'Q'"):
        Topology("x", nodes, (LinkSpec("A", "Q"),))
    with pytest.raises(TopologyError, match="links\\[0\\]: must be a LinkSpec"):
        Topology("x", nodes, ("A-B",))  # type: ignore[arg-type]
    with pytest.raises(TopologyError, match="^topology: mtu: 5 is out of range"):
        LinkSpec("A", "B", mtu=5)
    with pytest.raises(TopologyError, match="value"):
        ScheduledEvent(0, "node_stop", "A", 1.0)
    lists = Topology("x", list(nodes), [LinkSpec("A", "B", key_rates_bps=[5])])  # type: ignore
    assert lists.nodes == nodes and lists.links[0].key_rates_bps == (5.0,)


def test_non_object_document() -> None:
    with pytest.raises(TopologyError, match=r"\(document\): must be an object"):
        topology_from_dict([1])


@given(topologies())
def test_round_trip(topology: Topology) -> None:
    assert parse_topology(dump_topology(topology)) == topology
    assert parse_topology(dump_topology(topology, full=True)) == topology
    assert topology_from_dict(json.loads(json.dumps(topology_to_dict(topology)))) == topology
    plan = topology.address_plan()
    for node in topology.nodes:
        assert node.address is None or plan.nodes[node.name].address == node.address


def _run_cli(argv: list[str]) -> int:
    import argparse

    from qbb.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "topology" not in sub.choices:
        add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_check_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    two = str(next(p for p in EXAMPLES if p.name == "two-areas.json"))
    assert _run_cli(["topology", "check", two]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "border nodes: A3, B1" in out and "1.2.128.0/30" in out
    assert _run_cli(["topology", "check", two, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == summary(load_topology(two)) and info["areas"]["2"] == ["B1", "B2", "B3"]
    assert _run_cli(["topology", "show", two]) == 0
    assert "link A3-B2" in capsys.readouterr().out
    assert _run_cli(["topology", "show", two, "--json"]) == 0
    assert parse_topology(capsys.readouterr().out) == load_topology(two)


def test_cli_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps(_mutate("links.1.b", "FOO")))
    with pytest.raises(ConfigError, match=r"x\.json: links\[1\]\.b: unknown node 'FOO'"):
        _run_cli(["topology", "check", str(bad)])

"""``qbb topology``: validate and show topology files (docs/topology.md).

``qbb topology check FILE`` loads and validates a file and prints a summary: nodes, areas,
links, area border nodes (seed 002 §2.3) and the address plan of
:func:`qbb.routing.addressing.plan_addresses` (docs/addressing.md); ``--json`` prints the
same summary as one JSON object.  ``qbb topology show FILE`` prints the nodes, links (with
their effective costs) and schedule; ``--json`` prints the normalised topology document
with every field written out (a file :func:`qbb.topology.load_topology` reads back equal).
A file that does not validate is a :class:`~qbb.errors.ConfigError`: one line on stderr
naming the file, the path in the document and the problem, exit status 2 (``qbb.cli``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from qbb.topology import Topology, dump_topology, load_topology

__all__ = ["add_parser", "summary"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``topology check`` and ``topology show`` on ``qbb``'s subparsers."""
    top = subparsers.add_parser("topology", help="validate or show a topology file",
                                description="Validate (check) or print (show) a topology file.")
    sub = top.add_subparsers(dest="topology_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate a file and summarise it",
                           description="Validate FILE; print nodes, areas, links, border nodes "
                                       "and the address plan.")
    check.add_argument("file", help="topology JSON file")
    check.add_argument("--json", action="store_true", help="the summary as one JSON object")
    check.set_defaults(func=_cmd_check)
    show = sub.add_parser("show", help="print a topology", description="Print FILE's nodes, "
                          "links and schedule; --json prints the normalised document.")
    show.add_argument("file", help="topology JSON file")
    show.add_argument("--json", action="store_true", help="the normalised topology document")
    show.set_defaults(func=_cmd_show)
    return top


def summary(topology: Topology) -> dict[str, Any]:
    """Nodes, areas, links, border nodes and address plan of ``topology`` (JSON-ready)."""
    plan = topology.address_plan()
    return {
        "name": topology.name,
        "nodes": len(topology.nodes),
        "links": len(topology.links),
        "scheduled_events": len(topology.schedule),
        "areas": {str(area): sorted(n.name for n in topology.nodes if n.area == area)
                  for area in topology.areas()},
        "border_nodes": sorted(n.name for n in topology.nodes if plan.is_abr(n.name)),
        "node_addresses": {name: node.address for name, node in plan.nodes.items()},
        "link_addresses": [{"link": f"{a}-{b}", "area": ln.area, "network": f"{ln.network}/30",
                            a: ln.addresses[0], b: ln.addresses[1]}
                           for (a, b), ln in plan.links.items()],
    }


def _cmd_check(args: argparse.Namespace) -> int:
    info = summary(load_topology(args.file))
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{args.file}: OK: topology {info['name']!r}, {info['nodes']} nodes, "
          f"{info['links']} links, {len(info['areas'])} area(s), "
          f"{info['scheduled_events']} scheduled event(s)")
    for area, names in info["areas"].items():
        print(f"  area {area}: {', '.join(names)}")
    print(f"  border nodes: {', '.join(info['border_nodes']) or '(none)'}")
    print("  node addresses:")
    for name, address in info["node_addresses"].items():
        print(f"    {name:12s} {address}")
    print("  link networks:")
    for link in info["link_addresses"]:
        a, b = link["link"].split("-")
        print(f"    {link['link']:25s} area {link['area']:<3d} {link['network']:18s} "
              f"{a}={link[a]} {b}={link[b]}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    topology = load_topology(args.file)
    if args.json:
        print(dump_topology(topology, full=True), end="")
        return 0
    print(f"topology {topology.name!r}: hello {topology.hello_s:g} s, dead {topology.dead_s:g} s")
    if topology.description:
        print(f"  {topology.description}")
    for node in topology.nodes:
        print(f"  node {node.name:12s} area {node.area}"
              + (f" address {node.address}" if node.address else ""))
    for link in topology.links:
        ab, ba = link.costs()
        rates = "+".join(f"{r:g}" for r in link.key_rates_bps)
        print(f"  link {link.name:25s} key {rates} bit/s, cost {ab}/{ba}, mtu {link.mtu}, "
              f"delay {link.delay_s:g} s, loss {link.loss:g}, ratio {link.key_ratio}"
              + (f", area {link.area}" if link.area is not None else ""))
    for event in topology.schedule:
        value = "" if event.value is None else f" {event.value:g}"
        print(f"  at {event.at_s:g} s: {event.action} {event.target}{value}")
    return 0

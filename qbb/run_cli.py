"""``qbb run``: options, checks and output shared by the embedded and netns modes (docs/node.md).

:func:`add_arguments` defines the options, :func:`run_from_cli` runs the embedded mode
(:func:`qbb.network.run_network`; the netns mode is :func:`qbb.emulated.run_from_cli`),
:func:`print_summary` prints the summary either mode returns.  Option errors are
:class:`~qbb.errors.ConfigError` naming the option.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import trio
import trio.testing

from qbb.console import HELP, merge_schedule, parse_event_option
from qbb.errors import ConfigError
from qbb.keydemo import farthest_pair
from qbb.network import _print_stderr, run_network
from qbb.topology import Topology, load_topology

__all__ = ["add_arguments", "app_pairs_option", "check_app_options", "parse_pairs",
           "print_progress", "print_summary", "run_from_cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``qbb run`` (embedded mode)."""
    parser.add_argument("topology", help="topology JSON file (docs/topology.md)")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="network seconds to run (default 30)")
    parser.add_argument("--virtual-time", action="store_true",
                        help="run on trio's MockClock: as fast as the CPU allows")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--relay", type=int, default=1, metavar="N",
                        help="session keys relayed per pair, one round per second (default 1)")
    parser.add_argument("--pairs", default=None, metavar="A:B,C:D",
                        help="node pairs to relay keys between (default: every pair)")
    parser.add_argument("--key-bits", type=int, default=256, help="session key length")
    parser.add_argument("--seed", type=int, default=0, help="seed for link loss")
    parser.add_argument("--event", action="append", default=[], metavar="AT:ACTION:TARGET[:VALUE]",
                        help="schedule an event (repeatable), e.g. 5:link_down:A-B, "
                        "8:key_rate:A-B:5000, 12:node_stop:C; merged with the topology's "
                        "schedule")
    parser.add_argument("--apps", default="auto", metavar="A:B,C:D|auto|none",
                        help="application key streams through the QKDTL transport: a client "
                        "application at A obtains keys shared with a server application at B "
                        "(default auto: the first node and the node farthest from it)")
    parser.add_argument("--app-keys", type=int, default=16, metavar="N",
                        help="keys each application pair obtains (default 16)")
    parser.add_argument("--app-key-bits", type=int, default=256, metavar="BITS",
                        help="key length for the applications (default 256)")
    parser.add_argument("--key-api", type=int, default=None, metavar="PORT",
                        help="serve the key API (docs/keyapi.md) of node i on "
                        "127.0.0.1:PORT+i for `qbb key` (embedded mode); in netns mode every "
                        "node serves PORT on its namespace's loopback")
    parser.add_argument("--interactive", action="store_true",
                        help="read commands from stdin while running (default when stdin "
                        "is a terminal): link down A-B, link up A-B, rate A-B BPS, stop A, "
                        "start A, status, help")


def parse_pairs(text: str | None) -> list[tuple[str, str]] | None:
    if not text:
        return None
    pairs = []
    for item in text.split(","):
        a, sep, b = item.strip().partition(":")
        if not sep or not a or not b:
            raise ConfigError(f"--pairs: expected A:B, got {item!r}")
        pairs.append((a, b))
    return pairs


def app_pairs_option(text: str, topology: Topology) -> list[tuple[str, str]]:
    """``--apps``: "auto", "none" or A:B pairs of distinct nodes of ``topology``."""
    if text == "none":
        return []
    if text == "auto":
        return [farthest_pair(topology)] if len(topology.nodes) > 1 else []
    pairs, names = parse_pairs(text) or [], {node.name for node in topology.nodes}
    for a, b in pairs:
        if a not in names or b not in names or a == b:
            raise ConfigError(f"--apps: {a}:{b} does not name two nodes of {topology.name}")
    return pairs


def check_app_options(args: argparse.Namespace) -> None:
    if not 1 <= args.app_keys <= 100_000:
        raise ConfigError(f"--app-keys must be 1..100000, got {args.app_keys}")
    if not 1 <= args.app_key_bits <= 0xFFFF:
        raise ConfigError(f"--app-key-bits must be 1..65535, got {args.app_key_bits}")
    if args.key_api is not None and not 1 <= args.key_api <= 0xFFFF:
        raise ConfigError(f"--key-api must be a TCP port, got {args.key_api}")


def _console(args: argparse.Namespace) -> trio.abc.ReceiveStream | None:
    """stdin as a trio stream when commands are wanted (``--interactive`` or a TTY)."""
    interactive = getattr(args, "interactive", False)
    if not interactive and not (sys.stdin is not None and sys.stdin.isatty()):
        return None
    if args.virtual_time:
        if interactive:
            raise ConfigError("--interactive needs real time (drop --virtual-time)")
        return None
    return trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))


def print_progress(point: dict) -> None:
    """One human-readable progress line per network second, on stderr."""
    state = "converged" if point.get("converged") else "converging"
    print(f"t={point.get('t', 0):7.1f}s  {state:10s}  keys delivered: "
          f"{point.get('keys_delivered', 0):6d}  nodes running: {point.get('running', 0)}",
          file=sys.stderr, flush=True)


def run_from_cli(args: argparse.Namespace, out=None) -> int:
    """Run a topology as :func:`add_arguments` describes; exit status 0 if converged."""
    out = out or sys.stdout
    topology = load_topology(args.topology)
    topology = merge_schedule(topology, [parse_event_option(text, topology)
                                         for text in getattr(args, "event", None) or ()])
    pairs = parse_pairs(args.pairs)
    names = {node.name for node in topology.nodes}
    for a, b in pairs or ():
        if a not in names or b not in names or a == b:
            raise ConfigError(f"--pairs: {a}:{b} does not name two nodes of {topology.name}")
    app_pairs = app_pairs_option(args.apps, topology)
    check_app_options(args)
    if args.key_api is not None:
        top = args.key_api + len(topology.nodes) - 1
        if top > 0xFFFF:
            raise ConfigError(f"--key-api {args.key_api}: {len(topology.nodes)} nodes need "
                              f"ports up to {top}")
        _print_stderr("key API: " + ", ".join(
            f"{node.name} 127.0.0.1:{args.key_api + i}" for i, node in enumerate(topology.nodes)))
    progress = None if args.json else print_progress
    console = _console(args)
    if console is not None:
        _print_stderr(HELP)
    main = lambda: run_network(topology, args.duration, on_progress=progress, pairs=pairs,  # noqa: E731
                               keys_per_pair=args.relay, key_bits=args.key_bits, seed=args.seed,
                               console=console, app_pairs=app_pairs, app_keys=args.app_keys,
                               app_key_bits=args.app_key_bits, key_api_port=args.key_api)
    clock = trio.testing.MockClock(autojump_threshold=0) if args.virtual_time else None
    summary = trio.run(main, clock=clock)
    return print_summary(summary, args.json, out)


def print_summary(summary: dict, as_json: bool, out=None) -> int:
    """Print a run's summary (one JSON object, or aligned lines); exit status 0 if converged."""
    out = out or sys.stdout
    if as_json:
        print(json.dumps(summary), file=out)
    else:
        width = max(len(key) for key in summary)
        for key, value in summary.items():
            print(f"{key:{width}s}  {value}", file=out)
    return 0 if summary["converged"] else 1

"""The ``qbb`` command: one entry point, one subcommand per job.

``qbb dissect FILE`` prints a layered dissection of a capture; ``qbb bench NAME`` runs a
benchmark. Every subcommand has ``--help``; ``--json`` output is the machine interface
described in shared/DESIGN.md. Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from qbb import __version__, topology_cli
from qbb.errors import QbbError


def _cmd_dissect(args: argparse.Namespace) -> int:
    from qbb import dissect

    shown = 0
    for index, packet in enumerate(dissect.read_capture(args.file), start=1):
        if args.layer and not any(l.name == args.layer for l in dissect.layers(packet)):
            continue
        print(dissect.format_json(index, packet) if args.json else dissect.format_text(index, packet))
        shown += 1
        if args.count and shown >= args.count:
            break
    if not args.json:
        print(f"{shown} packet(s) shown from {args.file}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from qbb.bench import registry

    benches = registry()
    if args.list or not args.name:
        for name, func in sorted(benches.items()):
            doc = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else ""
            print(f"{name:10s} {doc}")
        return 0
    if args.name not in benches:
        raise QbbError(f"unknown benchmark {args.name!r}; choose from {', '.join(sorted(benches))}")
    if not args.json:
        print(f"{'case':38s} {'metric':14s} {'value':>14s}  unit")
    for result in benches[args.name](args.quick):
        if args.json:
            print(json.dumps(result.as_dict()), flush=True)
        else:
            print(f"{result.case:38s} {result.metric:14s} {result.value:14.3f}  {result.unit}",
                  flush=True)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    if args.mode == "netns":
        from qbb import emulated

        return emulated.run_from_cli(args)
    from qbb import run_cli

    return run_cli.run_from_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qbb", description="qbb: a SECOQC-style trusted-relay QKD backbone network stack.")
    parser.add_argument("--version", action="version", version=f"qbb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from qbb import emulated, run_cli

    run = sub.add_parser("run", help="run a QKD network from a topology file",
                         description="Start every node of TOPOLOGY, wait for routing to "
                         "converge, relay session keys hop by hop and print a summary. "
                         "Embedded mode (default): all nodes in this process, links are memory "
                         "channels. netns mode (root): one process per node in its own network "
                         "namespace, links are veth pairs carrying Q3P over UDP. Exit status 0 "
                         "if the network converged.")
    run_cli.add_arguments(run)
    run.add_argument("--mode", choices=["embedded", "netns"], default="embedded",
                     help="embedded (default) or netns (root; see docs/emulated.md)")
    emulated.add_arguments(run)
    run.set_defaults(func=_cmd_run)

    dis = sub.add_parser("dissect", help="print a layered dissection of a capture",
                         description="Dissect a pcap of QBB classical channels: "
                         "Ether/IP/UDP/Q3P/QKDNL/{OSPF|ICMP|QKDTL|Q-RoKR}.")
    dis.add_argument("file", help="pcap or pcapng file")
    dis.add_argument("--json", action="store_true", help="one JSON object per packet")
    dis.add_argument("--count", type=int, default=0, metavar="N", help="stop after N packets")
    dis.add_argument("--layer", metavar="NAME",
                     help="only packets that contain this layer (e.g. Q3P, 'OSPF Hello')")
    dis.set_defaults(func=_cmd_dissect)

    bench = sub.add_parser("bench", help="run a benchmark",
                           description="Run a benchmark; --list shows them.")
    bench.add_argument("name", nargs="?", help="benchmark name (see --list)")
    bench.add_argument("--list", action="store_true", help="list the benchmarks")
    bench.add_argument("--quick", action="store_true", help="short run (seconds, not minutes)")
    bench.add_argument("--json", action="store_true", help="one JSON object per measured case")
    bench.set_defaults(func=_cmd_bench)

    topology_cli.add_parser(sub)
    from qbb.keyapi import cli as keyapi_cli

    keyapi_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except QbbError as error:
        print(f"qbb {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print(f"qbb {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

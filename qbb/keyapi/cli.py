"""``qbb key``: try a node's application key API from the command line.

Each invocation opens one connection to the key API (``--api HOST:PORT``, default
``$QBB_KEY_API`` or 127.0.0.1:7400), makes one call with :class:`qbb.client.KeyClient`
and prints the result on stdout: ``register`` the port, ``accept``/``open`` the KSID,
``get`` one line per key (``INDEX KEY``), ``status`` the node's snapshot.  Nothing stays
open between invocations: registrations and key streams live at the node (SECOQC seed
002 §3.4: registration, connection and secure-communication phases).

Exit status: 0 on success; 2 when the node answers with a failure status (printed as
``qbb key: STATUS_NAME: reason`` on stderr) or the arguments are invalid; 1 when the key
API cannot be reached.  Only key output goes to stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any

DEFAULT_API = "127.0.0.1:7400"


def parse_api(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. {DEFAULT_API})")
    return host, int(port)


def _ranged(kind: type, low: float, high: float) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high or (kind is float and value == 0):
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g}..{high:g}")
        return value
    convert.__name__ = kind.__name__
    return convert


_SECONDS = _ranged(float, 0.0, 3600.0)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``qbb key ACTION`` on ``qbb``'s subparsers."""
    key = subparsers.add_parser(
        "key", help="ask a node's key API for keys (register, accept, open, get, close)",
        description="Talk to the application key API of a running QBB node: register a "
        "server application, accept or open a key stream, get keys, close it. See "
        "docs/keyapi.md. Exit status 2 for a failure status, 1 if the API is unreachable.")
    key.add_argument("--api", metavar="HOST:PORT", type=parse_api,
                     default=os.environ.get("QBB_KEY_API", DEFAULT_API),
                     help=f"the node's key API (default $QBB_KEY_API or {DEFAULT_API})")
    sub = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    _add(sub, "register", _register, "register a server application; prints its port",
         "Register NAME at the node; the registration stays until `qbb key unregister`.",
         [("name", {"metavar": "NAME", "help": "application name (1-64 of A-Za-z0-9._@-)"})])
    _add(sub, "unregister", _unregister, "withdraw a registration", "Withdraw NAME.",
         [("name", {"metavar": "NAME", "help": "a name registered at this node"})])
    _add(sub, "accept", _accept, "wait for a connection to NAME; prints its KSID",
         "Wait until a client opens a key stream to NAME; print the stream's KSID.",
         [("name", {"metavar": "NAME", "help": "a name registered at this node"}),
          ("--timeout", {"type": _SECONDS, "default": 10.0, "metavar": "S",
                         "help": "give up after S seconds (default 10)"})])
    _add(sub, "open", _open, "open a key stream to a registered application; prints its KSID",
         "OPEN_CONNECT to DESTINATION (registered anywhere in the network).", _open_options())
    _add(sub, "get", _get, "get the next keys of a key stream",
         "Print the next keys of KSID, one line each: INDEX KEY.", _get_options())
    _add(sub, "close", _close, "close a key stream at both ends", "Close KSID.",
         [("ksid", {"metavar": "KSID", "help": "key stream id from `open` or `accept`"})])
    _add(sub, "status", _status, "show the node's registrations, streams and counters",
         "Print the node's key service status.",
         [("--json", {"action": "store_true", "help": "as one JSON object"})])
    return key


def _add(sub: Any, name: str, action: Any, help_text: str, description: str,
         arguments: list[tuple[str, dict[str, Any]]]) -> None:
    parser = sub.add_parser(name, help=help_text, description=description)
    for flag, options in arguments:
        parser.add_argument(flag, **options)
    parser.set_defaults(func=_run, action=action)


def _open_options() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("destination", {"metavar": "DESTINATION", "help": "registered application name"}),
        ("--chunk-bits", {"type": _ranged(int, 1, 65535), "default": 256, "metavar": "N",
                          "help": "bits per key (1..65535, default 256)"}),
        ("--service", {"choices": ["best_effort", "guaranteed"], "default": "best_effort",
                       "help": "service class (default best_effort; guaranteed needs --rate)"}),
        ("--rate", {"type": _ranged(int, 0, 2**63 - 1), "default": 0, "metavar": "BPS",
                    "help": "key rate lambda in bit/s (0: unspecified)"}),
        ("--burst", {"type": _ranged(int, 0, 2**63 - 1), "default": 0, "metavar": "BITS",
                     "help": "burst sigma in bits (0: unspecified)"}),
        ("--timeout", {"type": _SECONDS, "default": 10.0, "metavar": "S",
                       "help": "bound on connection setup, default for GET_KEY (default 10)"}),
    ]


def _get_options() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("ksid", {"metavar": "KSID", "help": "key stream id from `open` or `accept`"}),
        ("--count", {"type": _ranged(int, 1, 1024), "default": 1, "metavar": "N",
                     "help": "number of keys (1..1024, default 1; fewer if the stream runs dry)"}),
        ("--timeout", {"type": _SECONDS, "default": 10.0, "metavar": "S",
                       "help": "wait at most S seconds for the keys (default 10)"}),
        ("--format", {"choices": ["hex", "base64"], "default": "hex",
                      "help": "key encoding (default hex)"}),
        ("--json", {"action": "store_true",
                    "help": "one JSON object per key: ksid, index, bits, key, format"}),
    ]


def _run(args: argparse.Namespace) -> int:
    from qbb.client import ApiError, KeyApiConnectionError, KeyClient

    host, port = args.api
    try:
        with KeyClient(host, port, timeout=10.0) as client:
            args.action(client, args)
    except ApiError as error:
        print(f"qbb key: {error.status.name}: {error.reason}", file=sys.stderr)
        return 2
    except KeyApiConnectionError as error:
        print(f"qbb key: error: {error}", file=sys.stderr)
        return 1
    return 0


def _register(client: Any, args: argparse.Namespace) -> None:
    print(client.register(args.name))


def _unregister(client: Any, args: argparse.Namespace) -> None:
    client.unregister(args.name)


def _accept(client: Any, args: argparse.Namespace) -> None:
    print(client.accept(args.name, timeout_s=args.timeout))


def _open(client: Any, args: argparse.Namespace) -> None:
    print(client.open_connect(args.destination, key_chunk_size=args.chunk_bits,
                              service=args.service, rate_bps=args.rate,
                              burst_bits=args.burst, timeout_s=args.timeout))


def _get(client: Any, args: argparse.Namespace) -> None:
    for chunk in client.get_keys(args.ksid.lower(), args.count, timeout_s=args.timeout):
        key = chunk.key.hex() if args.format == "hex" else base64.b64encode(chunk.key).decode()
        if args.json:
            print(json.dumps({"ksid": chunk.ksid, "index": chunk.index, "bits": chunk.bits,
                              "key": key, "format": args.format}), flush=True)
        else:
            print(chunk.index, key, flush=True)


def _close(client: Any, args: argparse.Namespace) -> None:
    client.close(args.ksid.lower())


def _status(client: Any, args: argparse.Namespace) -> None:
    node = client.status()
    if args.json:
        print(json.dumps(node, sort_keys=True))
        return
    for key, value in sorted(node.items()):
        print(f"{key}: {value if isinstance(value, str) else json.dumps(value, sort_keys=True)}")

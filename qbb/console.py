"""Runtime events for ``qbb run``: ``--event`` options and console commands (docs/node.md §6).

Both produce :class:`~qbb.topology.ScheduledEvent` values with the topology schedule's
semantics (seed 002 §2.5: link failures, key-rate changes, node restarts), applied by
:meth:`qbb.network.EmbeddedNetwork.apply`.

``--event AT:ACTION:TARGET[:VALUE]`` (:func:`parse_event_option`) is checked against the
topology (unknown action, node or link, missing or extra value: :class:`ConfigError`
naming the option) and :func:`merge_schedule` merges the options with the topology's own
schedule in time order (stable: file events first at equal times).

Console commands (:func:`parse_command`), one per line, while the network runs in real
time::

    link down A-B | link up A-B | rate A-B BPS | stop A | start A | status | help

:func:`run_console` reads them from a trio receive stream (stdin in ``qbb run``), applies
them at once and writes one reply line per command; :func:`status_table` is the compact
table ``status`` prints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable

from qbb.errors import ConfigError
from qbb.topology import ACTIONS, ScheduledEvent, Topology, TopologyError

__all__ = ["HELP", "merge_schedule", "parse_command", "parse_event_option", "run_console",
           "status_table"]

HELP = ("commands: link down A-B | link up A-B | rate A-B BPS | stop NODE | start NODE | "
        "status | help")


def _check_target(topology: Topology, event: ScheduledEvent) -> None:
    """ConfigError unless ``event.target`` names a link or node of ``topology``."""
    if event.on_link:
        a, b = event.link_ends()
        names = {n.name for n in topology.nodes}
        if a not in names or b not in names or a == b:
            raise ConfigError(f"no link {event.target!r} in topology {topology.name!r}")
        topology.link(a, b)
    else:
        topology.node(event.target)


def _event(topology: Topology, at_s: float, action: str, target: str,
           value: float | None) -> ScheduledEvent:
    try:
        event = ScheduledEvent(at_s, action, target, value)
        _check_target(topology, event)
    except TopologyError as error:
        raise ConfigError(f"{error.path}: {error.problem}" if error.path
                          else error.problem) from None
    return event


def parse_event_option(text: str, topology: Topology) -> ScheduledEvent:
    """``AT:ACTION:TARGET[:VALUE]`` -> ScheduledEvent (ConfigError naming ``--event``)."""
    parts = text.split(":")
    try:
        if len(parts) not in (3, 4):
            raise ConfigError("expected AT:ACTION:TARGET[:VALUE]")
        at_s = _number(parts[0], "AT")
        if at_s < 0:
            raise ConfigError("AT must be >= 0 seconds")
        if parts[1] not in ACTIONS:
            raise ConfigError(f"unknown action {parts[1]!r}; choose from "
                              f"{', '.join(sorted(ACTIONS))}")
        value = _number(parts[3], "VALUE") if len(parts) == 4 else None
        return _event(topology, at_s, parts[1], parts[2], value)
    except ConfigError as error:
        raise ConfigError(f"--event {text!r}: {error}") from None


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be finite, got {text!r}")
    return value


def merge_schedule(topology: Topology, events: list[ScheduledEvent]) -> Topology:
    """``topology`` with ``events`` merged into its schedule in time order."""
    if not events:
        return topology
    merged = sorted((*topology.schedule, *events), key=lambda e: e.at_s)
    return dataclasses.replace(topology, schedule=tuple(merged))


def parse_command(line: str, topology: Topology) -> ScheduledEvent | str | None:
    """A console line -> an event (``at_s`` 0: now), ``"status"``, ``"help"`` or None
    (empty line); ConfigError with a one-line explanation otherwise."""
    words = line.split()
    if not words:
        return None
    if words in (["status"], ["help"]):
        return words[0]
    if words[0] == "link" and len(words) == 3 and words[1] in ("down", "up"):
        return _event(topology, 0.0, f"link_{words[1]}", words[2], None)
    if words[0] == "rate" and len(words) == 3:
        return _event(topology, 0.0, "key_rate", words[1], _number(words[2], "BPS"))
    if words[0] in ("stop", "start") and len(words) == 2:
        return _event(topology, 0.0, f"node_{words[0]}", words[1], None)
    raise ConfigError(f"cannot parse {line.strip()!r}; {HELP}")


def status_table(net) -> str:
    """One line per node and per link end: state, routes, neighbours, key levels."""
    rows = [f"t={net.clock():.1f}s converged={net.converged()} "
            f"keys delivered={net.keys['delivered']}",
            f"{'node':8s} {'state':8s} {'routes':>6s} {'full':>4s}  links (peer: up enc/dec KiB)"]
    for name, node in net.nodes.items():
        state = "stopped" if name in net.stopped else "running"
        tables = node.router.tables(node.clock())
        routes = len(tables.main.rows()) if tables is not None else 0
        full = sum(1 for n in node.router.neighbors().values() if n.state.name == "FULL")
        links = []
        for link in node.links.values():
            store = link.hardware.store.status()
            links.append(f"{link.peer}: {'up' if link.up else 'down'} "
                         f"{store.enc_level_bits // 8192}/{store.dec_level_bits // 8192}")
        rows.append(f"{name:8s} {state:8s} {routes:6d} {full:4d}  {', '.join(links)}")
    return "\n".join(rows)


async def stream_lines(stream, chunk_size: int = 65536) -> AsyncIterator[bytes]:
    """The newline-terminated lines of a trio receive ``stream`` until it closes."""
    buffer = b""
    while True:
        chunk = await stream.receive_some(chunk_size)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line


async def run_console(net, stream, write: Callable[[str], None]) -> None:
    """Read commands from the trio receive ``stream`` until it closes; apply them."""
    async for line in stream_lines(stream, 4096):
        await execute(net, line.decode("utf-8", "replace"), write)


async def execute(net, line: str, write: Callable[[str], None]) -> None:
    """Run one console line against ``net``; every outcome is one reply."""
    try:
        command = parse_command(line, net.topology)
    except ConfigError as error:
        write(f"error: {error}")
        return
    if command is None:
        return
    if command == "help":
        write(HELP)
    elif command == "status":
        write(status_table(net))
    else:
        await net.apply(command)
        write(f"t={net.clock():.1f}s {command.action} {command.target}"
              + (f" {command.value:g}" if command.value is not None else ""))

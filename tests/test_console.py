"""Runtime events for `qbb run`: --event options and console commands (qbb/console.py)."""

from __future__ import annotations

import argparse
import io
import json

import pytest
import trio
import trio.testing

from qbb.console import (HELP, merge_schedule, parse_command, parse_event_option, run_console,
                         status_table)
from qbb.errors import ConfigError
from qbb.network import EmbeddedNetwork
from qbb.run_cli import add_arguments, run_from_cli
from qbb.topology import LinkSpec, NodeSpec, ScheduledEvent, Topology, dump_topology


def line(n: int = 3, schedule=()) -> Topology:
    names = [chr(ord("A") + i) for i in range(n)]
    return Topology("line", tuple(NodeSpec(x, 1) for x in names),
                    tuple(LinkSpec(a, b) for a, b in zip(names, names[1:])),
                    schedule=tuple(schedule))


@pytest.mark.parametrize("text, expected", [
    ("5:link_down:A-B", ScheduledEvent(5.0, "link_down", "A-B")),
    ("0.5:link_up:B-A", ScheduledEvent(0.5, "link_up", "B-A")),
    ("8:key_rate:B-C:5000", ScheduledEvent(8.0, "key_rate", "B-C", 5000.0)),
    ("12:node_stop:C", ScheduledEvent(12.0, "node_stop", "C")),
    ("13:node_start:C", ScheduledEvent(13.0, "node_start", "C")),
])
def test_event_option_parses(text, expected):
    assert parse_event_option(text, line()) == expected


@pytest.mark.parametrize("text, problem", [
    ("5:link_down", "AT:ACTION:TARGET"),
    ("x:link_down:A-B", "AT must be a number"),
    ("-1:link_down:A-B", ">= 0"),
    ("5:explode:A", "unknown action 'explode'"),
    ("5:link_down:A-C", "no link"),
    ("5:link_down:A-Z", "no link"),
    ("5:link_down:AB", "A-B"),
    ("5:node_stop:Z", "no node 'Z'"),
    ("5:key_rate:A-B", "needs a value"),
    ("5:node_stop:A:3", "takes no value"),
    ("5:key_rate:A-B:lots", "VALUE must be a number"),
    ("5:a:b:c:d", "AT:ACTION:TARGET"),
])
def test_event_option_errors_name_the_option(text, problem):
    with pytest.raises(ConfigError) as info:
        parse_event_option(text, line())
    assert str(info.value).startswith(f"--event {text!r}:") and problem in str(info.value)


def test_merge_schedule_keeps_time_order():
    topology = line(schedule=[ScheduledEvent(2.0, "link_down", "A-B"),
                              ScheduledEvent(6.0, "link_up", "A-B")])
    extra = [ScheduledEvent(4.0, "node_stop", "C"), ScheduledEvent(1.0, "node_start", "C")]
    merged = merge_schedule(topology, extra)
    assert [e.at_s for e in merged.schedule] == [1.0, 2.0, 4.0, 6.0]
    assert merge_schedule(topology, []) is topology


@pytest.mark.parametrize("line_text, expected", [
    ("link down A-B", ScheduledEvent(0.0, "link_down", "A-B")),
    ("  link up B-A ", ScheduledEvent(0.0, "link_up", "B-A")),
    ("rate A-B 5000", ScheduledEvent(0.0, "key_rate", "A-B", 5000.0)),
    ("stop A", ScheduledEvent(0.0, "node_stop", "A")),
    ("start A", ScheduledEvent(0.0, "node_start", "A")),
    ("status", "status"), ("help", "help"), ("", None), ("   ", None),
])
def test_parse_command(line_text, expected):
    assert parse_command(line_text, line()) == expected


@pytest.mark.parametrize("text", ["link sideways A-B", "link down A-C", "rate A-B", "rate A-B x",
                                  "stop Z", "reboot", "status now"])
def test_parse_command_errors(text):
    with pytest.raises(ConfigError):
        parse_command(text, line())


async def test_console_applies_commands_and_replies(autojump_clock):
    replies: list[str] = []
    send, receive = trio.testing.memory_stream_one_way_pair()
    async with trio.open_nursery() as nursery:
        net = await nursery.start(EmbeddedNetwork(line()).run)
        assert await net.wait_converged(20) is not None
        nursery.start_soon(run_console, net, receive, replies.append)
        await send.send_all(b"link down A-B\nrate B-C 2500\nstop C\nbogus\n\nhelp\nstatus\n")
        await trio.sleep(1)
        assert not net.wires[("A", "B")].up and not net.wires[("B", "A")].up
        assert net.hardware["B"]["C"].devices.rate_bps == 2500
        assert "C" in net.stopped
        await send.send_all(b"start C\nlink up A-B\n")
        await trio.sleep(8)
        assert net.wires[("A", "B")].up and "C" not in net.stopped and net.converged()
        await send.aclose()
        nursery.cancel_scope.cancel()
    assert [r.split()[1] for r in replies[:3]] == ["link_down", "key_rate", "node_stop"]
    assert replies[3].startswith("error: cannot parse 'bogus'") and replies[4] == HELP
    assert replies[5].splitlines()[1].startswith("node") and len(replies[5].splitlines()) == 5
    assert [e["action"] for e in net.events] == ["link_down", "key_rate", "node_stop",
                                                 "node_start", "link_up"]


async def test_status_table_lists_every_node(autojump_clock):
    async with trio.open_nursery() as nursery:
        net = await nursery.start(EmbeddedNetwork(line()).run)
        await net.wait_converged(20)
        table = status_table(net).splitlines()
        nursery.cancel_scope.cancel()
    assert "converged=True" in table[0]
    assert [row.split()[0] for row in table[2:]] == ["A", "B", "C"]
    assert all("running" in row for row in table[2:]) and "B: up" in table[2]


def _args(tmp_path, *extra: str) -> argparse.Namespace:
    path = tmp_path / "line.json"
    path.write_text(dump_topology(line(schedule=[ScheduledEvent(6.0, "link_up", "A-B")])))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([str(path), "--virtual-time", "--json", "--duration", "8", *extra])


def test_run_from_cli_merges_event_options(tmp_path):
    out = io.StringIO()
    args = _args(tmp_path, "--event", "3:link_down:A-B", "--event", "1:key_rate:B-C:2000",
                 "--event", "7:node_stop:C")
    assert run_from_cli(args, out) == 0
    summary = json.loads(out.getvalue())
    assert [(e["action"], e["target"]) for e in summary["events"]] == [
        ("key_rate", "B-C"), ("link_down", "A-B"), ("link_up", "A-B"), ("node_stop", "C")]


def test_run_from_cli_rejects_a_bad_event_option(tmp_path):
    with pytest.raises(ConfigError, match="--event '3:link_down:A-Q'"):
        run_from_cli(_args(tmp_path, "--event", "3:link_down:A-Q"), io.StringIO())


def test_interactive_needs_real_time(tmp_path):
    with pytest.raises(ConfigError, match="--interactive needs real time"):
        run_from_cli(_args(tmp_path, "--interactive"), io.StringIO())

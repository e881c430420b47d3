"""Node startup order (qbb/node.py): no routing packet towards a link without a driver.

A link may report LinkUp before :meth:`QBBNode.run` has the drivers of all links (a peer's
datagrams already waiting in the socket).  The node holds such events until every link
has its driver, then handles them in order; a clean start of ring5 therefore has no
``link_not_running`` drop -- embedded (zero-delay links, restarts) and over veth (root).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path

import pytest
import trio
import trio.testing

from qbb import netns
from qbb.netlayer.packet import decode_packet
from qbb.network import EmbeddedNetwork
from qbb.node import NodeConfig, QBBNode
from qbb.q3p.events import Delivered, LinkUp
from qbb.routing.packet import Hello, decode_packet as decode_ospf
from qbb.topology import load_topology
from qbb.wire import PROTO_OSPF

RING5 = Path(__file__).resolve().parents[1] / "topologies" / "ring5.json"


@pytest.fixture
def clock():
    return trio.testing.MockClock(autojump_threshold=0)


class FakeDriver:
    """Records what the node queues on a link."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int]] = []

    def send_nowait(self, data: bytes, *, priority: int, channel: int, encrypt: bool) -> bool:
        self.sent.append((data, priority))
        return True


def eager_runner(before_started: list):
    """A link runner that reports ``before_started`` events before it hands over its driver."""
    drivers: list[FakeDriver] = []

    async def run(endpoint, *wires, events, task_status=trio.TASK_STATUS_IGNORED, **options):
        driver = FakeDriver()
        drivers.append(driver)
        for event in before_started:
            events(event)
        task_status.started(driver)
        await trio.sleep_forever()
    return run, drivers


def node_of(name: str, config: NodeConfig = NodeConfig()) -> QBBNode:
    topology = load_topology(RING5)
    net = EmbeddedNetwork(topology)
    return QBBNode(name, topology, net.plan, net.hardware[name], config=config)


async def test_link_up_before_every_driver_exists_is_held_not_dropped(clock):
    node = node_of("A")
    runner, drivers = eager_runner([LinkUp("peer")])
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(node.run, {i: () for i in node.links}, runner=runner))
        assert node.drops()["link_not_running"] == 0 and not node.drops()
        assert len(drivers) == 2 and all(link.up for link in node.links.values())
        for driver in drivers:  # each link got its first Hello at once
            packets = [decode_packet(data) for data, _ in driver.sent]
            assert any(p.protocol == PROTO_OSPF and p.ttl == 1
                       and isinstance(decode_ospf(p.payload).body, Hello) for p in packets)
        nursery.cancel_scope.cancel()
    assert not node.running and all(link.driver is None for link in node.links.values())


async def test_held_events_are_bounded_and_handled_in_order(clock):
    node = node_of("B", NodeConfig(startup_backlog=3))
    garbage = [Delivered(0, bytes([0x45, i])) for i in range(5)]
    runner, drivers = eager_runner([LinkUp("peer"), *garbage])
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(node.run, {i: () for i in node.links}, runner=runner))
        # first link: LinkUp + 2 packets held, 3 dropped; second link: all 6 dropped
        assert node.counters["drop.startup_backlog"] == 3 + 6
        assert node.forwarder.drops["malformed"] == 2
        assert sum(link.up for link in node.links.values()) == 1
        nursery.cancel_scope.cancel()


def zero_delay_ring5():
    topology = load_topology(RING5)
    links = tuple(dataclasses.replace(link, delay_s=0.0) for link in topology.links)
    return dataclasses.replace(topology, links=links)


async def test_clean_start_and_restart_of_ring5_drop_nothing(clock):
    async with trio.open_nursery() as nursery:
        net = await nursery.start(EmbeddedNetwork(zero_delay_ring5()).run)
        assert await net.wait_converged(timeout=20) is not None
        await trio.sleep(2)
        assert dict(net.drops()) == {}
        net.stop_node("C")
        await trio.sleep(6)
        await net.start_node("C")
        assert await net.wait_converged(timeout=20) is not None
        await trio.sleep(2)
        assert net.drops()["link_not_running"] == 0
        assert all(n.counters["drop.startup_backlog"] == 0 for n in net.nodes.values())
        nursery.cancel_scope.cancel()


@pytest.mark.netns
@pytest.mark.skipif(not netns.is_root(), reason="network namespaces need root")
def test_clean_start_of_ring5_over_veth_drops_nothing(tmp_path: Path) -> None:
    from qbb.emulated import run_emulated
    path = tmp_path / "ring5.json"
    shutil.copy(RING5, path)
    summary = run_emulated(path, 5.0, keys_per_pair=0)
    assert summary["converged"] and summary["mode"] == "netns"
    assert "link_not_running" not in summary["drops"], summary["drops"]

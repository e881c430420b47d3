"""The emulated network (qbb.emulated, qbb.nodeproc): five node processes in five namespaces.

Root only (network namespaces): a ring of five nodes (topologies/ring5.json) over veth
pairs converges, relays session keys that are identical at both ends, reroutes when a
veth is taken down, and leaves no namespace and no process behind -- after a normal run,
after a node process dies, and after SIGINT to the launcher.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qbb import netns
from qbb.emulated import EmulatedNetwork, EmulationError, parse_netem
from qbb.errors import ConfigError
from qbb.topology import load_topology

ROOT = Path(__file__).resolve().parents[1]
RING5 = ROOT / "topologies" / "ring5.json"
root_only = pytest.mark.skipif(not netns.is_root(), reason="network namespaces need root")


def _our_namespaces(pid: int) -> list[str]:
    return [n for n in netns.list_namespaces() if n.startswith(f"{netns.PREFIX}{pid}-")]


def _processes_mentioning(token: str) -> list[int]:
    """Live processes whose command line contains ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if token in cmdline and "qbb.nodeproc" in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def ring5(tmp_path: Path) -> Path:
    """ring5.json copied under a unique path, so its processes can be recognised."""
    path = tmp_path / "ring5.json"
    shutil.copy(RING5, path)
    return path


def _wait(predicate, timeout: float, net: EmulatedNetwork) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        net.sleep(0.2)
    return False


def _relay_and_check(net: EmulatedNetwork, pairs, timeout: float = 5.0) -> None:
    sent = [net.relay_key(a, b, 256) for a, b in pairs]
    assert all(sent), sent
    assert _wait(lambda: net.keys["delivered"] >= len(net.sent), timeout, net), net.keys
    assert net.keys["mismatched"] == 0
    by_id = {(r["source"], r["key_id"]): r for r in net.received}
    for key in sent:
        got = by_id[(key["source"], key["key_id"])]
        assert got["key"] == key["key"] and got["digest"] == key["digest"]
        assert got["node"] == net.plan.node_of(key["destination"])


@pytest.mark.netns
@root_only
def test_ring5_converges_relays_and_reroutes(ring5: Path) -> None:
    topology = load_topology(ring5)
    with EmulatedNetwork(topology, ring5, reveal_keys=True) as net:
        assert net.wait_converged(timeout=20) is not None
        _relay_and_check(net, [("A", "C"), ("A", "D"), ("B", "E"), ("C", "A")])
        a_b = net.plan.link("A", "B").address_of("A")
        assert net.status("A")["neighbors"][a_b]["state"] == "FULL"
        net.set_link("A", "B", up=False)

        def rerouted() -> bool:
            status = net.status("A")
            route = {r["dest"]: r for r in status["routes"]}.get(net.plan.nodes["B"].block)
            return a_b not in status["neighbors"] and route is not None \
                and route["interface"] == net.plan.link("A", "E").address_of("A")
        assert _wait(rerouted, 15, net), net.status("A")
        _relay_and_check(net, [("A", "B"), ("B", "A")], timeout=8)
        net.set_link("A", "B", up=True)
    assert not _our_namespaces(os.getpid())
    assert not _processes_mentioning(str(ring5))
    summary = net.summary(0.0, True)
    assert summary["mode"] == "netns" and summary["key_reuse_detected"] is False
    assert summary["forwarded"] > 0 and summary["keys_delivered"] == 6


@pytest.mark.netns
@root_only
def test_failed_run_leaves_nothing(ring5: Path) -> None:
    topology = load_topology(ring5)
    with pytest.raises(EmulationError, match="node C process exited"):
        with EmulatedNetwork(topology, ring5) as net:
            net.lab.kill(net.procs["C"].proc)
            net.status("C")
    assert not _our_namespaces(os.getpid())
    assert not _processes_mentioning(str(ring5))


@pytest.mark.netns
@root_only
def test_sigint_cleans_up(ring5: Path) -> None:
    launcher = subprocess.Popen([sys.executable, "-m", "qbb.emulated", str(ring5),
                                 "--duration", "60", "--json"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while len(_processes_mentioning(str(ring5))) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_processes_mentioning(str(ring5))) == 5
        assert _our_namespaces(launcher.pid)
        launcher.send_signal(signal.SIGINT)
        _, err = launcher.communicate(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 130, err
    assert b"interrupted" in err
    assert not _our_namespaces(launcher.pid)
    assert not _processes_mentioning(str(ring5))


@pytest.mark.netns
@root_only
def test_schedule_stop_start_and_key_rate(tmp_path: Path) -> None:
    """A line of three nodes: node stop/start and a key rate change from the schedule."""
    path = tmp_path / "line3.json"
    path.write_text(json.dumps({
        "name": "line3", "nodes": [{"name": n, "area": 1} for n in "XYZ"],
        "links": [{"a": "X", "b": "Y"}, {"a": "Y", "b": "Z"}],
        "schedule": [{"at_s": 1.0, "action": "key_rate", "target": "X-Y", "value": 2e6},
                     {"at_s": 1.5, "action": "node_stop", "target": "Z"},
                     {"at_s": 2.0, "action": "node_start", "target": "Z"}]}))
    with EmulatedNetwork(load_topology(path), path, reveal_keys=True) as net:
        net.sleep_until(2.5)
        assert [e["action"] for e in net.events] == ["key_rate", "node_stop", "node_start"]
        assert net.status("X")["links"][net.plan.link("X", "Y").address_of("X")][
            "key_rate_bps"] == 2e6
        assert net.wait_converged(timeout=15) is not None
        _relay_and_check(net, [("X", "Z"), ("Z", "X")])
    assert not net.key_reuse_detected()


@pytest.mark.netns
@root_only
def test_stop_and_start_in_the_same_instant_restart_the_node(tmp_path: Path) -> None:
    """A start that arrives while the stopped node is still winding down is not lost
    (regression: the start was ignored and the node stayed dead)."""
    path = tmp_path / "line2.json"
    path.write_text(json.dumps({
        "name": "line2", "nodes": [{"name": n, "area": 1} for n in "XY"],
        "links": [{"a": "X", "b": "Y"}],
        "schedule": [{"at_s": 1.0, "action": "node_stop", "target": "Y"},
                     {"at_s": 1.0, "action": "node_start", "target": "Y"}]}))
    with EmulatedNetwork(load_topology(path), path, reveal_keys=True) as net:
        net.sleep_until(1.2)
        assert [e["action"] for e in net.events] == ["node_stop", "node_start"]
        assert net.wait_converged(timeout=15) is not None
        _relay_and_check(net, [("X", "Y")])
    assert not net.key_reuse_detected()


def test_not_root_is_a_clear_error(monkeypatch, ring5: Path) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(netns.NetnsError, match="need root"):
        EmulatedNetwork(load_topology(ring5), ring5).__enter__()


def test_parse_netem() -> None:
    assert parse_netem(None) is None
    settings = parse_netem("loss=1.5,delay_ms=2,limit=100,rate=10mbit")
    assert (settings.loss, settings.delay_ms, settings.limit, settings.rate) == \
        (1.5, 2.0, 100, "10mbit")
    for bad in ("loss", "bogus=1", "loss=x"):
        with pytest.raises(ConfigError, match="--netem"):
            parse_netem(bad)

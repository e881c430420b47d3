"""qbb.netns: namespaces, veth pairs, netem, tcpdump and cleanup (root tests skip otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from qbb import netns
from qbb.netns import Netem, NetLab, NetnsError

needs_root = pytest.mark.skipif(not netns.is_root(), reason="network namespaces need root")

UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7355))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

UDP_PING = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
got = 0
for i in range(int(sys.argv[2])):
    s.sendto(b"ping%d" % i, (sys.argv[1], 7355))
    try:
        got += s.recv(2048) == b"ping%d" % i
    except socket.timeout:
        pass
print(got)
"""


def _mine() -> list[str]:
    return [n for n in netns.list_namespaces() if n.startswith(f"qbb-{os.getpid()}-")]


def test_netem_arguments():
    assert Netem().args() == ["limit", "10000"]
    assert Netem(loss=5, duplicate=1, reorder=25, delay_ms=10, jitter_ms=2, rate="1gbit"
                 ).args() == ["limit", "10000", "delay", "10ms", "2ms", "loss", "5%",
                              "duplicate", "1%", "reorder", "25%", "rate", "1gbit"]
    assert Netem(reorder=10).args()[2:4] == ["delay", "1ms"]  # reorder needs a delay


def test_unique_names_carry_prefix_and_pid():
    first, second = netns.unique_name(), netns.unique_name()
    assert first != second
    assert first.startswith(f"qbb-{os.getpid()}-")


def test_not_root_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NetnsError, match="need root"):
        NetLab()
    with pytest.raises(NetnsError, match="need root"):
        netns.cleanup_stale()


def test_only_qbb_namespaces_are_ever_deleted():
    with pytest.raises(NetnsError, match="refusing"):
        netns.delete_namespace("production")
    with pytest.raises(NetnsError, match="only touches"):
        netns.cleanup_stale("other-")


@needs_root
@pytest.mark.netns
def test_veth_pair_carries_udp_and_netem_applies(tmp_path):
    with NetLab() as lab:
        ns_a, ns_b = lab.add_namespace(), lab.add_namespace()
        veth = lab.add_veth(ns_a, ns_b, mtu=9000)
        assert veth.addr_a.startswith("192.0.2.") and veth.prefixlen == 30
        assert set(_mine()) >= {ns_a.name, ns_b.name}
        assert "mtu 9000" in ns_a.run(["ip", "link", "show", veth.dev_a]).stdout
        echo = lab.spawn(ns_b, [sys.executable, "-c", UDP_ECHO, veth.addr_b],
                         stdout=subprocess.PIPE, text=True)
        assert echo.stdout.readline().strip() == "ready"
        pcap = tmp_path / "veth.pcap"
        capture = lab.capture(ns_a, veth.dev_a, pcap)
        ping = ns_a.run([sys.executable, "-c", UDP_PING, veth.addr_b, "20"])
        assert int(ping.stdout) == 20
        lab.stop_capture(capture)
        assert pcap.stat().st_size > 24 * 40  # pcap header + 40 UDP packets
        names = [ns_a.name, ns_b.name]
    assert echo.poll() is not None
    assert not set(names) & set(netns.list_namespaces())


@needs_root
@pytest.mark.netns
def test_netem_loss_on_a_veth():
    if not netns.netem_supported():
        pytest.skip("this kernel has no sch_netem")
    with NetLab() as lab:
        ns_a, ns_b = lab.add_namespace(), lab.add_namespace()
        veth = lab.add_veth(ns_a, ns_b)
        echo = lab.spawn(ns_b, [sys.executable, "-c", UDP_ECHO, veth.addr_b],
                         stdout=subprocess.PIPE, text=True)
        assert echo.stdout.readline().strip() == "ready"
        lab.netem(ns_a, veth.dev_a, Netem(loss=100))
        assert "netem" in ns_a.run(["tc", "qdisc", "show", "dev", veth.dev_a]).stdout
        assert int(ns_a.run([sys.executable, "-c", UDP_PING, veth.addr_b, "2"]).stdout) == 0
        lab.clear_netem(ns_a, veth.dev_a)
        assert int(ns_a.run([sys.executable, "-c", UDP_PING, veth.addr_b, "2"]).stdout) == 2
        names = [ns_a.name, ns_b.name]
    assert echo.poll() is not None
    assert not set(names) & set(netns.list_namespaces())


@needs_root
@pytest.mark.netns
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_cleanup_on_exception_and_interrupt(error):
    with pytest.raises(error):
        with NetLab() as lab:
            ns = lab.add_namespace()
            proc = lab.spawn(ns, ["sleep", "60"])
            raise error()
    assert proc.poll() is not None
    assert ns.name not in netns.list_namespaces()


@needs_root
@pytest.mark.netns
def test_close_kills_strays_inside_own_namespaces():
    with NetLab() as lab:
        ns = lab.add_namespace()
        # a process started inside the namespace by something other than lab.spawn
        stray = subprocess.Popen(ns.argv(["sleep", "60"]), start_new_session=True)
        deadline = time.monotonic() + 5
        while stray.pid not in netns.namespace_pids(ns.name):  # until it has entered
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert stray.wait(5) is not None
    assert ns.name not in netns.list_namespaces()


@needs_root
@pytest.mark.netns
def test_cleanup_stale_removes_only_dead_owners():
    child = subprocess.Popen(["true"])
    child.wait()  # its pid is now free: a "crashed run"
    stale = f"qbb-{child.pid}-0"
    if stale in netns.list_namespaces():
        pytest.skip("pid reused by a concurrent run")
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        with NetLab() as lab:
            live = lab.add_namespace()
            removed = netns.cleanup_stale(f"qbb-{child.pid}-")
            assert removed == [stale]
            assert netns.cleanup_stale(f"qbb-{os.getpid()}-") == []  # we are alive
            assert live.name in netns.list_namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)
    assert stale not in netns.list_namespaces()


@needs_root
@pytest.mark.netns
def test_netem_unsupported_is_a_clear_error():
    if netns.netem_supported():
        pytest.skip("netem works on this kernel")
    with NetLab() as lab:
        ns = lab.add_namespace()
        with pytest.raises(NetnsError, match="no netem qdisc"):
            lab.netem(ns, "lo", Netem(loss=1))


@needs_root
@pytest.mark.netns
def test_kill_refuses_foreign_processes():
    other = subprocess.Popen(["sleep", "5"])
    try:
        with NetLab() as lab, pytest.raises(NetnsError, match="not a process of this lab"):
            lab.kill(other)
    finally:
        other.kill()
        other.wait()

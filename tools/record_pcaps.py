#!/usr/bin/env python3
"""Regenerate the real captures in pcaps/ from one emulated run of topologies/ring5.json.

Needs root (network namespaces, tcpdump).  Usage::

    sudo python tools/record_pcaps.py [--out pcaps]

One run of the five-node ring (qbb.emulated.EmulatedNetwork) with tcpdump on every veth;
the capture of link A-B (taken on A's veth end) is cut into one file per phase by the
packets' capture times (network time = capture time - the run's epoch):

=============================  ==========================================================
``adjacency.pcap``             start until convergence + 1 s: Q3P handshakes, OSPF Hellos,
                               DB Description exchange, LS Request/Update/Ack
``key-relay.pcap``             three session keys A -> C (via B): Q3P DATA with E set
``icmp-errors.pcap``           Echo Request A -> C with TTL 1 (B: Time Exceeded) and to
                               1.1.0.10 (in B's block, unassigned: Host Unreachable)
``link-failure-flooding.pcap`` veth C-D down until B routes to D via A: LS Updates with
                               new Router-LSAs of C and D flooded to A
=============================  ==========================================================

``pcaps/manifest.json`` records the phases' network times and the session keys relayed
in ``key-relay.pcap`` (test keys of this recording, published on purpose: the tests check
that their bytes appear nowhere in any capture).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qbb.emulated import EmulatedNetwork  # noqa: E402
from qbb.topology import load_topology  # noqa: E402

TOPOLOGY = ROOT / "topologies" / "ring5.json"


def _wait(net: EmulatedNetwork, predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("record_pcaps: timed out waiting for the network")
        net.sleep(0.2)


def _route_interface(net: EmulatedNetwork, node: str, dest_node: str) -> str | None:
    routes = {r["dest"]: r for r in net.status(node)["routes"]}
    route = routes.get(net.plan.nodes[dest_node].block)
    return None if route is None else route["interface"]


def record(capture_dir: Path) -> tuple[dict, float]:
    """Run the scenario; the phases (network times) and the run's epoch."""
    topology = load_topology(TOPOLOGY)
    phases: dict = {}
    with EmulatedNetwork(topology, TOPOLOGY, capture_dir=capture_dir, reveal_keys=True) as net:
        converged = net.wait_converged(timeout=30)
        if converged is None:
            raise SystemExit("record_pcaps: the network did not converge")
        net.sleep(1.0)
        phases["adjacency"] = [0.0, net.clock()]
        start = net.clock()
        keys = [net.relay_key("A", "C", 256) for _ in range(3)]
        _wait(net, lambda: net.keys["delivered"] >= 3, 10)
        net.sleep(0.5)
        phases["key-relay"] = [start, net.clock()]
        start = net.clock()
        net.probe("A", net.plan.nodes["C"].address, ttl=1, seq=1)
        net.probe("A", "1.1.0.10", ttl=64, seq=2)
        _wait(net, lambda: len(net.icmp) >= 2, 10)
        net.sleep(0.5)
        phases["icmp-errors"] = [start, net.clock()]
        start = net.clock()
        b_to_a = net.plan.link("A", "B").address_of("B")
        net.set_link("C", "D", up=False)  # B's route to D turns from C to A once flooded
        _wait(net, lambda: _route_interface(net, "B", "D") == b_to_a, 20)
        net.sleep(1.0)
        phases["link-failure-flooding"] = [start, net.clock()]
        epoch = net.epoch
    phases["keys"] = [{"source": k["source"], "destination": k["destination"],
                       "key_id": k["key_id"], "bits": k["bits"], "key": k["key"]} for k in keys]
    phases["icmp_seen_by_nodes"] = [{k: v for k, v in m.items() if k != "t"} for m in net.icmp]
    return phases, epoch


def cut(source: Path, out: Path, epoch: float, lo: float, hi: float) -> int:
    """Copy, byte for byte, the records captured in network time [lo, hi) to ``out``.

    tcpdump writes classic pcap (24-byte global header, 16-byte record headers with
    seconds and microseconds); the records are copied unchanged."""
    data = source.read_bytes()
    magic = data[:4]
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
             b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
    if order is None:
        raise SystemExit(f"record_pcaps: {source} is not a classic pcap file")
    scale = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    record = struct.Struct(order + "IIII")
    parts, count, offset = [data[:24]], 0, 24
    while offset + record.size <= len(data):
        sec, frac, caplen, _ = record.unpack_from(data, offset)
        end = offset + record.size + caplen
        if lo <= sec + frac * scale - epoch < hi:
            parts.append(data[offset:end])
            count += 1
        offset = end
    out.write_bytes(b"".join(parts))
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "pcaps"), help="output directory")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qbb-record-") as tmp:
        phases, epoch = record(Path(tmp))
        source = Path(tmp) / "link-A-B.pcap"
        manifest = {"topology": "topologies/ring5.json", "link": "A-B",
                    "captured_on": "A's veth end", "files": {}}
        for name in ("adjacency", "key-relay", "icmp-errors", "link-failure-flooding"):
            lo, hi = phases[name]
            count = cut(source, out / f"{name}.pcap", epoch, lo, hi)
            manifest["files"][f"{name}.pcap"] = {"from_s": round(lo, 3), "to_s": round(hi, 3),
                                                 "packets": count}
            print(f"{name}.pcap: {count} packets, t = {lo:.2f} .. {hi:.2f} s")
    manifest["keys"] = phases["keys"]
    manifest["icmp_seen_by_nodes"] = phases["icmp_seen_by_nodes"]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

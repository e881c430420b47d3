"""Session-key relay throughput end to end: ``qbb bench relay`` (root for the veth cases).

Trusted-relay key distribution (seed 002 §2.1, §2.5): the ingress node of a line of QBB
nodes relays session keys to the egress node hop by hop, each hop one-time-pad encrypted
with that link's QKD key (:mod:`qbb.relay`).  Every key is as large as one QKDTL KEY
body can carry (65,535 bits: the KeyDelivery length field is 16 bits).  Two framings:

* ``veth/line3`` etc. (the original cases): one key per QKDTL KEY segment, so one key is
  one QKDNL packet of 8,238 bytes and, at a link MTU of 9,000, one Q3P frame;
* ``.../batch7-mtu65000``: a KEY segment carries several KeyDelivery bodies back to back;
  at a link MTU of 65,000 (veth MTU 65,028) seven keys fill one QKDNL packet of 57,426
  bytes = one Q3P frame, so every per-packet cost (Q3P seal/verify/ARQ, forwarding, the
  syscalls) is shared by seven keys (:func:`qbb.relay.keys_per_segment`).

Veth cases (``veth/line3``: one intermediate node, ``veth/line5``: three): one OS process
per node (:mod:`qbb.bench.relay_node`: the real :class:`~qbb.node.QBBNode` -- Q3P endpoints,
router, forwarder -- plus :class:`~qbb.relay.KeyRelay`) in its own network namespace, each
QBB link a veth pair carrying UDP (:mod:`qbb.netns`).  Key stores are pre-filled, so the
QKD devices do not limit the run.  The bench waits until every node has a route to every
other, tells the ingress to go, and reads the egress's count: throughput = key bits
delivered after the first key / time from the first to the last delivery.  The SHA-256
of the keys in order must be the same at both ends (``identical``).

Embedded cases (``embedded/line3``, ``embedded/line5``): the same line in one process on
trio memory channels (:class:`qbb.network.EmbeddedNetwork`, real time), for comparison.

Each veth result also carries ``q3p`` (retransmissions, timeouts, spurious timeouts,
go-back marks, fast retransmits and duplicates received, summed over every link end),
``retransmits`` (the first of them) and ``cpu_s`` per node (:mod:`qbb.bench.relay_node`).
``QBB_RELAY_MALLOC=default`` runs the node processes with glibc's own malloc settings
instead of :func:`~qbb.memory.tune_malloc`; ``QBB_RELAY_PROFILE=DIR`` profiles
every node process.

Anchor: Toshiba's relayed OTP key throughput, 123 Mb/s (seed 001); target: 600 Mb/s
through one relay.  Figures and reading: docs/benchmarks-relay.md.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import trio

from qbb.bench import Result
from qbb.bench.relay_node import Egress, digest, prefill_store, send_keys, tune_malloc
from qbb.bench.relay_node import receive as wait_received
from qbb.network import EmbeddedNetwork
from qbb.netns import NetLab, require_root
from qbb.q3p.keystore import is_initiator
from qbb.relay import keys_per_segment
from qbb.topology import LinkSpec, NodeSpec, Topology, dump_topology

ANCHOR_MBPS = 123.0
TARGET_MBPS = 600.0
KEY_BITS = 65535  # the largest KeyDelivery
MTU = 9000  # Q3P frame; a 65,535-bit key needs 8,238 + 44 bytes
BIG_MTU = 65000  # the largest Q3P MTU of a topology: 7 such keys per frame
#: (nodes, Q3P MTU, keys per KEY segment) of every veth / embedded case
CASES = ((3, MTU, 1), (3, BIG_MTU, keys_per_segment(KEY_BITS, BIG_MTU)),
         (5, MTU, 1), (5, BIG_MTU, keys_per_segment(KEY_BITS, BIG_MTU)))
RATE_BPS = 1e3  # devices barely run: the stores are pre-filled
PACKET_KEY_BYTES = 8238 + 32 + 64  # QKDNL packet + one-time MAC key + margin per hop


def line_topology(n: int, mtu: int = MTU) -> Topology:
    """Nodes A, B, ... in a line; each link's key mostly for the downstream direction."""
    names = [chr(ord("A") + i) for i in range(n)]
    nodes = tuple(NodeSpec(x, 1) for x in names)
    plain = Topology(f"relay-line{n}", nodes,
                     tuple(LinkSpec(a, b, (RATE_BPS,), mtu=mtu, delay_s=0.0) for a, b in zip(names, names[1:])))
    address = {name: node.address for name, node in plain.address_plan().nodes.items()}
    links = tuple(LinkSpec(a, b, (RATE_BPS,), mtu=mtu, delay_s=0.0,
                           key_ratio=950 if is_initiator(address[a], address[b]) else 50)
                  for a, b in zip(names, names[1:]))
    return Topology(plain.name, nodes, links)


def prefill_bytes(keys: int) -> int:
    """Merged key per link end for ``keys`` keys (95 % to the sender, 30 % spare)."""
    return int(keys * PACKET_KEY_BYTES * 1.3 / 0.95) + (4 << 20)


def _extra(mbps: float, **more: object) -> dict:
    return {"anchor_mbps": ANCHOR_MBPS, "anchor": "Toshiba relayed OTP throughput (seed 001)",
            "target_mbps": TARGET_MBPS, "vs_anchor": round(mbps / ANCHOR_MBPS, 2),
            "vs_target": round(mbps / TARGET_MBPS, 2), **more}


# -- veth: one process per node ----------------------------------------------------------

class _Lines:
    """JSON lines from a child's stdout, with a deadline (no blocking readline)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.buffer = proc, b""

    def wait_for(self, keys: tuple[str, ...], deadline: float) -> tuple[str, dict]:
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                for key in keys:
                    if isinstance(obj, dict) and key in obj:
                        return key, obj[key]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {'/'.join(keys)} from node process in time")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace")[-800:]
                    raise RuntimeError(f"node process ended (exit {self.proc.poll()}): {err}")
                self.buffer += chunk


def case_name(kind: str, n: int, mtu: int, batch: int) -> str:
    """``veth/line3`` for the original framing, ``veth/line3/batch7-mtu65000`` otherwise."""
    name = f"{kind}/line{n}"
    return name if (mtu, batch) == (MTU, 1) else f"{name}/batch{batch}-mtu{mtu}"


def _spawn_line(lab: NetLab, n: int, keys: int, timeout: float, workdir: str,
                profile: str | None, mtu: int, batch: int) -> list[subprocess.Popen]:
    topology = line_topology(n, mtu)
    tag = f"line{n}-mtu{mtu}-batch{batch}"
    path = os.path.join(workdir, f"{tag}.json")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(dump_topology(topology))
    names = [node.name for node in topology.nodes]
    spaces = [lab.add_namespace() for _ in names]
    veths = [lab.add_veth(spaces[i], spaces[i + 1], mtu=mtu + 28) for i in range(n - 1)]
    epoch, procs = time.time(), []
    for i, name in enumerate(names):
        argv = [sys.executable, "-m", "qbb.bench.relay_node", "--topology", path,
                "--node", name, "--epoch", repr(epoch), "--prefill", str(prefill_bytes(keys)),
                "--timeout", str(timeout), "--bits", str(KEY_BITS), "--batch", str(batch)]
        if i > 0:
            v = veths[i - 1]
            argv += ["--link", f"{names[i - 1]}={v.addr_b},{v.addr_a}"]
        if i < n - 1:
            v = veths[i]
            argv += ["--link", f"{names[i + 1]}={v.addr_a},{v.addr_b}"]
        argv += (["--send", str(keys), "--to", names[-1]] if i == 0 else
                 ["--expect", str(keys)] if i == n - 1 else [])
        if profile:
            argv += ["--profile", os.path.join(profile, f"{tag}-{name}.prof")]
        argv += ["--malloc", os.environ.get("QBB_RELAY_MALLOC", "tuned")]
        procs.append(lab.spawn(spaces[i], argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE))
    return procs


def veth_case(lab: NetLab, n: int, keys: int, timeout: float, workdir: str,
              profile: str | None = None, mtu: int = MTU, batch: int = 1) -> Result:
    procs = _spawn_line(lab, n, keys, timeout, workdir, profile, mtu, batch)
    lines = [_Lines(proc) for proc in procs]
    deadline = time.monotonic() + timeout
    try:
        ready = [line.wait_for(("ready",), deadline)[1]["t"] for line in lines]
        procs[0].stdin.write(b"go\n")
        procs[0].stdin.flush()
        sent = lines[0].wait_for(("sent",), deadline)[1]
        kind, got = lines[-1].wait_for(("received", "timeout"), deadline + 10)
        stopped = []
        for proc, line in zip(procs[:-1], lines[:-1]):
            proc.send_signal(signal.SIGTERM)
            stopped.append(line.wait_for(("stopped", "timeout"), time.monotonic() + 10)[1])
        for proc in procs:
            proc.wait(timeout=10)  # lets a profiled node write its statistics
    finally:
        for proc in procs:
            if proc.poll() is None:
                lab.kill(proc)
    span = got["span_s"] or float("inf")
    mbps = got["bits_in_span"] / span / 1e6
    drops = {s["node"]: s["drops"] for s in stopped if s["drops"]}
    cpu = {s["node"]: s.get("cpu_s") for s in (*stopped, got) if "node" in s}
    q3p = arq_counters([*stopped, got])
    return Result("relay", case_name("veth", n, mtu, batch), "throughput", round(mbps, 1),
                  "Mb/s", _extra(
        mbps, relays=n - 2, key_bits=KEY_BITS, mtu=mtu, keys_per_segment=batch,
        segments_sent=sent["segments"], keys_sent=sent["keys"],
        keys_delivered=got["keys"], seconds=round(got["span_s"], 3),
        ingress_seconds=round(sent["seconds"], 3),
        identical=got["digest"] == stopped[0].get("digest") and got["keys"] == sent["keys"],
        complete=kind == "received" and got["keys"] == keys, convergence_s=round(max(ready), 2),
        ingress_refused=sent["refused"], retransmits=q3p["retransmit"], q3p=q3p, drops=drops,
        cpu_s=cpu))


ARQ_COUNTERS = ("retransmit", "rto", "rto.spurious", "rto.go_back", "fast_retransmit",
                "duplicate")


def arq_counters(reports: list[dict]) -> dict[str, int]:
    """Q3P retransmission counters summed over every link end of the nodes' reports."""
    return {name: sum(link["endpoint"].get(name, 0) for report in reports
                      for link in report.get("links", {}).values())
            for name in ARQ_COUNTERS}


# -- embedded: every node in this process ------------------------------------------------

async def _embedded(n: int, keys: int, timeout: float, mtu: int, batch: int) -> dict:
    topology = line_topology(n, mtu)
    prefill = prefill_bytes(keys)
    net = EmbeddedNetwork(topology, store_capacity=prefill + (4 << 20))
    for spec in topology.links:
        for me, peer in ((spec.a, spec.b), (spec.b, spec.a)):
            prefill_store(net.hardware[me][peer].store, topology, spec.a, spec.b, prefill)
    names = [node.name for node in topology.nodes]
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        convergence = await net.wait_converged(timeout)
        egress, drawn = Egress(keys, batch), []
        net.relays[names[-1]].on_key = egress.on_key
        sent = await send_keys(net.relays[names[0]], net.plan.nodes[names[-1]].address,
                               keys, KEY_BITS, batch, drawn)
        with trio.move_on_after(timeout):
            await wait_received(egress, idle=3.0)
        nursery.cancel_scope.cancel()
    sent["digest"] = digest(drawn)
    return {"sent": sent, "got": egress.report(), "convergence": convergence,
            "drops": dict(net.drops()), "reuse": net.key_reuse_detected()}


def embedded_case(n: int, keys: int, timeout: float, mtu: int = MTU, batch: int = 1) -> Result:
    out = trio.run(_embedded, n, keys, timeout, mtu, batch)
    got, sent = out["got"], out["sent"]
    span = got["span_s"] or float("inf")
    mbps = got["bits_in_span"] / span / 1e6
    return Result("relay", case_name("embedded", n, mtu, batch), "throughput", round(mbps, 1),
                  "Mb/s", _extra(
        mbps, relays=n - 2, key_bits=KEY_BITS, mtu=mtu, keys_per_segment=batch,
        segments_sent=sent["segments"], keys_sent=sent["keys"],
        keys_delivered=got["keys"], seconds=round(got["span_s"], 3),
        identical=got["digest"] == sent["digest"] and got["keys"] == sent["keys"],
        complete=got["keys"] == keys, drops=out["drops"], key_reuse_detected=out["reuse"]))


def run(quick: bool = False) -> Iterator[Result]:
    """Session-key relay throughput over 1 and 3 relays (veth, one process per node),
    one key per segment at MTU 9,000 and seven per segment at MTU 65,000."""
    keys, embedded_keys, timeout = (2500, 300, 20.0) if quick else (12000, 400, 40.0)
    profile = os.environ.get("QBB_RELAY_PROFILE")  # a directory: cProfile every node
    require_root()
    with tempfile.TemporaryDirectory(prefix="qbb-relay-") as workdir, NetLab() as lab:
        for n, mtu, batch in CASES:
            yield veth_case(lab, n, keys, timeout, workdir, profile, mtu, batch)
    if os.environ.get("QBB_RELAY_MALLOC", "tuned") == "tuned":
        tune_malloc()  # this process runs the embedded nodes
    for n, mtu, batch in CASES:
        yield embedded_case(n, embedded_keys, timeout, mtu, batch)


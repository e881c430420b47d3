"""Q3P link throughput over a veth pair: ``qbb bench link`` (root only).

Two OS processes (:mod:`qbb.q3p.linkproc`) in two network namespaces (:mod:`qbb.netns`)
joined by one veth pair run the two ends of a Q3P link; the key stores are pre-filled with
identical key (no device work during the run).  The sender queues messages of exactly one
frame's payload (``mtu - 44`` bytes), every frame one-time-pad encrypted and authenticated
with a one-time Poly1305 key (seed 002 §3.1 Table II: E and A set).  The receiver reports
the bytes delivered and the time from its first to its last delivery.

In the same run, between the same namespaces, a plain Python UDP blaster
(``python -m qbb.bench.link send|recv``) measures the raw payload throughput of the veth
with datagrams of ``mtu`` bytes; the ratio Q3P / raw says what the link layer costs.

Cases, for MTUs 1400, 9000 and 65000 (the veth MTU is set to ``mtu + 28``):

* ``q3p-otp-auth/mtu<M>`` -- Mb/s of upper-layer payload, anchored to Toshiba's OTP tunnel
  (seed 001 §IV-C: 185 Mb/s), target 1,000 Mb/s;
* ``raw-udp/mtu<M>`` -- Mb/s of UDP payload;
* ``q3p-vs-raw/mtu<M>`` -- the ratio.

The key-store ingest rate is ``qbb bench keystore``.  Run time: about 15 s with ``quick``,
under 90 s without.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from qbb.bench import Result
from qbb.netns import Namespace, NetLab, VethPair, require_root
from qbb.q3p.linkproc import big_buffers

ANCHOR_MBPS = 185.0
TARGET_MBPS = 1000.0
MTUS = (1400, 9000, 65000)
OVERHEAD = 44  # Q3P header (28) + tag (16)
_IDS = ("192.0.2.101", "192.0.2.102")  # the sender is the initiator (lower id)
_PORT = 7355


def _extra(mbps: float, **more: object) -> dict:
    return {"anchor_mbps": ANCHOR_MBPS, "anchor": "Toshiba OTP tunnel (seed 001)",
            "target_mbps": TARGET_MBPS, "vs_anchor": round(mbps / ANCHOR_MBPS, 2),
            "vs_target": round(mbps / TARGET_MBPS, 2), **more}


def _set_mtu(veth: VethPair, mtu: int) -> None:
    for ns, dev in ((veth.ns_a, veth.dev_a), (veth.ns_b, veth.dev_b)):
        ns.run(["ip", "link", "set", dev, "mtu", str(max(1500, mtu + 28))])


def _linkproc(lab: NetLab, ns: Namespace, side: int, veth: VethPair, options: list[str]
              ) -> subprocess.Popen:
    addr = (veth.addr_a, veth.addr_b)
    argv = [sys.executable, "-m", "qbb.q3p.linkproc", "--node-id", _IDS[side],
            "--peer-id", _IDS[1 - side], "--bind", addr[side], "--peer", addr[1 - side],
            *options]
    return lab.spawn(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _report(proc: subprocess.Popen, timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    for line in reversed(out.splitlines()):
        if line.startswith('{"report"'):
            return json.loads(line)["report"]
    raise RuntimeError(f"linkproc produced no report (exit {proc.returncode}): {err[-500:]}")


def q3p_case(lab: NetLab, veth: VethPair, mtu: int, volume: int, timeout: float) -> Result:
    size = mtu - OVERHEAD
    count = max(200, volume // size)
    prefill = int(count * (size + 32) * 1.5 / 0.95) + (4 << 20)  # retransmissions, acks
    common = ["--prefill", str(prefill), "--capacity", str(prefill + (1 << 20)),
              "--key-ratio", "950", "--mtu", str(mtu), "--size", str(size),
              "--window", "256", "--timeout", str(timeout), "--seed", "bench-link"]
    receiver = _linkproc(lab, veth.ns_b, 1, veth, [*common, "--expect", str(count)])
    sender = _linkproc(lab, veth.ns_a, 0, veth, [*common, "--send", str(count), "--encrypt"])
    got, sent = _report(receiver, timeout + 30), _report(sender, timeout + 30)
    span = got["span_s"] or float("inf")
    mbps = 8 * got["delivered_bytes"] / span / 1e6
    counters = sent["endpoint_counters"]
    return Result("link", f"q3p-otp-auth/mtu{mtu}", "throughput", round(mbps, 1), "Mb/s",
                  _extra(mbps, mtu=mtu, message_bytes=size, messages=got["delivered"],
                         bytes=got["delivered_bytes"], seconds=round(span, 3),
                         complete=not got["timed_out"] and got["delivered"] == count,
                         retransmits=counters.get("retransmit", 0),
                         key_bytes_used=got["key"]["dec_bytes"]))


def raw_case(lab: NetLab, veth: VethPair, mtu: int, seconds: float) -> Result:
    recv = lab.spawn(veth.ns_b, [sys.executable, "-m", "qbb.bench.link", "recv", veth.addr_b,
                                 str(seconds + 5)], stdout=subprocess.PIPE, text=True)
    assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
    veth.ns_a.run([sys.executable, "-m", "qbb.bench.link", "send", veth.addr_b, str(mtu),
                   str(seconds)], timeout=seconds + 30)
    got = json.loads(recv.communicate(timeout=seconds + 30)[0])
    mbps = 8 * got["bytes"] / got["seconds"] / 1e6 if got["seconds"] else 0.0
    return Result("link", f"raw-udp/mtu{mtu}", "throughput", round(mbps, 1), "Mb/s",
                  {"mtu": mtu, "datagram_bytes": mtu, "datagrams": got["datagrams"],
                   "seconds": round(got["seconds"], 3)})


def run(quick: bool = False) -> Iterator[Result]:
    """Q3P (OTP + one-time MAC) vs raw UDP throughput between two namespaces."""
    require_root()
    volume, raw_seconds, timeout = (16 << 20, 0.5, 10.0) if quick else (64 << 20, 2.0, 20.0)
    with NetLab() as lab:
        ns_a, ns_b = lab.add_namespace(), lab.add_namespace()
        veth = lab.add_veth(ns_a, ns_b)
        for mtu in MTUS:
            _set_mtu(veth, mtu)
            q3p = q3p_case(lab, veth, mtu, volume * (1 if mtu < 9000 else 2), timeout)
            yield q3p
            raw = raw_case(lab, veth, mtu, raw_seconds)
            yield raw
            ratio = q3p.value / raw.value if raw.value else 0.0
            yield Result("link", f"q3p-vs-raw/mtu{mtu}", "q3p/raw", round(ratio, 3), "ratio",
                         {"mtu": mtu, "q3p_mbps": q3p.value, "raw_mbps": raw.value})


# -- the raw UDP blaster (runs inside the namespaces) ------------------------------------

def _blast(addr: str, size: int, seconds: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        big_buffers(sock)
        sock.connect((addr, _PORT))
        payload = bytes(size)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for _ in range(64):
                try:
                    sock.send(payload)
                except OSError:
                    pass  # ENOBUFS and the like: the wire is full


def _sink(addr: str, timeout: float) -> dict:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        big_buffers(sock)
        sock.bind((addr, _PORT))
        print("ready", flush=True)
        buf = bytearray(1 << 16)
        count = total = 0
        first = last = None
        sock.settimeout(timeout)
        try:
            while True:
                n = sock.recv_into(buf)
                last = time.perf_counter()
                if first is None:
                    first, n = last, 0  # the clock starts at the first datagram
                else:
                    count += 1
                total += n
                sock.settimeout(0.3)
        except socket.timeout:
            pass
        return {"bytes": total, "datagrams": count,
                "seconds": (last - first) if first is not None else 0.0}


def main(argv: list[str]) -> int:
    if argv[:1] == ["send"] and len(argv) == 4:
        _blast(argv[1], int(argv[2]), float(argv[3]))
    elif argv[:1] == ["recv"] and len(argv) == 3:
        print(json.dumps(_sink(argv[1], float(argv[2]))), flush=True)
    else:
        print("usage: python -m qbb.bench.link send ADDR SIZE SECONDS | recv ADDR TIMEOUT",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""One end of a Q3P link as an OS process: ``python -m qbb.q3p.linkproc ...`` (seed 002 §3.1).

The emulated mode (shared/DESIGN.md) runs each end of a QBB link in its own process and
network namespace, the classical channel being UDP on ``qbb.wire.Q3P_UDP_PORT`` over a veth
pair (:mod:`qbb.netns`).  This entry point builds the key store (new, pre-filled, or loaded
from its persisted file with the lease-mark recovery rule of :mod:`qbb.q3p.persist`), the
emulated QKD devices, the endpoint (:class:`qbb.q3p.endpoint.Q3PEndpoint`, imported lazily;
``--endpoint MODULE:CALLABLE`` substitutes another implementation of the same interface)
and the UDP driver (:func:`qbb.q3p.driver.run_udp`), then exchanges test traffic and prints
one JSON report on stdout.  The veth tests and ``qbb bench link`` use it.

Traffic
    Message ``seq`` on channel 0 is :func:`message` ``(seq, size)``: ``u32 seq`` followed
    by a deterministic filler, so the receiver checks order and content and the test
    recomputes :func:`stream_digest`.  ``--send N`` queues N messages (``--pace`` per
    second, or as fast as the send queue allows); ``--expect N`` waits for message N-1.
    When an end has sent everything and received what it expects it sends ``DONE`` on
    channel 1; it exits ``--linger`` seconds after it has also received the peer's ``DONE``
    (or at ``--timeout``).  Both directions are OTP-encrypted with ``--encrypt``.

Key accounting
    Every ``take`` / ``get`` of the key store is recorded: in memory (the report says
    whether any two ranges of one pool overlap) and, with ``--ledger FILE``, appended to a
    file *before* the key is used (records ``kind u8 ('E'|'D'), offset u64, length u64``),
    so a run that is SIGKILLed and restarted can be checked for reuse across lifetimes
    (:func:`read_ledger`, :func:`overlaps`).

Wall clock: both ends pass the same ``--epoch`` (seconds since 1970); ``now`` is
``time.time() - epoch``, so the two device groups produce the same key stream.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import trio

from qbb.q3p.device import DeviceGroup
from qbb.q3p.driver import LinkDriver
from qbb.q3p.faults import FaultInjector
from qbb.q3p.keystore import KeyStoreConfig, LinkKeyStore, is_initiator
from qbb.q3p.persist import KeyStoreFile
from qbb.wire import Q3P_UDP_PORT

DATA_CHANNEL, CONTROL_CHANNEL = 0, 1
DONE = b"DONE"
_RECORD = struct.Struct("!cQQ")
_PREFILL_SEED = b"qbb/linkproc/prefill"


def message(seq: int, size: int) -> bytes:
    """Test message ``seq`` of ``size`` (>= 4) bytes."""
    head = struct.pack("!I", seq)
    filler = hashlib.sha256(head).digest()
    return head + (filler * (size // 32 + 1))[:size - 4]


def stream_digest(seqs: Iterable[int], size: int) -> str:
    """SHA-256 over the messages ``seqs`` in order, as the receiver computes it."""
    digest = hashlib.sha256()
    for seq in seqs:
        digest.update(message(seq, size))
    return digest.hexdigest()


def read_ledger(path: str | os.PathLike) -> dict[str, list[tuple[int, int]]]:
    """``{"enc": [(offset, n), ...], "dec": [...]}`` from a ledger file (torn tail ignored)."""
    data = Path(path).read_bytes()
    out: dict[str, list[tuple[int, int]]] = {"enc": [], "dec": []}
    for start in range(0, len(data) - len(data) % _RECORD.size, _RECORD.size):
        kind, offset, n = _RECORD.unpack_from(data, start)
        out["enc" if kind == b"E" else "dec"].append((offset, n))
    return out


def overlaps(ranges: Iterable[tuple[int, int]]) -> int:
    """How many ``(offset, n)`` ranges overlap an earlier-starting one."""
    count, reach = 0, -1
    for offset, n in sorted(ranges):
        if offset < reach:
            count += 1
        reach = max(reach, offset + n)
    return count


class KeyLedger:
    """Records every range handed out by a store's ``take`` and ``get``."""

    def __init__(self, store: LinkKeyStore, path: str | None) -> None:
        self.enc: list[tuple[int, int]] = []
        self.dec: list[tuple[int, int]] = []
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) \
            if path else None
        take, get = store.take, store.get

        def recording_take(n: int) -> tuple[int, bytes]:
            offset, key = take(n)
            self._record(b"E", offset, n, self.enc)
            return offset, key

        def recording_get(offset: int, n: int) -> bytes:
            key = get(offset, n)
            self._record(b"D", offset, n, self.dec)
            return key

        store.take, store.get = recording_take, recording_get

    def _record(self, kind: bytes, offset: int, n: int, ranges: list) -> None:
        ranges.append((offset, n))
        if self._fd is not None:
            os.write(self._fd, _RECORD.pack(kind, offset, n))

    def summary(self) -> dict:
        return {"enc_ranges": len(self.enc), "enc_bytes": sum(n for _, n in self.enc),
                "dec_ranges": len(self.dec), "dec_bytes": sum(n for _, n in self.dec),
                "enc_overlaps": overlaps(self.enc), "dec_overlaps": overlaps(self.dec)}


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return (host, int(port)) if host else (text, Q3P_UDP_PORT)


def _faults(text: str | None) -> FaultInjector | None:
    if not text:
        return None
    fields = dict(item.split("=", 1) for item in text.split(","))
    seed = int(fields.pop("seed", 0))
    return FaultInjector(**{k: float(v) for k, v in fields.items()}, seed=seed)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qbb.q3p.linkproc",
                                description="Run one end of a Q3P link over UDP.")
    p.add_argument("--node-id", required=True)
    p.add_argument("--peer-id", required=True)
    p.add_argument("--link-id", type=int, default=1)
    p.add_argument("--bind", required=True, help="local IP[:PORT]")
    p.add_argument("--peer", required=True, help="peer IP[:PORT]")
    p.add_argument("--seed", default="qbb-link", help="link seed of the emulated devices")
    p.add_argument("--rate", type=float, default=0.0, help="device key rate, bits/s")
    p.add_argument("--epoch", type=float, default=None, help="shared wall-clock origin")
    p.add_argument("--prefill", type=int, default=0, help="bytes of merged key to pre-fill")
    p.add_argument("--capacity", type=int, default=64 << 20)
    p.add_argument("--key-ratio", type=int, default=500)
    p.add_argument("--store", help="persisted key store file (loaded if it exists)")
    p.add_argument("--save-interval", type=float, default=0.5)
    p.add_argument("--ledger", help="append every key range used to this file")
    p.add_argument("--mtu", type=int, default=1400)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--keepalive", type=float, default=0.5)
    p.add_argument("--dead-interval", type=float, default=2.0)
    p.add_argument("--send", type=int, default=0, help="messages to send")
    p.add_argument("--size", type=int, default=256, help="message size, bytes (>= 4)")
    p.add_argument("--pace", type=float, default=0.0, help="messages/s (0: as fast as possible)")
    p.add_argument("--encrypt", action="store_true")
    p.add_argument("--expect", type=int, default=0, help="messages to receive")
    p.add_argument("--linger", type=float, default=0.5)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--faults", help="loss=P,duplicate=P,reorder=P,corrupt=P,seed=N")
    p.add_argument("--progress", type=float, default=0.0, help="progress line interval, s")
    p.add_argument("--endpoint", default="qbb.q3p.endpoint:Q3PEndpoint",
                   help="MODULE:CALLABLE(config, store, devices) making the endpoint")
    return p


def open_store(args: argparse.Namespace) -> tuple[LinkKeyStore, KeyStoreFile | None, bool]:
    """The key store: loaded (``restarted`` True) or new and pre-filled."""
    persisted = KeyStoreFile(args.store) if args.store else None
    if persisted is not None and persisted.path.exists():
        return persisted.load(), persisted, True
    config = KeyStoreConfig(initiator=is_initiator(args.node_id, args.peer_id),
                            key_ratio=args.key_ratio, capacity=args.capacity)
    store = LinkKeyStore(config)
    if args.prefill:
        store.ingest(DeviceGroup(_PREFILL_SEED + args.seed.encode(),
                                 [8.0 * args.prefill]).advance(1))
    if persisted is not None:
        persisted.attach(store)
        persisted.save(store)
    return store, persisted, False


def make_endpoint(args: argparse.Namespace, store: LinkKeyStore, devices):
    from qbb.q3p.config import LinkConfig

    module, _, name = args.endpoint.partition(":")
    factory = getattr(importlib.import_module(module), name)
    config = LinkConfig(node_id=args.node_id, peer_id=args.peer_id, link_id=args.link_id,
                        mtu=args.mtu, window=args.window, keepalive=args.keepalive,
                        dead_interval=args.dead_interval)
    return factory(config, store, devices)


class Traffic:
    """Test traffic state of one end: sent, delivered, order checks, DONE handshake."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sent = 0
        self.delivered = self.delivered_bytes = self.duplicates = self.gaps = 0
        self.first_seq = self.last_seq = None
        self.digest = hashlib.sha256()
        self.first_at = self.last_at = None
        self.events: Counter[str] = Counter()
        self.peer_done = trio.Event()
        self.received_all = trio.Event()
        if args.expect == 0:
            self.received_all.set()

    def on_event(self, event: object) -> None:
        kind = type(event).__name__
        self.events[kind] += 1
        if kind == "Delivered":
            if event.channel == CONTROL_CHANNEL and event.payload == DONE:
                self.peer_done.set()
            elif event.channel == DATA_CHANNEL:
                self._on_data(event.payload)

    def _on_data(self, payload: bytes) -> None:
        now = time.perf_counter()
        seq = struct.unpack_from("!I", payload)[0] if len(payload) >= 4 else -1
        if self.last_seq is not None and seq <= self.last_seq:
            self.duplicates += 1
            return
        if self.last_seq is not None and seq != self.last_seq + 1:
            self.gaps += 1
        if self.first_seq is None:
            self.first_seq, self.first_at = seq, now
        self.last_seq, self.last_at = seq, now
        self.delivered += 1
        self.delivered_bytes += len(payload)
        self.digest.update(payload)
        if seq == self.args.expect - 1:
            self.received_all.set()

    def report(self) -> dict:
        span = (self.last_at - self.first_at) if self.delivered > 1 else 0.0
        return {"sent": self.sent, "delivered": self.delivered,
                "delivered_bytes": self.delivered_bytes, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "duplicates": self.duplicates, "gaps": self.gaps,
                "digest": self.digest.hexdigest(), "span_s": span,
                "events": dict(self.events)}


async def _sender(driver: LinkDriver, traffic: Traffic, args: argparse.Namespace) -> None:
    start = trio.current_time()
    for seq in range(args.send):
        if args.pace:
            await trio.sleep_until(start + seq / args.pace)
        await driver.send(message(seq, args.size), channel=DATA_CHANNEL, encrypt=args.encrypt)
        traffic.sent += 1
    await traffic.received_all.wait()
    await driver.send(DONE, channel=CONTROL_CHANNEL)


async def _progress(traffic: Traffic, interval: float) -> None:
    while True:
        await trio.sleep(interval)
        print(json.dumps({"progress": {"sent": traffic.sent, "delivered": traffic.delivered}}),
              flush=True)


async def _saver(store: LinkKeyStore, persisted: KeyStoreFile, interval: float) -> None:
    while True:
        await trio.sleep(interval)
        persisted.save(store)


# Linux <asm-generic/socket.h>: set a buffer size beyond net.core.*mem_max (CAP_NET_ADMIN)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def big_buffers(sock: socket.socket, size: int = 64 << 20) -> None:
    """Socket buffers of ``size`` bytes (forced when privileged, else up to the sysctl cap)."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


def _udp_socket(bind: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    big_buffers(sock)
    sock.bind(bind)
    return sock


async def run(args: argparse.Namespace) -> dict:
    epoch = time.time() if args.epoch is None else args.epoch
    clock = lambda: time.time() - epoch  # noqa: E731 - the endpoint's now
    store, persisted, restarted = open_store(args)
    ledger = KeyLedger(store, args.ledger)
    devices = DeviceGroup(args.seed.encode(), [args.rate]) if args.rate else None
    if devices is not None:  # catch up with the stream (a restart resumes at its position)
        data = devices.advance(clock())
        store.ingest(data, position=devices.position - len(data))
    endpoint = make_endpoint(args, store, devices)
    traffic = Traffic(args)
    driver = LinkDriver(endpoint, events=traffic.on_event, faults=_faults(args.faults),
                        clock=clock)
    timed_out = True
    with _udp_socket(_address(args.bind)) as sock:
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run_udp, sock, _address(args.peer))
            nursery.start_soon(_sender, driver, traffic, args)
            if args.progress:
                nursery.start_soon(_progress, traffic, args.progress)
            if persisted is not None:
                nursery.start_soon(_saver, store, persisted, args.save_interval)
            with trio.move_on_after(args.timeout):
                await traffic.received_all.wait()
                await traffic.peer_done.wait()
                timed_out = False
            await trio.sleep(args.linger)
            nursery.cancel_scope.cancel()
    if persisted is not None:
        persisted.save(store)
    return _report(args, endpoint, driver, traffic, store, ledger, restarted, timed_out)


def _report(args, endpoint, driver, traffic, store, ledger, restarted, timed_out) -> dict:
    status = endpoint.status() if hasattr(endpoint, "status") else {}
    return {"report": {
        "node_id": args.node_id, "peer_id": args.peer_id, "restarted": restarted,
        "timed_out": timed_out, "state": getattr(endpoint, "state", None),
        **traffic.report(), "key": {**ledger.summary(),
                                    "positions": store.positions().__dict__},
        "endpoint_counters": dict(getattr(endpoint, "counters", {})),
        "driver_counters": dict(driver.counters),
        "fault_counters": dict(driver.faults.counters) if driver.faults else {},
        "status": _jsonable(status)}}


def _jsonable(value: object) -> object:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = trio.run(run, args)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
